//! The only module that touches crypto crates: AES-CTR, HMAC, AES-GCM, HKDF and PBKDF2,
//! each key schedule set up once per key.  Everything above it is crate-neutral.
//!
//! AES-CTR and HMAC (the CTR-HMAC suites' whole cost) come from whichever of RustCrypto,
//! AWS-LC and OpenSSL is fastest on this CPU for the frame's size: the fastest differs by
//! CPU, not just by vendor (docs/crypto-backend.md), so `backend` measures them once per
//! process and this module keys every candidate and calls the chosen one.  All compute
//! the same bytes; a test holds them to it.  AES-GCM is AWS-LC's (VAES/VPCLMULQDQ, 3.5
//! times RustCrypto at 1 MB) or, to encrypt from one buffer into another where that is
//! faster, OpenSSL's: AWS-LC's safe API seals in place only, so its encrypt copies the
//! plaintext first.  HKDF and PBKDF2 are RustCrypto's.

use core::num::NonZeroU32;

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aes::{Aes128, Aes256};
use aws_lc_rs::aead as lc;
use aws_lc_rs::cipher as lc_cipher;
use aws_lc_rs::hmac as lc_hmac;
use ctr::CtrCore;
use ctr::flavors::Ctr32BE;
use hmac::{Hmac, Mac};
#[cfg(feature = "openssl-backend")]
use openssl::cipher::Cipher;
#[cfg(feature = "openssl-backend")]
use openssl::cipher_ctx::CipherCtx;
#[cfg(feature = "openssl-backend")]
use openssl::hash::{Hasher, MessageDigest};
use sha2::{Sha256, Sha512};
#[cfg(feature = "openssl-backend")]
use std::sync::Mutex;

use crate::backend::{self, Impl};
use crate::error::{Error, Result};
use crate::sframe::{MAX_TAG_LEN, copy_prefix, join_aad};
use crate::suite::{Aead, CipherSuite, Hash};

#[cfg(feature = "openssl-backend")]
pub(crate) const BACKEND: &str = "per primitive and frame size, the fastest here of \
     RustCrypto (aes 0.9, hmac 0.13, sha2 0.11), aws-lc-rs 1.19 and OpenSSL 3 (openssl 0.10, \
     vendored), measured at first use (backend_info()); AES-GCM: aws-lc-rs, or OpenSSL to \
     encrypt where faster; HKDF, PBKDF2: RustCrypto";
#[cfg(not(feature = "openssl-backend"))]
pub(crate) const BACKEND: &str = "per primitive and frame size, the fastest here of \
     RustCrypto (aes 0.9, hmac 0.13, sha2 0.11) and aws-lc-rs 1.19 (built without OpenSSL), \
     measured at first use (backend_info()); AES-GCM: aws-lc-rs; HKDF, PBKDF2: RustCrypto";

/// The name and version of each candidate, for `backend_info`.
pub(crate) fn impl_name(imp: Impl) -> &'static str {
    match imp {
        Impl::RustCrypto => "RustCrypto",
        Impl::AwsLc => "aws-lc-rs",
        #[cfg(feature = "openssl-backend")]
        Impl::OpenSsl => "OpenSSL",
    }
}

/// The version string of the OpenSSL built into this library.
#[cfg(feature = "openssl-backend")]
pub(crate) fn openssl_version() -> &'static str {
    openssl::version::version()
}
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

/// AES-CTR keyed once in RustCrypto and, if it serves any size class, in AWS-LC (each
/// zeroizes its key schedule on drop).
pub(crate) struct CtrKey {
    rc: Aes,
    lc: Option<lc_cipher::EncryptingKey>,
}

/// AES with its round keys expanded (zeroized on drop by the `aes` crate).
enum Aes {
    Aes128(Aes128),
    Aes256(Aes256),
}

