//! The two SRTP transforms, each keyed once from the session keys:
//!
//! * AES-CM + HMAC-SHA1-80 (RFC 3711 §4.1.1, §4.2.1): the payload is XORed with the AES
//!   counter-mode keystream from `IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`;
//!   the tag is the first 80 bits of `HMAC-SHA1(k_a, header || encrypted payload || ROC)`
//!   (§4.2: the authenticated portion, then the ROC).
//! * AEAD AES-GCM (RFC 7714): 96-bit `IV = (0x0000 || SSRC || ROC || SEQ) XOR k_s` (§8.1),
//!   the RTP header (CSRCs and extension included) as associated data (§8.2), the payload
//!   encrypted, and the 16-byte tag appended (§7).
//!
//! The AES key schedule, the HMAC pads (hashed once, §4.2.1 as HMAC does) and the GHASH
//! key are computed at construction; a packet costs only its own blocks.  AES-CM and
//! HMAC-SHA1 are RustCrypto's, GCM is AWS-LC's (the faster of each, `examples/backends.rs`).
//! Everything keyed is zeroized on drop (RustCrypto's `zeroize` features; AWS-LC's
//! `OPENSSL_free` cleanses what it frees).

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aws_lc_rs::aead as lc;
use ctr::CtrCore;
use ctr::flavors::Ctr32BE;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::Profile;
use crate::error::{Error, Result};
use crate::kdf::{self, LABEL_AUTHENTICATION, LABEL_ENCRYPTION, LABEL_SALT};

/// HMAC-SHA1-80: the tag is the HMAC's first 80 bits (RFC 3711 §5.2).
pub(crate) const CM_TAG_LEN: usize = 10;
/// RFC 7714 §7: a 16-byte tag for both key sizes.
pub(crate) const GCM_TAG_LEN: usize = 16;

pub(crate) enum Transform {
    Cm(Box<CmSha1>),
    Gcm(Gcm),
}

impl Transform {
    /// Derives the session keys (RFC 3711 §4.3) and keys the transform with them.
    pub(crate) fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        let key = key
            .get_mut(..profile.master_key_len())
            .ok_or(Error::Crypto)?;
        kdf::derive(master_key, master_salt, LABEL_ENCRYPTION, key)?;
        Ok(match profile {
            Profile::Aes128CmSha1_80 => {
                let mut salt = Zeroizing::new([0u8; 14]);
                kdf::derive(master_key, master_salt, LABEL_SALT, &mut salt[..])?;
                // n_a = 160 bits (RFC 3711 §4.2.1 / §5.2).
                let mut auth = Zeroizing::new([0u8; 20]);
                kdf::derive(master_key, master_salt, LABEL_AUTHENTICATION, &mut auth[..])?;
                Transform::Cm(Box::new(CmSha1::new(key, &salt, &auth[..])?))
            }
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                let mut salt = Zeroizing::new([0u8; 12]);
                kdf::derive(master_key, master_salt, LABEL_SALT, &mut salt[..])?;
                Transform::Gcm(Gcm::new(key, &salt)?)
            }
        })
    }

    pub(crate) fn tag_len(&self) -> usize {
        match self {
            Transform::Cm(_) => CM_TAG_LEN,
            Transform::Gcm(_) => GCM_TAG_LEN,
        }
    }

    /// Protects in place: `buf` is the RTP packet (header of `header_len` bytes, then
    /// the payload) followed by [`Transform::tag_len`] bytes for the tag.
    pub(crate) fn protect(
        &self,
        buf: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<()> {
        let body = buf
            .len()
            .checked_sub(self.tag_len())
            .filter(|&n| n >= header_len)
            .ok_or(Error::InvalidArgument("no room for the header and the tag"))?;
        let (packet, tag) = buf.split_at_mut(body);
        match self {
            Transform::Cm(t) => t.protect(packet, header_len, ssrc, index, tag),
            Transform::Gcm(t) => t.protect(packet, header_len, ssrc, index, tag),
        }
    }
}

/// AES-128-CM with HMAC-SHA1-80 (SRTP_AES128_CM_SHA1_80, RFC 5764 §4.1.2).
pub(crate) struct CmSha1 {
    aes: Aes128,
    salt: Zeroizing<[u8; 14]>,
    mac: Hmac<Sha1>,
}

