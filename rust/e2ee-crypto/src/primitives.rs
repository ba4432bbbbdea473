//! The only module that touches crypto crates: AES-CTR, HMAC, AES-GCM, HKDF and PBKDF2,
//! each key schedule set up once per key.  Everything above it is crate-neutral.
//!
//! Which crate does what was measured, not assumed (docs/crypto-backend.md): RustCrypto
//! for AES-CTR (VAES, 11 GB/s), HKDF, PBKDF2 and HMAC on frames under 4 KiB (the
//! default suite's cost: 20% faster than AWS-LC at 100 B); AWS-LC for HMAC on larger
//! inputs (10% faster) and for AES-GCM, whose VAES/VPCLMULQDQ code is 3.5 times
//! RustCrypto's at 1 MB.

use core::num::NonZeroU32;

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aes::{Aes128, Aes256};
use aws_lc_rs::aead as lc;
use aws_lc_rs::hmac as lc_hmac;
use ctr::CtrCore;
use ctr::flavors::Ctr32BE;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

use crate::error::{Error, Result};
use crate::sframe::{MAX_TAG_LEN, copy_prefix, join_aad};
use crate::suite::{Aead, CipherSuite, Hash};

pub(crate) const BACKEND: &str = "RustCrypto aes 0.9 / hmac 0.13 / sha2 0.11 \
     (AES-CTR, HMAC under 4 KiB, HKDF, PBKDF2); aws-lc-rs 1.19 (AES-GCM, HMAC from 4 KiB)";

/// An HKDF pseudo-random key (RFC 5869 §2.2).
pub(crate) enum Prk {
    Sha256(hkdf::Hkdf<Sha256>),
    Sha512(hkdf::Hkdf<Sha512>),
}

/// HKDF-Extract (RFC 5869 §2.2).
pub(crate) fn hkdf_extract(hash: Hash, salt: &[u8], ikm: &[u8]) -> Prk {
    match hash {
        Hash::Sha256 => Prk::Sha256(hkdf::Hkdf::new(Some(salt), ikm)),
        Hash::Sha512 => Prk::Sha512(hkdf::Hkdf::new(Some(salt), ikm)),
    }
}

impl Prk {
    /// HKDF-Expand (RFC 5869 §2.3).  Callers ask for at most 96 bytes, far below the
    /// 255 * Nh limit, so it cannot fail; were it to, `out` is zeroed and every later
    /// authentication fails closed.
    pub(crate) fn expand(&self, info: &[u8], out: &mut [u8]) {
        let ok = match self {
            Prk::Sha256(h) => h.expand(info, out).is_ok(),
            Prk::Sha512(h) => h.expand(info, out).is_ok(),
        };
        if !ok {
            out.fill(0);
        }
    }
}

/// PBKDF2-HMAC-SHA256 (RFC 8018 §5.2).  `iterations` is range-checked by the caller.
pub(crate) fn pbkdf2_hmac_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    let n = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, n.get(), out);
}

/// AES with its round keys expanded (zeroized on drop by the `aes` crate).
pub(crate) enum Aes {
    Aes128(Aes128),
    Aes256(Aes256),
}

/// HMAC keyed once, in both implementations: RustCrypto's is faster on media-sized
/// frames (660 vs 816 ns at 100 B, suite 6), AWS-LC's assembly on large ones (1.42 vs
/// 1.58 ms at 1 MB); the crossover measured here lies between 1.2 and 10 KB.
pub(crate) struct HmacKey {
    small: SmallMac,
    large: lc_hmac::Key,
}

/// RustCrypto HMAC with the ipad/opad states computed once; cloned per frame.
enum SmallMac {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

/// Bytes authenticated from which AWS-LC's HMAC is used.
const LARGE_MAC_INPUT: usize = 4096;

/// A suite's AEAD with its key schedule expanded.  One lives as long as its KID, so
/// the size gap between the variants costs nothing worth a heap indirection per frame.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AeadKey {
    CtrHmac { aes: Aes, mac: HmacKey, nt: usize },
    Gcm(lc::LessSafeKey),
}

fn key_error(suite: CipherSuite) -> Error {
    Error::InvalidLength(format!(
        "a suite {} key is {} bytes",
        suite.id(),
        suite.nk()
    ))
}

