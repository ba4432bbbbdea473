//! SRTP, sending side only, for the media router's relay: the RTP packets it writes to
//! each subscriber are protected here, with the keys DTLS-SRTP exported for that
//! subscriber's transport (RFC 5764 §4.2).  These are hop-by-hop transport keys; the
//! router never holds an end-to-end media key, and this crate knows nothing of them.
//!
//! Profiles (the ones aiortc negotiates): `SRTP_AEAD_AES_256_GCM`,
//! `SRTP_AEAD_AES_128_GCM` (RFC 7714) and `SRTP_AES128_CM_SHA1_80` (RFC 3711, RFC 5764).
//! No MKI, key derivation rate 0 (the DTLS-SRTP defaults), SRTP only (SRTCP stays with
//! aiortc's own session).
//!
//! Properties kept throughout: no `unsafe`; no panic reachable from any input (lengths
//! are checked, errors are values); every SSRC's packet index only grows, so no keystream
//! or GCM nonce is ever used twice; key material zeroized when dropped.

#![forbid(unsafe_code)]

mod error;
pub mod gso;
mod index;
mod kdf;
pub mod rtp;
pub mod track;
mod transform;
#[cfg(test)]
mod vectors;

pub use error::{Error, Result};
pub use index::MAX_STREAMS;
pub use rtp::{FrameHeader, RtpHeader};

use index::Streams;
use transform::Transform;

/// The largest protected packet: one IPv4 UDP datagram (65535 - 20 - 8 bytes).
pub const MAX_PACKET_LEN: usize = 65_507;

/// An SRTP protection profile, named as DTLS-SRTP negotiates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// RFC 7714 §14.2: AES-256-GCM, 16-byte tag, 12-byte salt.
    AeadAes256Gcm,
    /// RFC 7714 §14.2: AES-128-GCM, 16-byte tag, 12-byte salt.
    AeadAes128Gcm,
    /// RFC 5764 §4.1.2: AES-128-CM, HMAC-SHA1 with an 80-bit tag, 14-byte salt.
    Aes128CmSha1_80,
}

impl Profile {
    pub const ALL: [Profile; 3] = [
        Profile::AeadAes256Gcm,
        Profile::AeadAes128Gcm,
        Profile::Aes128CmSha1_80,
    ];

    /// The profile's name in RFC 5764 §4.1.2 / RFC 7714 §14.2 (and OpenSSL's).
    pub fn name(self) -> &'static str {
        match self {
            Profile::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            Profile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Profile::Aes128CmSha1_80 => "SRTP_AES128_CM_SHA1_80",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::UnknownProfile(name.chars().take(64).collect()))
    }

    pub fn master_key_len(self) -> usize {
        match self {
            Profile::AeadAes256Gcm => 32,
            Profile::AeadAes128Gcm | Profile::Aes128CmSha1_80 => 16,
        }
    }

    pub fn master_salt_len(self) -> usize {
        match self {
            Profile::AeadAes256Gcm | Profile::AeadAes128Gcm => 12,
            Profile::Aes128CmSha1_80 => 14,
        }
    }

    /// Bytes the protection adds to each packet.
    pub fn tag_len(self) -> usize {
        match self {
            Profile::AeadAes256Gcm | Profile::AeadAes128Gcm => transform::GCM_TAG_LEN,
            Profile::Aes128CmSha1_80 => transform::CM_TAG_LEN,
        }
    }
}

/// The sending half of one SRTP session: one master key and salt, any number of SSRCs
/// (up to [`MAX_STREAMS`]), each with its own packet index (RFC 3711 §3.3.1).
pub struct SrtpSender {
    profile: Profile,
    transform: Transform,
    streams: Streams,
}

