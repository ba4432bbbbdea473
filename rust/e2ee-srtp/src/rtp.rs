//! The little of RTP that SRTP needs (RFC 3550 §5.1, §5.3.1): where the header ends
//! (the part left in clear, authenticated, and GCM's associated data, RFC 7714 §8.2), the
//! sequence number and the SSRC; and, for [`crate::SrtpSender::protect_packet`], a header
//! written from its fields.

use crate::error::{Error, Result};

/// The fixed RTP header: V, P, X, CC, M, PT, sequence number, timestamp, SSRC.
pub const FIXED_HEADER_LEN: usize = 12;

/// What SRTP reads from an RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Bytes up to the payload: fixed header, CSRCs and header extension.
    pub len: usize,
    pub seq: u16,
    pub ssrc: u32,
}

/// Parses the header of one RTP packet; an error (never a panic) if it is not one.
pub fn parse(packet: &[u8]) -> Result<RtpHeader> {
    let Some(&[b0, _, s0, s1, _, _, _, _, x0, x1, x2, x3]) = packet.first_chunk() else {
        return Err(Error::MalformedRtp("shorter than the 12-byte fixed header"));
    };
    if b0 >> 6 != 2 {
        return Err(Error::MalformedRtp("the version is not 2"));
    }
    // §5.1: CC counts 4-byte CSRC identifiers after the fixed header.
    let mut len = FIXED_HEADER_LEN + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        // §5.3.1: 16 bits defined by profile, then the length in 32-bit words, not
        // counting this 4-byte head.
        let Some(&[_, _, w0, w1]) = packet.get(len..).and_then(<[u8]>::first_chunk) else {
            return Err(Error::MalformedRtp("the header extension is truncated"));
        };
        len += 4 + 4 * usize::from(u16::from_be_bytes([w0, w1]));
    }
    if len > packet.len() {
        return Err(Error::MalformedRtp("the header is longer than the packet"));
    }
    Ok(RtpHeader {
        len,
        seq: u16::from_be_bytes([s0, s1]),
        ssrc: u32::from_be_bytes([x0, x1, x2, x3]),
    })
}

/// The header shared by the packets of one frame; only the sequence number and the
/// marker bit differ between them.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader<'a> {
    b0: u8,
    payload_type: u8,
    timestamp: u32,
    ssrc: u32,
    extension: &'a [u8],
}

impl<'a> FrameHeader<'a> {
    /// `b0`: the first header byte (V=2, P=0, CC=0; X set exactly when `extension` is not
    /// empty).  `extension`: a whole header extension block (RFC 3550 §5.3.1, e.g. the
    /// one-byte form of RFC 8285 §4.2: `0xBEDE`, length in words, elements, padding).
    pub fn new(
        b0: u8,
        payload_type: u8,
        timestamp: u32,
        ssrc: u32,
        extension: &'a [u8],
    ) -> Result<Self> {
        if b0 & 0xef != 0x80 {
            return Err(Error::InvalidArgument(
                "b0 must be V=2 with no padding and no CSRC (0x80, or 0x90 with an extension)",
            ));
        }
        if payload_type > 0x7f {
            return Err(Error::InvalidArgument("payload_type must be 0 to 127"));
        }
        let x = b0 & 0x10 != 0;
        if x == extension.is_empty() {
            return Err(Error::InvalidArgument(
                "the X bit of b0 must be set exactly when an extension is given",
            ));
        }
        if x {
            let whole = match extension.split_first_chunk() {
                Some((&[_, _, w0, w1], body)) => {
                    body.len() % 4 == 0
                        && body.len() / 4 == usize::from(u16::from_be_bytes([w0, w1]))
                }
                None => false,
            };
            if !whole {
                return Err(Error::InvalidArgument(
                    "the extension must be a whole block: 4-byte head, then as many 32-bit \
                     words as its length field says",
                ));
            }
        }
        Ok(FrameHeader {
            b0,
            payload_type,
            timestamp,
            ssrc,
            extension,
        })
    }

    /// Bytes of header (fixed part and extension).
    pub fn len(&self) -> usize {
        FIXED_HEADER_LEN + self.extension.len()
    }