impl AeadKey {
    /// `key` is the Nk-byte `sframe_key`.  For CTR-HMAC it splits into
    /// `enc_key = key[..Nka]` and `auth_key = key[Nka..]` (RFC 9605 §4.5.1).
    pub(crate) fn new(suite: CipherSuite, key: &[u8]) -> Result<Self> {
        if key.len() != suite.nk() {
            return Err(key_error(suite));
        }
        let bad = |_| key_error(suite);
        match suite.aead() {
            Aead::CtrHmac => {
                let (enc_key, auth_key) = key.split_at(suite.nka());
                let aes = match suite.nka() {
                    16 => Aes::Aes128(Aes128::new_from_slice(enc_key).map_err(bad)?),
                    _ => Aes::Aes256(Aes256::new_from_slice(enc_key).map_err(bad)?),
                };
                let (small, lc_alg) = match suite.hash() {
                    Hash::Sha256 => (
                        SmallMac::Sha256(
                            <Hmac<Sha256> as KeyInit>::new_from_slice(auth_key).map_err(bad)?,
                        ),
                        lc_hmac::HMAC_SHA256,
                    ),
                    Hash::Sha512 => (
                        SmallMac::Sha512(
                            <Hmac<Sha512> as KeyInit>::new_from_slice(auth_key).map_err(bad)?,
                        ),
                        lc_hmac::HMAC_SHA512,
                    ),
                };
                let mac = HmacKey {
                    small,
                    large: lc_hmac::Key::new(lc_alg, auth_key),
                };
                Ok(AeadKey::CtrHmac {
                    aes,
                    mac,
                    nt: suite.nt(),
                })
            }
            Aead::Gcm => {
                let alg = if suite.nka() == 16 {
                    &lc::AES_128_GCM
                } else {
                    &lc::AES_256_GCM
                };
                let unbound = lc::UnboundKey::new(alg, key).map_err(|_| key_error(suite))?;
                Ok(AeadKey::Gcm(lc::LessSafeKey::new(unbound)))
            }
        }
    }

    /// Encrypts `buf` in place; returns the tag (its first Nt bytes).
    pub(crate) fn seal(
        &self,
        nonce: &[u8; 12],
        header: &[u8],
        metadata: &[u8],
        buf: &mut [u8],
    ) -> [u8; MAX_TAG_LEN] {
        let mut tag = [0u8; MAX_TAG_LEN];
        match self {
            AeadKey::CtrHmac { aes, mac, nt } => {
                ctr_xor(aes, nonce, buf);
                let full = ctr_hmac_tag(mac, *nt, nonce, header, metadata, buf);
                copy_prefix(&mut tag, full.get(..*nt).unwrap_or_default());
            }
            AeadKey::Gcm(key) => {
                let nonce = lc::Nonce::assume_unique_for_key(*nonce);
                let sealed = join_aad(header, metadata, |aad| {
                    key.seal_in_place_separate_tag(nonce, lc::Aad::from(aad), buf)
                });
                match sealed {
                    Ok(t) => tag.copy_from_slice(t.as_ref()),
                    // AWS-LC refuses only inputs over 2^36 bytes, which the caller rules
                    // out; fail closed anyway: no plaintext is left in the buffer.
                    Err(_) => buf.fill(0),
                }
            }
        }
        tag
    }

    /// Checks `tag` over `ct` and, only if it matches, writes the plaintext to `out`
    /// (`out.len() == ct.len()`).  CTR-HMAC compares the tag in constant time before a
    /// single byte is decrypted.  AWS-LC's GCM open is fused (it decrypts while it
    /// hashes), so on a bad tag `out` is wiped before returning.
    pub(crate) fn open(
        &self,
        nonce: &[u8; 12],
        header: &[u8],
        metadata: &[u8],
        ct: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        match self {
            AeadKey::CtrHmac { aes, mac, nt } => {
                let full = ctr_hmac_tag(mac, *nt, nonce, header, metadata, ct);
                let expected = full.get(..*nt).ok_or(Error::Authentication)?;
                if tag.len() != expected.len()
                    || !bool::from(subtle::ConstantTimeEq::ct_eq(expected, tag))
                {
                    return Err(Error::Authentication);
                }
                out.copy_from_slice(ct);
                ctr_xor(aes, nonce, out);
                Ok(())
            }
            AeadKey::Gcm(key) => {
                let nonce = lc::Nonce::assume_unique_for_key(*nonce);
                let opened = join_aad(header, metadata, |aad| {
                    key.open_separate_gather(nonce, lc::Aad::from(aad), ct, tag, out)
                });
                opened.map_err(|_| {
                    out.fill(0);
                    Error::Authentication
                })
            }
        }
    }
}

