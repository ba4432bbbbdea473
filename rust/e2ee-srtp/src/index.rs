//! The packet index of each SSRC on the sending side (RFC 3711 §3.3.1): the 48-bit
//! `i = 2^16 * ROC + SEQ`, where the rollover counter ROC counts the wraps of the 16-bit
//! sequence number.
//!
//! The index is estimated from the highest one protected so far with Appendix A's rule,
//! exactly as libsrtp does (`srtp_rdbx_estimate_index`: ROC stays 0 while the index is
//! below 2^15), so this sender and libsrtp give the same bytes for the same packets.
//! Unlike libsrtp with `allow_repeat_tx` (as aiortc sets it), an index at or below the
//! highest one is refused: a repeat would reuse an AES-CM keystream or, worse, a GCM
//! nonce.  NACKed packets are resent as they were protected, never protected again.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// SSRCs one sender tracks: one DTLS transport carries a few media streams.
pub const MAX_STREAMS: usize = 4096;
const MEDIAN: u64 = 1 << 15;

/// The highest index protected, per SSRC.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    highest: HashMap<u32, u64>,
}

impl Streams {
    /// The index of the next packet of `ssrc` with sequence number `seq`, if it may be
    /// protected; [`Streams::commit`] records it once the packet is protected.
    pub(crate) fn next(&self, ssrc: u32, seq: u16) -> Result<u64> {
        let Some(&highest) = self.highest.get(&ssrc) else {
            if self.highest.len() >= MAX_STREAMS {
                return Err(Error::TooManyStreams(MAX_STREAMS));
            }
            // The first packet: ROC 0 (RFC 3711 §3.3.1: "the ROC MUST be initialized to
            // zero" at the sender).
            return Ok(u64::from(seq));
        };
        let index = estimate(highest, seq).ok_or(Error::IndexExhausted { ssrc })?;
        if index <= highest {
            return Err(Error::IndexReused { ssrc, index });
        }
        Ok(index)
    }

    pub(crate) fn commit(&mut self, ssrc: u32, index: u64) {
        self.highest.insert(ssrc, index);
    }
}

/// RFC 3711 Appendix A: the index of `seq` closest to `s_l`, the highest index so far;
/// `None` if the ROC would pass 2^32 - 1.
fn estimate(s_l: u64, seq: u16) -> Option<u64> {
    if s_l <= MEDIAN {
        return Some(u64::from(seq));
    }
    let roc = s_l >> 16;
    let last = s_l & 0xffff;
    let seq64 = u64::from(seq);
    let guess = if last < MEDIAN {
        if seq64 > last + MEDIAN {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if last - MEDIAN > seq64 {
        roc + 1
    } else {
        roc
    };
    (guess <= u64::from(u32::MAX)).then_some(guess << 16 | seq64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u16]) -> Vec<Result<u64>> {
        let mut s = Streams::default();
        seqs.iter()
            .map(|&q| {
                let i = s.next(7, q)?;
                s.commit(7, i);
                Ok(i)
            })
            .collect()
    }

    #[test]
    fn the_roc_counts_wraps() {
        let got = run(&[65534, 65535, 0, 1, 65535, 2]);
        assert_eq!(got[..4], [Ok(65534), Ok(65535), Ok(65536), Ok(65537)]);
        // After the wrap, 65535 is the packet before 0: a repeat, refused.
        assert_eq!(
            got[4],
            Err(Error::IndexReused {
                ssrc: 7,
                index: 65535
            })
        );
        assert_eq!(got[5], Ok(65538));
        let long: Vec<u16> = (0..200_000u32).map(|i| (i * 7 % 65536) as u16).collect();
        let got = run(&long);
        let mut i = 0u64;
        for (n, r) in got.iter().enumerate().skip(1) {
            i += 7;
            assert_eq!(*r, Ok(i), "{n}");
        }
    }

    #[test]
    fn repeats_and_older_packets_are_refused() {
        assert_eq!(
            run(&[5, 5])[1],
            Err(Error::IndexReused { ssrc: 7, index: 5 })
        );
        assert_eq!(
            run(&[40000, 39999])[1],
            Err(Error::IndexReused {
                ssrc: 7,
                index: 39999
            })
        );
        // A first packet of 0 is index 0, and allowed once.
        assert_eq!(
            run(&[0, 0])[..],
            [Ok(0), Err(Error::IndexReused { ssrc: 7, index: 0 })]
        );
    }

    #[test]
    fn libsrtp_keeps_roc_zero_below_the_median() {
        // From seq 100, a jump to 65000 is forward in libsrtp (index 65000), not ROC - 1.
        assert_eq!(run(&[100, 65000])[1], Ok(65000));
        assert_eq!(estimate(MEDIAN, 3), Some(3));
        assert_eq!(estimate(MEDIAN + 1, 3), Some(3));
        assert_eq!(estimate(60000, 3), Some(65539));
    }

    #[test]
    fn the_index_space_ends() {
        let top = (u64::from(u32::MAX) << 16) | 0xffff;
        assert_eq!(estimate(top, 0), None);
        let mut s = Streams::default();
        s.commit(9, top);
        assert_eq!(s.next(9, 0), Err(Error::IndexExhausted { ssrc: 9 }));
        assert_eq!(estimate(top - 1, 0xffff), Some(top));
    }

    #[test]
    fn streams_are_bounded() {
        let mut s = Streams::default();
        for ssrc in 0..MAX_STREAMS as u32 {
            s.commit(ssrc, 1);
        }
        assert_eq!(s.next(u32::MAX, 1), Err(Error::TooManyStreams(MAX_STREAMS)));
        assert_eq!(s.next(0, 2), Ok(2));
    }
}