impl core::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpSender")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl SrtpSender {
    /// Derives the session keys from the master key and salt (RFC 3711 §4.3).
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Self> {
        for (what, expected, got) in [
            ("master key", profile.master_key_len(), master_key.len()),
            ("master salt", profile.master_salt_len(), master_salt.len()),
        ] {
            if expected != got {
                return Err(Error::KeyLength {
                    what,
                    expected,
                    got,
                });
            }
        }
        Ok(SrtpSender {
            profile,
            transform: Transform::new(profile, master_key, master_salt)?,
            streams: Streams::default(),
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The size of the protected form of an RTP packet of `rtp_len` bytes.
    pub fn protected_len(&self, rtp_len: usize) -> usize {
        rtp_len.saturating_add(self.profile.tag_len())
    }

    /// Protects one RTP packet in place: `buf` holds the packet followed by
    /// [`Profile::tag_len`] bytes (any value) that receive the tag.
    pub fn protect_in_place(&mut self, buf: &mut [u8]) -> Result<()> {
        let rtp_len = buf
            .len()
            .checked_sub(self.profile.tag_len())
            .ok_or(Error::MalformedRtp("shorter than the 12-byte fixed header"))?;
        let header = rtp::parse(buf.get(..rtp_len).ok_or(Error::Crypto)?)?;
        self.seal(buf, header.len, header.ssrc, header.seq)
    }

    /// Protects one RTP packet into a new buffer.
    pub fn protect(&mut self, packet: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.protected_len(packet.len()));
        buf.extend_from_slice(packet);
        buf.resize(self.protected_len(packet.len()), 0);
        self.protect_in_place(&mut buf)?;
        Ok(buf)
    }

    /// Writes packet `seq` of a frame into `out` and protects it there: `header`, with
    /// the marker bit if `marker`, then `payload`, then the tag.  `out` must be exactly
    /// `protected_len(header.len() + payload.len())` bytes.
    pub fn protect_packet(
        &mut self,
        header: &FrameHeader<'_>,
        seq: u16,
        marker: bool,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let rtp_len = header.len() + payload.len();
        if out.len() != self.protected_len(rtp_len) {
            return Err(Error::InvalidArgument(
                "the output buffer must fit the protected packet exactly",
            ));
        }
        header.write(seq, marker, out)?;
        out.get_mut(header.len()..rtp_len)
            .ok_or(Error::Crypto)?
            .copy_from_slice(payload);
        self.seal(out, header.len(), header.ssrc(), seq)
    }

    /// Checks the index, protects, and only then records the index.
    fn seal(&mut self, buf: &mut [u8], header_len: usize, ssrc: u32, seq: u16) -> Result<()> {
        if buf.len() > MAX_PACKET_LEN {
            return Err(Error::TooLong(buf.len()));
        }
        let index = self.streams.next(ssrc, seq)?;
        self.transform.protect(buf, header_len, ssrc, index)?;
        self.streams.commit(ssrc, index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(profile: Profile) -> SrtpSender {
        let key = vec![1; profile.master_key_len()];
        let salt = vec![2; profile.master_salt_len()];
        SrtpSender::new(profile, &key, &salt).expect("keyed")
    }

    #[test]
    fn profiles_by_name_and_key_lengths() {
        for p in Profile::ALL {
            assert_eq!(Profile::from_name(p.name()), Ok(p));
            let err = SrtpSender::new(p, &[0; 24], &vec![0; p.master_salt_len()]).unwrap_err();
            assert!(matches!(
                err,
                Error::KeyLength {
                    what: "master key",
                    got: 24,
                    ..
                }
            ));
            let err = SrtpSender::new(p, &vec![0; p.master_key_len()], &[0; 13]).unwrap_err();
            assert!(matches!(
                err,
                Error::KeyLength {
                    what: "master salt",
                    got: 13,
                    ..
                }
            ));
        }
        let err = Profile::from_name("SRTP_NULL_NULL").unwrap_err();
        assert!(err.to_string().contains("SRTP_AEAD_AES_256_GCM"), "{err}");
    }

    #[test]
    fn any_input_is_an_error_or_a_packet_never_a_panic() {
        let mut packet = vec![0x92, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        packet.extend_from_slice(&[0; 8]);
        packet.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0, 7, 7]);
        for p in Profile::ALL {
            let mut s = sender(p);
            for cut in 0..packet.len() {
                let r = s.protect(&packet[..cut]);
                assert_eq!(r.is_ok(), cut >= 28, "{p:?} {cut}: {r:?}");
                // each success used an index; move on so the next is fresh
                if r.is_ok() {
                    s = sender(p);
                }
            }
            for cut in 0..p.tag_len() + 12 {
                assert!(s.protect_in_place(&mut vec![0x80; cut]).is_err(), "{cut}");
            }
            let mut big = vec![0u8; MAX_PACKET_LEN + 1];
            big[0] = 0x80;
            assert_eq!(
                s.protect_in_place(&mut big),
                Err(Error::TooLong(MAX_PACKET_LEN + 1))
            );
            let mut max = vec![0u8; MAX_PACKET_LEN];
            max[0] = 0x80;
            assert_eq!(s.protect_in_place(&mut max), Ok(()));
        }
    }

    #[test]
    fn an_index_is_used_once_per_ssrc() {
        for p in Profile::ALL {
            let mut s = sender(p);
            let a = [0x80, 96, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 42];
            let b = [0x80, 96, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 42];
            let first = s.protect(&a).expect("first");
            assert_eq!(s.protect(&a), Err(Error::IndexReused { ssrc: 1, index: 9 }));
            // Another SSRC has its own index; a failed call changed nothing.
            assert!(s.protect(&b).is_ok());
            let mut fresh = sender(p);
            assert_eq!(fresh.protect(&a), Ok(first));
        }
    }

    #[test]
    fn frames_are_written_as_they_would_be_parsed() {
        let ext = [0xbe, 0xde, 0, 1, 0x10, b'0', 0, 0];
        for p in Profile::ALL {
            let h = FrameHeader::new(0x90, 111, 3000, 0xabcd, &ext).expect("valid");
            let payload = [5u8; 33];
            let mut built = sender(p);
            let mut parsed = sender(p);
            for (seq, marker) in [(65535u16, false), (0, true)] {
                let mut out = vec![0u8; built.protected_len(h.len() + payload.len())];
                built
                    .protect_packet(&h, seq, marker, &payload, &mut out)
                    .expect("protects");
                let mut plain = vec![0x90, 111 | if marker { 0x80 } else { 0 }];
                plain.extend_from_slice(&seq.to_be_bytes());
                plain.extend_from_slice(&3000u32.to_be_bytes());
                plain.extend_from_slice(&0xabcdu32.to_be_bytes());
                plain.extend_from_slice(&ext);
                plain.extend_from_slice(&payload);
                assert_eq!(parsed.protect(&plain), Ok(out));
            }
            let mut wrong = vec![0u8; 10];
            assert!(
                built
                    .protect_packet(&h, 1, false, &payload, &mut wrong)
                    .is_err()
            );
        }
    }
}
