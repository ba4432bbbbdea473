//! SRTP key derivation (RFC 3711 §4.3.1) with the AES-CM PRF (§4.3.3), AES-256 for
//! 32-byte master keys (RFC 6188 §5.1 / RFC 7714 §11), and a key derivation rate of
//! zero: every session key is derived once, with `r = index DIV kdr = 0`.
//!
//! `x = (label || r) XOR master_salt`, the label in the eighth of the salt's 14 bytes;
//! the PRF output is the AES-CM keystream under the master key from `IV = x * 2^16`.
//! The 12-byte master salt of the GCM profiles enters right-padded with two zero bytes,
//! as libsrtp does (the interop tests hold us to it).

use aes::cipher::{KeyIvInit, StreamCipher};
use aes::{Aes128, Aes256};
use ctr::Ctr32BE;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// RFC 3711 §4.3.1 labels (SRTP; SRTCP's are 0x03 to 0x05).
pub(crate) const LABEL_ENCRYPTION: u8 = 0x00;
pub(crate) const LABEL_AUTHENTICATION: u8 = 0x01;
pub(crate) const LABEL_SALT: u8 = 0x02;

/// Fills `out` with the session key of `label`.  `master_salt` is at most 14 bytes;
/// `master_key` 16 or 32.
pub(crate) fn derive(
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<()> {
    if master_salt.len() > 14 {
        return Err(Error::InvalidArgument("a master salt is at most 14 bytes"));
    }
    let mut iv = Zeroizing::new([0u8; 16]);
    let (salt, _) = iv.split_at_mut(master_salt.len());
    salt.copy_from_slice(master_salt);
    // key_id = label || r (7 bytes, r = 0) sits in salt bytes 7..14; the two bytes after
    // the salt are the "* 2^16".
    if let Some(b) = iv.get_mut(7) {
        *b ^= label;
    }
    out.fill(0);
    match master_key.len() {
        16 => Ctr32BE::<Aes128>::new_from_slices(master_key, &iv[..])
            .map_err(|_| Error::Crypto)?
            .apply_keystream(out),
        32 => Ctr32BE::<Aes256>::new_from_slices(master_key, &iv[..])
            .map_err(|_| Error::Crypto)?
            .apply_keystream(out),
        _ => return Err(Error::InvalidArgument("a master key is 16 or 32 bytes")),
    }
    Ok(())
}