/// AES-CTR from the counter block `nonce || 0x00000000`, incrementing the low 32 bits
/// (RFC 9605 §4.5.1).  A frame is at most 2^32 blocks (`MAX_PLAINTEXT_LEN`), so the
/// counter never wraps.
fn ctr_xor(aes: &Aes, nonce: &[u8; 12], buf: &mut [u8]) {
    let mut block = [0u8; 16];
    block[..12].copy_from_slice(nonce);
    match aes {
        Aes::Aes128(k) => StreamCipherCoreWrapper::from_core(
            CtrCore::<&Aes128, Ctr32BE>::inner_iv_init(k, &block.into()),
        )
        .apply_keystream(buf),
        Aes::Aes256(k) => StreamCipherCoreWrapper::from_core(
            CtrCore::<&Aes256, Ctr32BE>::inner_iv_init(k, &block.into()),
        )
        .apply_keystream(buf),
    }
}

/// A full-length HMAC output (64 bytes for SHA-512, 32 used for SHA-256).
type FullTag = [u8; 64];

/// `HMAC(auth_key, len(AAD) || len(CT) || Nt || nonce || AAD || CT)`, lengths as 64-bit
/// big-endian integers and AAD = header || metadata (RFC 9605 §4.5.1, compute_tag).
fn ctr_hmac_tag(
    mac: &HmacKey,
    nt: usize,
    nonce: &[u8; 12],
    header: &[u8],
    metadata: &[u8],
    ct: &[u8],
) -> FullTag {
    let mut prefix = [0u8; 36];
    prefix[..8].copy_from_slice(&((header.len() + metadata.len()) as u64).to_be_bytes());
    prefix[8..16].copy_from_slice(&(ct.len() as u64).to_be_bytes());
    prefix[16..24].copy_from_slice(&(nt as u64).to_be_bytes());
    prefix[24..].copy_from_slice(nonce);
    let parts = [&prefix[..], header, metadata, ct];
    if ct.len() >= LARGE_MAC_INPUT {
        mac_large(&mac.large, &parts)
    } else {
        mac_small(&mac.small, &parts)
    }
}

fn mac_large(key: &lc_hmac::Key, parts: &[&[u8]]) -> FullTag {
    let mut m = lc_hmac::Context::with_key(key);
    for part in parts {
        m.update(part);
    }
    let mut out = [0u8; 64];
    copy_prefix(&mut out, m.sign().as_ref());
    out
}

fn mac_small(key: &SmallMac, parts: &[&[u8]]) -> FullTag {
    let mut out = [0u8; 64];
    match key {
        SmallMac::Sha256(k) => {
            let mut m = k.clone();
            for part in parts {
                m.update(part);
            }
            copy_prefix(&mut out, &m.finalize().into_bytes());
        }
        SmallMac::Sha512(k) => {
            let mut m = k.clone();
            for part in parts {
                m.update(part);
            }
            copy_prefix(&mut out, &m.finalize().into_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both HMAC implementations give the same tag, on both sides of the switch.
    #[test]
    fn the_two_hmac_paths_agree() {
        for suite in [
            CipherSuite::Aes128CtrHmacSha256_80,
            CipherSuite::Aes256CtrHmacSha512_80,
        ] {
            let key: Vec<u8> = (0..suite.nk() as u8).collect();
            let AeadKey::CtrHmac { mac, .. } = AeadKey::new(suite, &key).unwrap() else {
                panic!("a CTR-HMAC suite");
            };
            for n in [
                0,
                1,
                127,
                128,
                1200,
                LARGE_MAC_INPUT - 1,
                LARGE_MAC_INPUT,
                70_000,
            ] {
                let ct: Vec<u8> = (0..n).map(|i| i as u8).collect();
                let parts: [&[u8]; 3] = [b"prefix", b"header", &ct];
                assert_eq!(
                    mac_small(&mac.small, &parts),
                    mac_large(&mac.large, &parts),
                    "n={n}"
                );
            }
        }
    }
}