impl CmSha1 {
    pub(crate) fn new(key: &[u8], salt: &[u8; 14], auth: &[u8]) -> Result<Self> {
        Ok(CmSha1 {
            aes: Aes128::new_from_slice(key).map_err(|_| Error::Crypto)?,
            salt: Zeroizing::new(*salt),
            mac: <Hmac<Sha1> as KeyInit>::new_from_slice(auth).map_err(|_| Error::Crypto)?,
        })
    }

    /// The AES-CM IV of packet `index` of `ssrc` (RFC 3711 §4.1.1).
    fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        let (head, _) = iv.split_at_mut(14);
        head.copy_from_slice(&self.salt[..]);
        let s = ssrc.to_be_bytes();
        let i = index.to_be_bytes(); // 48 bits used: bytes 2..8
        for (d, x) in iv[4..8].iter_mut().zip(s) {
            *d ^= x;
        }
        for (d, x) in iv[8..14].iter_mut().zip(&i[2..]) {
            *d ^= x;
        }
        iv
    }

    /// Keystream for `len` bytes at `iv`, XORed into `data` (RFC 3711 §4.1.1; `data`
    /// stays below 2^16 blocks, so the counter never leaves the low 16 bits).
    pub(crate) fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        let mut ctr = StreamCipherCoreWrapper::from_core(
            CtrCore::<&Aes128, Ctr32BE>::inner_iv_init(&self.aes, &(*iv).into()),
        );
        ctr.apply_keystream(data);
    }

    pub(crate) fn protect(
        &self,
        packet: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
        tag: &mut [u8],
    ) -> Result<()> {
        let iv = self.iv(ssrc, index);
        let payload = packet
            .get_mut(header_len..)
            .ok_or(Error::InvalidArgument("header longer than the packet"))?;
        self.apply_keystream(&iv, payload);
        let mut mac = self.mac.clone();
        mac.update(packet);
        // ROC = index >> 16 (32 bits, §3.3.1).
        mac.update(&((index >> 16) as u32).to_be_bytes());
        let full = mac.finalize().into_bytes();
        let src = full.get(..CM_TAG_LEN).ok_or(Error::Crypto)?;
        tag.get_mut(..CM_TAG_LEN)
            .ok_or(Error::Crypto)?
            .copy_from_slice(src);
        Ok(())
    }
}

/// AEAD_AES_128_GCM or AEAD_AES_256_GCM for SRTP (RFC 7714), by the key's length.
pub(crate) struct Gcm {
    /// AWS-LC's GCM context, key schedule and GHASH key inside; `OPENSSL_free` cleanses
    /// it when dropped.
    aead: lc::LessSafeKey,
    salt: Zeroizing<[u8; 12]>,
}

impl Gcm {
    pub(crate) fn new(key: &[u8], salt: &[u8; 12]) -> Result<Self> {
        let alg = match key.len() {
            16 => &lc::AES_128_GCM,
            32 => &lc::AES_256_GCM,
            _ => return Err(Error::Crypto),
        };
        let key = lc::UnboundKey::new(alg, key).map_err(|_| Error::Crypto)?;
        Ok(Gcm {
            aead: lc::LessSafeKey::new(key),
            salt: Zeroizing::new(*salt),
        })
    }

    /// RFC 7714 §8.1: `(00 00 || SSRC || ROC || SEQ) XOR salt`.
    pub(crate) fn iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = [0u8; 12];
        let i = index.to_be_bytes(); // ROC || SEQ are its low 48 bits
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&i[2..]);
        for (d, s) in iv.iter_mut().zip(self.salt.iter()) {
            *d ^= s;
        }
        iv
    }

    pub(crate) fn protect(
        &self,
        packet: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
        tag: &mut [u8],
    ) -> Result<()> {
        // The index is unique per SSRC (crate::index), so is the nonce.
        let nonce = lc::Nonce::assume_unique_for_key(self.iv(ssrc, index));
        let (header, payload) = packet
            .split_at_mut_checked(header_len)
            .ok_or(Error::InvalidArgument("header longer than the packet"))?;
        let t = self
            .aead
            .seal_in_place_separate_tag(nonce, lc::Aad::from(&*header), payload)
            .map_err(|_| Error::Crypto)?;
        tag.get_mut(..GCM_TAG_LEN)
            .ok_or(Error::Crypto)?
            .copy_from_slice(t.as_ref());
        Ok(())
    }
}