    /// Never: the fixed header is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Writes the header of the packet with sequence number `seq` into `out[..self.len()]`.
    pub(crate) fn write(&self, seq: u16, marker: bool, out: &mut [u8]) -> Result<()> {
        let Some((fixed, rest)) = out.split_first_chunk_mut::<FIXED_HEADER_LEN>() else {
            return Err(Error::InvalidArgument("output buffer too short"));
        };
        let [s0, s1] = seq.to_be_bytes();
        let [t0, t1, t2, t3] = self.timestamp.to_be_bytes();
        let [x0, x1, x2, x3] = self.ssrc.to_be_bytes();
        let b1 = self.payload_type | if marker { 0x80 } else { 0 };
        *fixed = [self.b0, b1, s0, s1, t0, t1, t2, t3, x0, x1, x2, x3];
        rest.get_mut(..self.extension.len())
            .ok_or(Error::InvalidArgument("output buffer too short"))?
            .copy_from_slice(self.extension);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_csrcs_and_extensions() {
        let mut p = vec![
            0x80, 0x60, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 9,
        ];
        assert_eq!(
            parse(&p),
            Ok(RtpHeader {
                len: 12,
                seq: 0x1234,
                ssrc: 0xdead_beef
            })
        );
        // Two CSRCs and a one-word extension: 12 + 8 + 4 + 4.
        p = vec![0x92, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
        assert_eq!(parse(&p).map(|h| h.len), Ok(28));
        // Every truncation is an error, never a panic.
        for cut in 0..p.len() {
            assert!(
                matches!(parse(&p[..cut]), Err(Error::MalformedRtp(_))),
                "{cut}"
            );
        }
        assert!(parse(&[0x40; 12]).is_err(), "version 1");
    }

    #[test]
    fn the_extension_length_can_point_past_the_end() {
        let p = [
            0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0xff, 0xff,
        ];
        assert!(matches!(parse(&p), Err(Error::MalformedRtp(_))));
    }

    #[test]
    fn frame_headers_are_checked() {
        let ext = [0xbe, 0xde, 0, 1, 0x10, b'0', 0, 0];
        assert!(FrameHeader::new(0x90, 96, 1, 2, &ext).is_ok());
        assert!(FrameHeader::new(0x80, 96, 1, 2, &[]).is_ok());
        assert!(FrameHeader::new(0x80, 96, 1, 2, &ext).is_err(), "X clear");
        assert!(
            FrameHeader::new(0x90, 96, 1, 2, &[]).is_err(),
            "X set, nothing"
        );
        assert!(
            FrameHeader::new(0x90, 96, 1, 2, &ext[..7]).is_err(),
            "ragged"
        );
        assert!(
            FrameHeader::new(0x90, 96, 1, 2, &ext[..4]).is_err(),
            "says 1 word"
        );
        assert!(
            FrameHeader::new(0x90, 96, 1, 2, &[1, 2]).is_err(),
            "no head"
        );
        assert!(FrameHeader::new(0x81, 96, 1, 2, &[]).is_err(), "CSRC count");
        assert!(FrameHeader::new(0xa0, 96, 1, 2, &[]).is_err(), "padding");
        assert!(FrameHeader::new(0x40, 96, 1, 2, &[]).is_err(), "version");
        assert!(
            FrameHeader::new(0x80, 128, 1, 2, &[]).is_err(),
            "payload type"
        );
    }

    #[test]
    fn written_headers_parse_back() {
        let ext = [0xbe, 0xde, 0, 1, 0x10, b'0', 0, 0];
        let h = FrameHeader::new(0x90, 97, 0x0102_0304, 0x0a0b_0c0d, &ext).expect("valid");
        let mut out = [0u8; 20];
        h.write(0xfffe, true, &mut out).expect("fits");
        assert_eq!(
            &out[..12],
            &[0x90, 0xe1, 0xff, 0xfe, 1, 2, 3, 4, 10, 11, 12, 13]
        );
        assert_eq!(&out[12..], &ext);
        assert_eq!(
            parse(&out),
            Ok(RtpHeader {
                len: 20,
                seq: 0xfffe,
                ssrc: 0x0a0b_0c0d
            })
        );
        assert!(h.write(0, false, &mut out[..19]).is_err());
    }
}
