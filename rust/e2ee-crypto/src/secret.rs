//! The e2ee v1 key schedule: from the session's shared encryption secret to the
//! `base_key` and KIDs every track uses (docs/protocol.md, "Secret to keys").

use core::fmt;

use unicode_normalization::UnicodeNormalization;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::primitives;
use crate::suite::Hash;

/// Shortest secret, in Unicode code points after NFC normalization.
pub const MIN_SECRET_CHARS: usize = 8;
/// Longest secret, in Unicode code points after NFC normalization.
pub const MAX_SECRET_CHARS: usize = 256;
/// PBKDF2 iteration bounds.  The floor is for tests; a session's real count is chosen by
/// the server (default 600,000).  The ceiling keeps a hostile server from hanging clients.
pub const MIN_ITERATIONS: u32 = 1;
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest session id accepted in the salt, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 1024;

const SALT_PREFIX: &[u8] = b"e2ee v1 session ";
const SECRET_ID_INFO: &[u8] = b"e2ee v1 secret id";

/// The 32-byte key derived from a secret.  Zeroized on drop; `Debug` does not show it.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 16-bit name of this key (see [`secret_id`]).
    pub fn id(&self) -> u16 {
        secret_id(&self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(id={:#06x}, ..)", self.id())
    }
}

/// Normalizes `secret` to NFC and checks its length: 8 to 256 code points.
/// The error says why, never what the secret was.
pub fn normalize_secret(secret: &str) -> Result<Zeroizing<String>> {
    let nfc: Zeroizing<String> = Zeroizing::new(secret.nfc().collect());
    let n = nfc.chars().count();
    if n < MIN_SECRET_CHARS {
        return Err(Error::InvalidSecret(format!(
            "{n} characters, at least {MIN_SECRET_CHARS} are needed"
        )));
    }
    if n > MAX_SECRET_CHARS {
        return Err(Error::InvalidSecret(format!(
            "{n} characters, at most {MAX_SECRET_CHARS} are allowed"
        )));
    }
    Ok(nfc)
}

/// `secret_key = PBKDF2-HMAC-SHA256(UTF-8(NFC(secret)), "e2ee v1 session " ||
/// UTF-8(session_id), iterations, 32)` (RFC 8018 §5.2).  The per-session salt means a
/// dictionary attack on one session serves no other.
pub fn derive_secret_key(secret: &str, session_id: &str, iterations: u32) -> Result<SecretKey> {
    let secret = normalize_secret(secret)?;
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(Error::InvalidArgument(format!(
            "iterations must be from {MIN_ITERATIONS} to {MAX_ITERATIONS}, not {iterations}"
        )));
    }
    if session_id.is_empty() || session_id.len() > MAX_SESSION_ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "session id must be 1 to {MAX_SESSION_ID_LEN} bytes, not {}",
            session_id.len()
        )));
    }
    let mut salt = Vec::with_capacity(SALT_PREFIX.len() + session_id.len());
    salt.extend_from_slice(SALT_PREFIX);
    salt.extend_from_slice(session_id.as_bytes());
    let mut key = [0u8; 32];
    primitives::pbkdf2_hmac_sha256(secret.as_bytes(), &salt, iterations, &mut key);
    let out = SecretKey(key);
    key.zeroize();
    Ok(out)
}

/// `secret_id = HKDF-SHA256(IKM = secret_key, salt = "", info = "e2ee v1 secret id", L = 2)`
/// read as a big-endian u16 (RFC 5869).  Names a secret without revealing it.
pub fn secret_id(secret_key: &[u8]) -> u16 {
    let mut out = [0u8; 2];
    primitives::hkdf_extract(Hash::Sha256, b"", secret_key).expand(SECRET_ID_INFO, &mut out);
    u16::from_be_bytes(out)
}

/// A fresh KID for one (track, secret): `secret_id << 48 | 48 random bits` from the OS
/// generator, so that every track's (base_key, KID, CTR) space is its own.
pub fn new_kid(secret_id: u16) -> Result<u64> {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r[2..]).map_err(|_| Error::Rng)?;
    Ok((u64::from(secret_id) << 48) | u64::from_be_bytes(r))
}

/// The `secret_id` a KID was made for.
pub const fn kid_secret_id(kid: u64) -> u16 {
    (kid >> 48) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_after_nfc() {
        // "e" + combining acute (2 code points) composes to one code point under NFC.
        let decomposed = "e\u{301}".repeat(8); // 16 code points, 8 after NFC
        assert_eq!(
            normalize_secret(&decomposed).map(|s| s.chars().count()),
            Ok(8)
        );
        let seven = "e\u{301}".repeat(7); // 14 code points, 7 after NFC
        assert!(normalize_secret(&seven).is_err());
        assert!(normalize_secret(&"x".repeat(256)).is_ok());
        assert!(normalize_secret(&"x".repeat(257)).is_err());
    }

    #[test]
    fn nfc_equivalent_secrets_give_one_key() {
        let a = derive_secret_key("caf\u{e9} secret", "s1", 10);
        let b = derive_secret_key("cafe\u{301} secret", "s1", 10);
        assert_eq!(a, b);
        assert_ne!(a, derive_secret_key("caf\u{e9} secret", "s2", 10));
    }

    #[test]
    fn kid_carries_the_secret_id() {
        let kid = new_kid(0xbeef).unwrap_or(0);
        assert_eq!(kid_secret_id(kid), 0xbeef);
        assert_ne!(new_kid(1).ok(), new_kid(1).ok());
    }
}
