//! SFrame (RFC 9605) end-to-end media encryption, with the AES-256-CTR-HMAC-SHA512
//! suites of draft-barnes-sframe-iana-256 and the e2ee v1 key schedule.
//!
//! Pure Rust, no Python: the `e2ee-py` crate binds it.  Properties kept throughout:
//! no `unsafe`; no panic reachable from any input (every length is checked, errors are
//! values); tags compared in constant time before any byte is decrypted (CTR-HMAC
//! suites); key material zeroized when dropped; authentication failures are opaque.

#![forbid(unsafe_code)]

mod backend;
mod error;
pub mod header;
mod kat;
pub mod media;
mod primitives;
pub mod replay;
pub mod secret;
pub mod sframe;
pub mod suite;

pub use backend::backend_info;
pub use error::{Error, Result};
pub use header::Header;
pub use media::{Codec, FrameReceiver, FrameSender, ReceiverStats};
pub use secret::{
    SecretKey, derive_secret_key, kid_secret_id, new_kid, normalize_secret, secret_id,
};
pub use sframe::{Decryptor, Encryptor, FrameKey, derive_key_salt};
pub use suite::CipherSuite;

/// Name and version of the crypto backend, for reports.
pub const BACKEND: &str = primitives::BACKEND;

/// Runs one known-answer SFrame encryption and decryption per suite (the official
/// vectors) and fails if any output differs.  Returns the number of suites checked.
pub fn self_test() -> Result<usize> {
    for k in kat::KATS {
        let suite = CipherSuite::try_from(k.suite)?;
        let mut enc = Encryptor::new(suite, k.base_key, k.kid, k.ctr)?;
        if enc.encrypt(k.pt, k.metadata)? != k.ct {
            return Err(Error::InvalidArgument(format!(
                "self-test failed: suite {} encryption differs from its vector",
                k.suite
            )));
        }
        let mut dec = Decryptor::new(suite, 128)?;
        dec.add_key(k.kid, k.base_key)?;
        if dec.decrypt(k.ct, k.metadata)? != k.pt {
            return Err(Error::InvalidArgument(format!(
                "self-test failed: suite {} decryption differs from its vector",
                k.suite
            )));
        }
    }
    Ok(kat::KATS.len())
}

/// CPU features the backend uses when present, as (name, present) pairs.
pub fn cpu_features() -> Vec<(&'static str, bool)> {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        vec![
            ("aes", std::arch::is_x86_feature_detected!("aes")),
            (
                "pclmulqdq",
                std::arch::is_x86_feature_detected!("pclmulqdq"),
            ),
            ("sha", std::arch::is_x86_feature_detected!("sha")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("vaes", std::arch::is_x86_feature_detected!("vaes")),
            (
                "vpclmulqdq",
                std::arch::is_x86_feature_detected!("vpclmulqdq"),
            ),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        vec![
            ("aes", std::arch::is_aarch64_feature_detected!("aes")),
            ("pmull", std::arch::is_aarch64_feature_detected!("pmull")),
            ("sha2", std::arch::is_aarch64_feature_detected!("sha2")),
            ("sha3", std::arch::is_aarch64_feature_detected!("sha3")),
        ]
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}