impl CtrKey {
    /// `uses(imp)`: whether `imp` may be asked for; RustCrypto is always keyed.
    pub(crate) fn new(enc_key: &[u8], uses: impl Fn(Impl) -> bool) -> Option<Self> {
        let (rc, alg) = match enc_key.len() {
            16 => (
                Aes::Aes128(Aes128::new_from_slice(enc_key).ok()?),
                &lc_cipher::AES_128,
            ),
            32 => (
                Aes::Aes256(Aes256::new_from_slice(enc_key).ok()?),
                &lc_cipher::AES_256,
            ),
            _ => return None,
        };
        let lc = if uses(Impl::AwsLc) {
            let key = lc_cipher::UnboundCipherKey::new(alg, enc_key)
                .and_then(lc_cipher::EncryptingKey::ctr)
                .ok()?;
            Some(key)
        } else {
            None
        };
        Some(CtrKey { rc, lc })
    }

    /// AES-CTR from the counter block `nonce || 0x00000000`, incrementing the low 32 bits
    /// (RFC 9605 §4.5.1).  A frame is at most 2^32 blocks (`MAX_PLAINTEXT_LEN`), so the
    /// counter never wraps, and AWS-LC's 128-bit increment gives the same keystream.
    pub(crate) fn xor(&self, imp: Impl, nonce: &[u8; 12], buf: &mut [u8]) {
        let mut block = [0u8; 16];
        block[..12].copy_from_slice(nonce);
        if let (Impl::AwsLc, Some(lc)) = (imp, &self.lc) {
            let iv = lc_cipher::EncryptionContext::Iv128(block.into());
            if lc.less_safe_encrypt(buf, iv).is_err() {
                // Refused before touching `buf` (a context of the wrong kind, which
                // cannot happen); fail closed rather than leave plaintext behind.
                buf.fill(0);
            }
            return;
        }
        match &self.rc {
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
}

/// HMAC keyed once in RustCrypto and in each other candidate that serves a size class:
/// the ipad/opad states are computed here and only copied per frame.  OpenSSL's
/// contexts are wiped by OpenSSL when freed.
pub(crate) struct HmacKey {
    hash: Hash,
    rc: RcMac,
    lc: Option<lc_hmac::Key>,
    /// `H(K XOR ipad)` and `H(K XOR opad)` as started digests (RFC 2104); `None` if
    /// OpenSSL could not allocate them, and then another candidate serves.
    #[cfg(feature = "openssl-backend")]
    ossl: Option<(Hasher, Hasher)>,
}

enum RcMac {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

/// A full-length HMAC output (64 bytes for SHA-512, 32 used for SHA-256).
pub(crate) type FullTag = [u8; 64];

impl HmacKey {
    /// `uses(imp)`: whether `imp` may be asked for; RustCrypto is always keyed.
    pub(crate) fn new(hash: Hash, key: &[u8], uses: impl Fn(Impl) -> bool) -> Option<Self> {
        let (rc, lc_alg) = match hash {
            Hash::Sha256 => (
                RcMac::Sha256(<Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?),
                lc_hmac::HMAC_SHA256,
            ),
            Hash::Sha512 => (
                RcMac::Sha512(<Hmac<Sha512> as KeyInit>::new_from_slice(key).ok()?),
                lc_hmac::HMAC_SHA512,
            ),
        };
        Some(HmacKey {
            hash,
            rc,
            lc: uses(Impl::AwsLc).then(|| lc_hmac::Key::new(lc_alg, key)),
            #[cfg(feature = "openssl-backend")]
            ossl: if uses(Impl::OpenSsl) {
                openssl_pads(hash, key)
            } else {
                None
            },
        })
    }

    pub(crate) fn hash(&self) -> Hash {
        self.hash
    }

    /// `HMAC(key, parts[0] || parts[1] || ...)` with the candidate `imp` (RustCrypto's
    /// if `imp` was not keyed: the same bytes).
    pub(crate) fn tag(&self, imp: Impl, parts: &[&[u8]]) -> FullTag {
        let mut out = [0u8; 64];
        match imp {
            #[cfg(feature = "openssl-backend")]
            Impl::OpenSsl => {
                if let Some(t) = self.ossl.as_ref().and_then(|p| openssl_hmac(p, parts)) {
                    return t;
                }
                // OpenSSL failed (out of memory): the same tag from RustCrypto.
                return self.tag(Impl::RustCrypto, parts);
            }
            Impl::AwsLc => {
                let Some(lc) = &self.lc else {
                    return self.tag(Impl::RustCrypto, parts);
                };
                let mut m = lc_hmac::Context::with_key(lc);
                for part in parts {
                    m.update(part);
                }
                copy_prefix(&mut out, m.sign().as_ref());
            }
            Impl::RustCrypto => match &self.rc {
                RcMac::Sha256(k) => {
                    let mut m = k.clone();
                    for part in parts {
                        m.update(part);
                    }
                    copy_prefix(&mut out, &m.finalize().into_bytes());
                }
                RcMac::Sha512(k) => {
                    let mut m = k.clone();
                    for part in parts {
                        m.update(part);
                    }
                    copy_prefix(&mut out, &m.finalize().into_bytes());
                }
            },
        }
        out
    }
}

/// The two started digests of RFC 2104 §2: `K XOR ipad` and `K XOR opad`, the key
/// zero-padded to the block size B (callers pass keys no longer than a block).
#[cfg(feature = "openssl-backend")]
fn openssl_pads(hash: Hash, key: &[u8]) -> Option<(Hasher, Hasher)> {
    let (md, block) = match hash {
        Hash::Sha256 => (MessageDigest::sha256(), 64),
        Hash::Sha512 => (MessageDigest::sha512(), 128),
    };
    let mut padded = zeroize::Zeroizing::new([0u8; 128]);
    let padded = padded.get_mut(..block)?;
    if key.len() > block {
        return None;
    }
    copy_prefix(padded, key);
    let mut start = |pad: u8| -> Option<Hasher> {
        let mut h = Hasher::new(md).ok()?;
        padded.iter_mut().for_each(|b| *b ^= pad);
        let ok = h.update(padded).is_ok();
        padded.iter_mut().for_each(|b| *b ^= pad);
        ok.then_some(h)
    };
    Some((start(0x36)?, start(0x5c)?))
}

#[cfg(feature = "openssl-backend")]
fn openssl_hmac((inner, outer): &(Hasher, Hasher), parts: &[&[u8]]) -> Option<FullTag> {
    let mut h = inner.clone();
    for part in parts {
        h.update(part).ok()?;
    }
    let digest = h.finish().ok()?;
    let mut h = outer.clone();
    h.update(&digest).ok()?;
    let mut out = [0u8; 64];
    copy_prefix(&mut out, &h.finish().ok()?);
    Some(out)
}

/// A suite's AEAD with its key schedule expanded.  One lives as long as its KID, so
/// the size gap between the variants costs nothing worth a heap indirection per frame.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AeadKey {
    CtrHmac {
        ctr: CtrKey,
        mac: HmacKey,
        nt: usize,
    },
    Gcm(GcmKey),
}

/// AES-GCM keyed once in AWS-LC and, if it serves a size class, in OpenSSL: a context
/// keyed once, whose IV is set per frame (the key schedule is not redone).  OpenSSL
/// wipes the context's key schedule when it is freed.
pub(crate) struct GcmKey {
    lc: lc::LessSafeKey,
    /// Taken per frame without waiting: a frame that finds it in use (another thread)
    /// goes AWS-LC's way.
    #[cfg(feature = "openssl-backend")]
    ossl: Option<Mutex<CipherCtx>>,
}

impl GcmKey {
    /// `key`: 16 or 32 bytes.  `uses(imp)`: whether `imp` may be asked for; AWS-LC is
    /// always keyed.
    pub(crate) fn new(key: &[u8], uses: impl Fn(Impl) -> bool) -> Option<Self> {
        let alg = match key.len() {
            16 => &lc::AES_128_GCM,
            32 => &lc::AES_256_GCM,
            _ => return None,
        };
        let lc = lc::LessSafeKey::new(lc::UnboundKey::new(alg, key).ok()?);
        #[cfg(not(feature = "openssl-backend"))]
        let _ = uses;
        Some(GcmKey {
            lc,
            #[cfg(feature = "openssl-backend")]
            ossl: if uses(Impl::OpenSsl) {
                openssl_gcm(key).map(Mutex::new)
            } else {
                None
            },
        })
    }

    /// Seals `buf` (the plaintext, or where `from`'s ciphertext goes: `from` is then the
    /// plaintext, of `buf`'s length) with the candidate `imp`; returns the 16-byte tag.
    /// Fails closed: on an error `buf` is zeroed (and the tag with it).
    pub(crate) fn seal(
        &self,
        imp: Impl,
        nonce: &[u8; 12],
        header: &[u8],
        metadata: &[u8],
        from: Option<&[u8]>,
        buf: &mut [u8],
    ) -> [u8; 16] {
        let mut tag = [0u8; 16];
        #[cfg(feature = "openssl-backend")]
        if imp == Impl::OpenSsl && i32::try_from(buf.len()).is_ok() {
            // try_lock: the context serves one frame at a time; a busy one is no error.
            if let Some(mut ctx) = self.ossl.as_ref().and_then(|m| m.try_lock().ok()) {
                if openssl_gcm_seal(&mut ctx, nonce, header, metadata, from, buf, &mut tag)
                    .is_some()
                {
                    return tag;
                }
                buf.fill(0);
                return [0u8; 16];
            }
        }
        let _ = imp;
        if !plaintext_in_place(from, buf) {
            return tag;
        }
        let nonce = lc::Nonce::assume_unique_for_key(*nonce);
        let sealed = join_aad(header, metadata, |aad| {
            self.lc
                .seal_in_place_separate_tag(nonce, lc::Aad::from(aad), buf)
        });
        match sealed {
            Ok(t) => copy_prefix(&mut tag, t.as_ref()),
            // AWS-LC refuses only inputs over 2^36 bytes, which the caller rules out;
            // fail closed anyway: no plaintext is left in the buffer.
            Err(_) => buf.fill(0),
        }
        tag
    }
}

/// For a cipher that works in place: copies the plaintext `from`, if given, into `buf`.
/// `false`, with `buf` zeroed, when `from` is not `buf`'s length (fail closed).
fn plaintext_in_place(from: Option<&[u8]>, buf: &mut [u8]) -> bool {
    match from {
        Some(from) if from.len() != buf.len() => {
            buf.fill(0);
            false
        }
        Some(from) => {
            buf.copy_from_slice(from);
            true
        }
        None => true,
    }
}

/// An encryption context for AES-GCM keyed with `key` (16 or 32 bytes).
#[cfg(feature = "openssl-backend")]
fn openssl_gcm(key: &[u8]) -> Option<CipherCtx> {
    let cipher = match key.len() {
        16 => Cipher::aes_128_gcm(),
        32 => Cipher::aes_256_gcm(),
        _ => return None,
    };
    let mut ctx = CipherCtx::new().ok()?;
    ctx.encrypt_init(Some(cipher), Some(key), None).ok()?;
    Some(ctx)
}

/// One GCM seal on a keyed context: the IV (12 bytes, the default length), the AAD in
/// two parts, the plaintext (`from`, or `buf` in place) into `buf`, then the tag.
#[cfg(feature = "openssl-backend")]
fn openssl_gcm_seal(
    ctx: &mut CipherCtx,
    nonce: &[u8; 12],
    header: &[u8],
    metadata: &[u8],
    from: Option<&[u8]>,
    buf: &mut [u8],
    tag: &mut [u8; 16],
) -> Option<()> {
    ctx.encrypt_init(None, None, Some(nonce)).ok()?;
    for aad in [header, metadata] {
        if !aad.is_empty() {
            ctx.cipher_update(aad, None).ok()?;
        }
    }
    // GCM is a stream mode here (block size 1): the output is exactly the input's length,
    // which the asserts in `cipher_update*` check; the lengths are checked first so that
    // they never fire.
    let written = match from {
        Some(from) if from.len() == buf.len() => ctx.cipher_update(from, Some(buf)).ok()?,
        Some(_) => return None,
        None => {
            let len = buf.len();
            ctx.cipher_update_inplace(buf, len).ok()?
        }
    };
    if written != buf.len() || ctx.cipher_final(&mut []).ok()? != 0 {
        return None;
    }
    ctx.tag(tag).ok()
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
        match suite.aead() {
            Aead::CtrHmac => {
                // The one-off measurement runs here, at key setup, not on a first frame;
                // only the candidates it chose are keyed.
                let choice = backend::choice();
                let (enc_key, auth_key) = key.split_at(suite.nka());
                let hash = suite.hash();
                let ctr = CtrKey::new(enc_key, |imp| choice.uses_ctr(imp));
                let mac = HmacKey::new(hash, auth_key, |imp| choice.uses_mac(hash, imp));
                Ok(AeadKey::CtrHmac {
                    ctr: ctr.ok_or_else(|| key_error(suite))?,
                    mac: mac.ok_or_else(|| key_error(suite))?,
                    nt: suite.nt(),
                })
            }
            Aead::Gcm => {
                let choice = backend::choice();
                let gcm = GcmKey::new(key, |imp| choice.uses_gcm(imp));
                Ok(AeadKey::Gcm(gcm.ok_or_else(|| key_error(suite))?))
            }
        }
    }

    /// Encrypts `buf` in place, or `from` (the plaintext, of `buf`'s length) into `buf`;
    /// returns the tag (its first Nt bytes).
    pub(crate) fn seal(
        &self,
        nonce: &[u8; 12],
        header: &[u8],
        metadata: &[u8],
        from: Option<&[u8]>,
        buf: &mut [u8],
    ) -> [u8; MAX_TAG_LEN] {
        let mut tag = [0u8; MAX_TAG_LEN];
        match self {
            AeadKey::CtrHmac { ctr, mac, nt } => {
                if !plaintext_in_place(from, buf) {
                    return tag;
                }
                let choice = backend::choice();
                ctr.xor(choice.ctr(buf.len()), nonce, buf);
                let full = ctr_hmac_tag(mac, *nt, nonce, header, metadata, buf);
                copy_prefix(&mut tag, full.get(..*nt).unwrap_or_default());
            }
            AeadKey::Gcm(key) => {
                let imp = backend::choice().gcm(buf.len());
                copy_prefix(&mut tag, &key.seal(imp, nonce, header, metadata, from, buf));
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
            AeadKey::CtrHmac { ctr, mac, nt } => {
                let full = ctr_hmac_tag(mac, *nt, nonce, header, metadata, ct);
                let expected = full.get(..*nt).ok_or(Error::Authentication)?;
                if tag.len() != expected.len()
                    || !bool::from(subtle::ConstantTimeEq::ct_eq(expected, tag))
                {
                    return Err(Error::Authentication);
                }
                out.copy_from_slice(ct);
                ctr.xor(backend::choice().ctr(out.len()), nonce, out);
                Ok(())
            }
            AeadKey::Gcm(key) => {
                let nonce = lc::Nonce::assume_unique_for_key(*nonce);
                let opened = join_aad(header, metadata, |aad| {
                    key.lc
                        .open_separate_gather(nonce, lc::Aad::from(aad), ct, tag, out)
                });
                opened.map_err(|_| {
                    out.fill(0);
                    Error::Authentication
                })
            }
        }
    }
}

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
    let imp = backend::choice().mac(mac.hash(), ct.len());
    mac.tag(imp, &[&prefix[..], header, metadata, ct])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every candidate computes the same HMAC and the same keystream, on every size class.
    #[test]
    fn the_candidates_agree() {
        for (hash, key_len) in [(Hash::Sha256, 32), (Hash::Sha512, 64)] {
            let key: Vec<u8> = (0..key_len as u8).collect();
            let mac = HmacKey::new(hash, &key, |_| true).unwrap();
            #[cfg(feature = "openssl-backend")]
            assert!(mac.ossl.is_some());
            for n in [0, 1, 127, 128, 511, 512, 1200, 8191, 8192, 70_000] {
                let ct: Vec<u8> = (0..n).map(|i| i as u8).collect();
                let parts: [&[u8]; 3] = [b"prefix", b"header", &ct];
                let rc = mac.tag(Impl::RustCrypto, &parts);
                for imp in Impl::ALL {
                    assert_eq!(rc, mac.tag(imp, &parts), "{imp:?} n={n}");
                }
            }
        }
        // A candidate that was not keyed answers with RustCrypto's (same) bytes.
        let key = [9u8; 64];
        let only_rc = HmacKey::new(Hash::Sha512, &key, |_| false).unwrap();
        assert!(only_rc.lc.is_none());
        #[cfg(feature = "openssl-backend")]
        assert!(only_rc.ossl.is_none());
        let all = HmacKey::new(Hash::Sha512, &key, |_| true).unwrap();
        for imp in Impl::ALL {
            assert_eq!(only_rc.tag(imp, &[b"m"]), all.tag(imp, &[b"m"]));
        }
        for key_len in [16, 32] {
            let key: Vec<u8> = (0..key_len as u8).collect();
            // AES-GCM: every encrypt candidate, in place and from another buffer, gives
            // the same ciphertext and tag, which AWS-LC's decrypt opens.
            let gcm = GcmKey::new(&key, |_| true).unwrap();
            #[cfg(feature = "openssl-backend")]
            assert!(gcm.ossl.is_some());
            let nonce = [3u8; 12];
            for n in [0, 1, 15, 16, 17, 511, 512, 1200, 8191, 8192, 70_000] {
                let plain: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
                let mut want = plain.clone();
                let want_tag = gcm.seal(Impl::AwsLc, &nonce, b"hd", b"md", None, &mut want);
                #[cfg(feature = "openssl-backend")]
                let imps = crate::backend::GCM_CANDIDATES;
                #[cfg(not(feature = "openssl-backend"))]
                let imps = [Impl::AwsLc];
                for imp in imps {
                    let mut got = vec![0xffu8; n];
                    let tag = gcm.seal(imp, &nonce, b"hd", b"md", Some(&plain), &mut got);
                    assert_eq!((got, tag), (want.clone(), want_tag), "{imp:?} n={n}");
                    let mut got = plain.clone();
                    let tag = gcm.seal(imp, &nonce, b"hd", b"md", None, &mut got);
                    assert_eq!(
                        (got, tag),
                        (want.clone(), want_tag),
                        "{imp:?} n={n} in place"
                    );
                }
                let aead = AeadKey::Gcm(GcmKey::new(&key, |_| false).unwrap());
                let mut opened = vec![0u8; n];
                aead.open(&nonce, b"hd", b"md", &want, &want_tag, &mut opened)
                    .unwrap();
                assert_eq!(opened, plain);
                // A plaintext of another length than the output is refused, closed.
                for imp in imps {
                    let mut out = vec![0xffu8; n + 1];
                    let tag = gcm.seal(imp, &nonce, b"", b"", Some(&plain), &mut out);
                    assert!(out.iter().all(|&b| b == 0), "{imp:?} n={n}");
                    assert_eq!(tag, [0u8; 16]);
                }
            }
            let ctr = CtrKey::new(&key, |_| true).unwrap();
            let nonce = [7u8; 12];
            for n in [0, 1, 15, 16, 17, 511, 512, 1200, 8191, 8192, 70_000] {
                let mut want: Vec<u8> = (0..n).map(|i| (i * 3) as u8).collect();
                let plain = want.clone();
                ctr.xor(Impl::RustCrypto, &nonce, &mut want);
                assert!(n == 0 || want != plain, "n={n}");
                for imp in crate::backend::CTR_CANDIDATES {
                    let mut got = plain.clone();
                    ctr.xor(imp, &nonce, &mut got);
                    assert_eq!(got, want, "{imp:?} n={n}");
                }
            }
        }
    }
}
