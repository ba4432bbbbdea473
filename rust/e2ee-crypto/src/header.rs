//! The SFrame header, RFC 9605 §4.3.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
//! |X|  K  |Y|  C  |   KID (0 or K+1 bytes)    |   CTR (0 or C+1 bytes)    |
//! +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
//! ```
//!
//! A value below 8 lives in the config byte (X or Y = 0); a larger one follows in
//! big-endian in the fewest bytes that hold it (X or Y = 1, K or C = length - 1).
//!
//! Decoding is strict: only the minimal encoding is accepted.  Every value has exactly
//! one encoding, so the header bytes are a function of (KID, CTR) and two frames cannot
//! carry the same pair under different bytes.  RFC 9605's encoder is minimal, so no
//! conforming sender is refused.  (Accepting non-minimal forms would be safe for
//! authentication, since the header is in the AAD, but gains nothing.)

use crate::error::{Error, Result};

/// The longest header: config byte, 8 KID bytes, 8 CTR bytes.
pub const MAX_HEADER_LEN: usize = 17;

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kid: u64,
    pub ctr: u64,
}

/// Bytes needed for `v` as a big-endian integer: 0 for values below 8 (they fit in the
/// config byte), else 1 to 8.
#[inline]
const fn extra_len(v: u64) -> usize {
    if v < 8 {
        0
    } else {
        8 - (v.leading_zeros() as usize / 8)
    }
}

/// Length of the header for (kid, ctr).
#[inline]
pub const fn encoded_len(kid: u64, ctr: u64) -> usize {
    1 + extra_len(kid) + extra_len(ctr)
}

impl Header {
    pub const fn new(kid: u64, ctr: u64) -> Self {
        Header { kid, ctr }
    }

    /// Length of the encoded header.
    pub const fn len(&self) -> usize {
        encoded_len(self.kid, self.ctr)
    }

    /// Never empty; here so that `len` has its usual partner.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header at the start of `out`; returns its length.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize> {
        let n = self.len();
        let Some(dst) = out.get_mut(..n) else {
            return Err(Error::InvalidLength(format!(
                "output buffer too small for the header: {} < {n}",
                out.len()
            )));
        };
        let (kid_n, ctr_n) = (extra_len(self.kid), extra_len(self.ctr));
        let k_field = if kid_n == 0 {
            self.kid as u8
        } else {
            0x08 | (kid_n as u8 - 1)
        };
        let c_field = if ctr_n == 0 {
            self.ctr as u8
        } else {
            0x08 | (ctr_n as u8 - 1)
        };
        let bytes = core::iter::once((k_field << 4) | c_field)
            .chain(self.kid.to_be_bytes().into_iter().skip(8 - kid_n))
            .chain(self.ctr.to_be_bytes().into_iter().skip(8 - ctr_n));
        for (d, b) in dst.iter_mut().zip(bytes) {
            *d = b;
        }
        Ok(n)
    }

    /// The header as an owned array and its length.
    pub fn encode(&self) -> ([u8; MAX_HEADER_LEN], usize) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        // The array is always long enough.
        let n = self.encode_into(&mut buf).unwrap_or(0);
        (buf, n)
    }

    /// Parses the header at the start of `data`; returns it and its length.
    pub fn decode(data: &[u8]) -> Result<(Header, usize)> {
        let (&config, rest) = data
            .split_first()
            .ok_or(Error::MalformedHeader("empty input"))?;
        let (kid, kid_n) = decode_field(config >> 4, rest, &KID)?;
        let rest = rest.get(kid_n..).unwrap_or_default();
        let (ctr, ctr_n) = decode_field(config & 0x0f, rest, &CTR)?;
        Ok((Header { kid, ctr }, 1 + kid_n + ctr_n))
    }
}

/// The messages for one of the two fields.
struct Field {
    truncated: &'static str,
    non_minimal: &'static str,
}

const KID: Field = Field {
    truncated: "truncated KID",
    non_minimal: "non-minimal KID encoding",
};
const CTR: Field = Field {
    truncated: "truncated CTR",
    non_minimal: "non-minimal CTR encoding",
};

/// One 4-bit half of the config byte and the bytes it announces.
fn decode_field(nibble: u8, rest: &[u8], field: &Field) -> Result<(u64, usize)> {
    if nibble & 0x08 == 0 {
        return Ok((u64::from(nibble), 0));
    }
    let n = usize::from(nibble & 0x07) + 1;
    let bytes = rest
        .get(..n)
        .ok_or(Error::MalformedHeader(field.truncated))?;
    let v = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if extra_len(v) != n {
        return Err(Error::MalformedHeader(field.non_minimal));
    }
    Ok((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_live_in_the_config_byte() {
        assert_eq!(Header::new(0, 0).encode().1, 1);
        let (b, n) = Header::new(7, 7).encode();
        assert_eq!(&b[..n], &[0x77]);
        let (b, n) = Header::new(8, 0).encode();
        assert_eq!(&b[..n], &[0x80, 0x08]);
    }

    #[test]
    fn boundaries_round_trip() {
        let edges = [
            0,
            7,
            8,
            0xff,
            0x100,
            0xffff,
            1 << 56,
            (1 << 56) - 1,
            u64::MAX,
        ];
        for &kid in &edges {
            for &ctr in &edges {
                let h = Header::new(kid, ctr);
                let (b, n) = h.encode();
                assert_eq!(Header::decode(&b[..n]), Ok((h, n)));
                for cut in 0..n {
                    assert!(Header::decode(&b[..cut]).is_err());
                }
            }
        }
    }

    #[test]
    fn non_minimal_is_refused() {
        // KID 5 in one extended byte instead of the config byte.
        assert_eq!(
            Header::decode(&[0x80, 0x05]),
            Err(Error::MalformedHeader("non-minimal KID encoding"))
        );
        // CTR 0x10 in two bytes.
        assert_eq!(
            Header::decode(&[0x09, 0x00, 0x10]),
            Err(Error::MalformedHeader("non-minimal CTR encoding"))
        );
    }
}
