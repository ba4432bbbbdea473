//! SFrame encryption and decryption, RFC 9605 §4.4 and §4.5.

use std::collections::HashMap;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::header::Header;
use crate::primitives::{self, AeadKey};
use crate::replay::ReplayWindow;
use crate::suite::CipherSuite;

/// Longest tag of any suite.
pub const MAX_TAG_LEN: usize = 16;
/// Largest plaintext accepted: AES-CTR's 32-bit block counter (RFC 9605 §4.5.1 starts
/// it at zero for each frame) must not wrap.  Far above any media frame.
pub const MAX_PLAINTEXT_LEN: usize = (u32::MAX as usize) * 16;
/// Shortest `base_key` accepted.  HKDF takes any length, but a key shorter than the
/// 128-bit security every suite aims at is a mistake (an empty one is no key at all).
/// The official vectors use 16-byte base keys for every suite.
pub const MIN_BASE_KEY_LEN: usize = 16;

/// Refuses a `base_key` shorter than [`MIN_BASE_KEY_LEN`].
pub fn check_base_key(base_key: &[u8]) -> Result<()> {
    if base_key.len() < MIN_BASE_KEY_LEN {
        return Err(Error::InvalidLength(format!(
            "a base key is at least {MIN_BASE_KEY_LEN} bytes, not {}",
            base_key.len()
        )));
    }
    Ok(())
}

/// `sframe_key` and `sframe_salt` for one KID, RFC 9605 §4.4.2:
///
/// ```text
/// sframe_secret = HKDF-Extract("", base_key)
/// sframe_key    = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key "  || KID || suite, Nk)
/// sframe_salt   = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " || KID || suite, Nn)
/// ```
/// with KID as a 64-bit and the suite as a 16-bit big-endian integer.  Refuses a
/// `base_key` shorter than [`MIN_BASE_KEY_LEN`].
pub fn derive_key_salt(
    suite: CipherSuite,
    base_key: &[u8],
    kid: u64,
) -> Result<(Zeroizing<Vec<u8>>, [u8; 12])> {
    check_base_key(base_key)?;
    let mut key_label = Vec::with_capacity(32);
    key_label.extend_from_slice(b"SFrame 1.0 Secret key ");
    key_label.extend_from_slice(&kid.to_be_bytes());
    key_label.extend_from_slice(&suite.id().to_be_bytes());
    let mut salt_label = Vec::with_capacity(33);
    salt_label.extend_from_slice(b"SFrame 1.0 Secret salt ");
    salt_label.extend_from_slice(&kid.to_be_bytes());
    salt_label.extend_from_slice(&suite.id().to_be_bytes());

    let prk = primitives::hkdf_extract(suite.hash(), b"", base_key);
    let mut key = Zeroizing::new(vec![0u8; suite.nk()]);
    prk.expand(&key_label, &mut key);
    let mut salt = [0u8; 12];
    prk.expand(&salt_label, &mut salt);
    Ok((key, salt))
}

/// A KID's ready-to-use key: the AEAD with its key schedule expanded once, and the salt.
pub struct FrameKey {
    suite: CipherSuite,
    aead: AeadKey,
    salt: [u8; 12],
}

impl Drop for FrameKey {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl FrameKey {
    pub fn new(suite: CipherSuite, base_key: &[u8], kid: u64) -> Result<Self> {
        let (key, salt) = derive_key_salt(suite, base_key, kid)?;
        let aead = AeadKey::new(suite, &key)?;
        Ok(FrameKey { suite, aead, salt })
    }

    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// `nonce = sframe_salt XOR CTR`, the CTR left-padded to Nn bytes (RFC 9605 §4.4.3).
    #[inline]
    fn nonce(&self, ctr: u64) -> [u8; 12] {
        let mut nonce = self.salt;
        for (n, c) in nonce[4..].iter_mut().zip(ctr.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }

    /// Encrypts `buf` in place, or `from` into `buf`, and returns the tag (`Nt` bytes at
    /// the start of the array).  The AAD is `header || metadata` (RFC 9605 §4.4.3).
    fn seal(
        &self,
        ctr: u64,
        header: &[u8],
        metadata: &[u8],
        from: Option<&[u8]>,
        buf: &mut [u8],
    ) -> [u8; MAX_TAG_LEN] {
        self.aead
            .seal(&self.nonce(ctr), header, metadata, from, buf)
    }

    /// Authenticates and decrypts the SFrame `data` laid out as `l` into `out`
    /// (`l.ciphertext_len` bytes).
    pub(crate) fn decrypt_frame(
        &self,
        l: &Layout,
        data: &[u8],
        metadata: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let malformed = || Error::InvalidLength("frame shorter than its layout".to_string());
        let (header, rest) = data.split_at_checked(l.header_len).ok_or_else(malformed)?;
        let (ct, tag) = rest
            .split_at_checked(l.ciphertext_len)
            .ok_or_else(malformed)?;
        self.open(l.header.ctr, header, metadata, ct, tag, out)
    }

    /// Authenticates `ct` against `tag` and, only if it authenticates, decrypts it into `out`.
    fn open(
        &self,
        ctr: u64,
        header: &[u8],
        metadata: &[u8],
        ct: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        self.aead
            .open(&self.nonce(ctr), header, metadata, ct, tag, out)
    }
}

/// `header_len + body_len + tag_len`, or `InvalidLength` if it does not fit a `usize`.
pub(crate) fn frame_len(header_len: usize, body_len: usize, tag_len: usize) -> Result<usize> {
    header_len
        .checked_add(body_len)
        .and_then(|n| n.checked_add(tag_len))
        .ok_or_else(|| {
            Error::InvalidLength(format!(
                "a frame of {body_len} bytes is too long to encrypt"
            ))
        })
}

/// Checks a plaintext length against [`MAX_PLAINTEXT_LEN`].
fn check_plaintext_len(n: usize) -> Result<()> {
    if n > MAX_PLAINTEXT_LEN {
        return Err(Error::InvalidLength(format!(
            "plaintext of {n} bytes is longer than the {MAX_PLAINTEXT_LEN} an SFrame can carry"
        )));
    }
    Ok(())
}

/// Encrypts frames for one KID, counting CTR up from a start value (RFC 9605 §4.4.3).
pub struct Encryptor {
    key: FrameKey,
    kid: u64,
    /// The next CTR; `None` once `u64::MAX` has been used.
    next_ctr: Option<u64>,
}

impl Encryptor {
    pub fn new(suite: CipherSuite, base_key: &[u8], kid: u64, counter: u64) -> Result<Self> {
        Ok(Encryptor {
            key: FrameKey::new(suite, base_key, kid)?,
            kid,
            next_ctr: Some(counter),
        })
    }

    pub fn suite(&self) -> CipherSuite {
        self.key.suite
    }

    pub fn kid(&self) -> u64 {
        self.kid
    }

    /// The CTR the next frame will carry, or `None` when all are used.
    pub fn counter(&self) -> Option<u64> {
        self.next_ctr
    }

    /// Bytes [`encrypt_into`](Self::encrypt_into) writes for a plaintext of `n` bytes;
    /// `InvalidLength` for a plaintext longer than [`MAX_PLAINTEXT_LEN`].
    pub fn output_len(&self, n: usize) -> Result<usize> {
        check_plaintext_len(n)?;
        frame_len(self.header_len(), n, self.key.suite.nt())
    }

    /// Length of the next frame's header: where [`encrypt_in_place`](Self::encrypt_in_place)
    /// expects the plaintext to start.
    pub fn header_len(&self) -> usize {
        Header::new(self.kid, self.next_ctr.unwrap_or(u64::MAX)).len()
    }

    /// Encrypts a frame laid out in `buf` as `[header space | plaintext | tag space]`,
    /// with the plaintext of `plaintext_len` bytes at `buf[header_len()..]`, and writes
    /// the header and tag around it; returns the frame length.  This is the form that
    /// needs no second buffer: callers that own the output place the plaintext once.
    /// The CTR advances only when a frame was written.
    pub fn encrypt_in_place(
        &mut self,
        buf: &mut [u8],
        plaintext_len: usize,
        metadata: &[u8],
    ) -> Result<usize> {
        self.encrypt_frame(buf, plaintext_len, metadata, None)
    }

    /// Writes `header || ciphertext || tag` at the start of `out`; returns its length.
    /// The CTR advances only when a frame was written.
    pub fn encrypt_into(
        &mut self,
        plaintext: &[u8],
        metadata: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        self.encrypt_frame(out, plaintext.len(), metadata, Some(plaintext))
    }

    /// [`encrypt_in_place`](Self::encrypt_in_place) when `from` is `None`, else with the
    /// plaintext read from `from` (the AEAD may encrypt from one buffer into the other
    /// without copying first).
    fn encrypt_frame(
        &mut self,
        buf: &mut [u8],
        plaintext_len: usize,
        metadata: &[u8],
        from: Option<&[u8]>,
    ) -> Result<usize> {
        let ctr = self.next_ctr.ok_or(Error::CounterExhausted)?;
        check_plaintext_len(plaintext_len)?;
        let header = Header::new(self.kid, ctr);
        let nt = self.key.suite.nt();
        let total = frame_len(header.len(), plaintext_len, nt)?;
        let Some(buf) = buf.get_mut(..total) else {
            return Err(Error::InvalidLength(format!(
                "output buffer too small: {} < {total} bytes",
                buf.len()
            )));
        };
        let hlen = header.encode_into(buf)?;
        let (head, rest) = buf.split_at_mut(hlen);
        let (body, tag_out) = rest.split_at_mut(plaintext_len);
        let tag = self.key.seal(ctr, head, metadata, from, body);
        copy_prefix(tag_out, &tag);
        self.next_ctr = ctr.checked_add(1);
        Ok(total)
    }

    /// The allocating form of [`encrypt_into`](Self::encrypt_into).
    pub fn encrypt(&mut self, plaintext: &[u8], metadata: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.output_len(plaintext.len())?];
        let n = self.encrypt_into(plaintext, metadata, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

struct KidState {
    key: FrameKey,
    window: ReplayWindow,
}

/// Decrypts frames of any registered KID, with a replay window per KID.
pub struct Decryptor {
    suite: CipherSuite,
    replay_window: u32,
    keys: HashMap<u64, KidState>,
}

/// Where the parts of an SFrame lie: `header || ciphertext || tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub header: Header,
    pub header_len: usize,
    pub ciphertext_len: usize,
}

/// Parses the header of `data` and checks that a tag of `suite` fits after it.
pub fn layout(suite: CipherSuite, data: &[u8]) -> Result<Layout> {
    let (header, header_len) = Header::decode(data)?;
    let nt = suite.nt();
    let ciphertext_len = (data.len() - header_len).checked_sub(nt).ok_or_else(|| {
        Error::InvalidLength(format!(
            "frame too short: {} bytes after the {header_len}-byte header, the tag alone is {nt}",
            data.len() - header_len
        ))
    })?;
    Ok(Layout {
        header,
        header_len,
        ciphertext_len,
    })
}

impl Decryptor {
    /// `replay_window`: how many CTR values back a reordered frame is still accepted,
    /// 1 to 128; 0 turns replay protection off.
    pub fn new(suite: CipherSuite, replay_window: u32) -> Result<Self> {
        ReplayWindow::check_width(replay_window)?;
        Ok(Decryptor {
            suite,
            replay_window,
            keys: HashMap::new(),
        })
    }

    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    pub fn replay_window(&self) -> u32 {
        self.replay_window
    }

    /// Registers `base_key` for `kid`.  A KID names one key for its whole life
    /// (RFC 9605 §4.4.1), so registering a KID again replaces its key but keeps its
    /// replay window: frames already accepted can never be accepted again.  To start a
    /// KID afresh, [`remove_key`](Self::remove_key) it first.
    pub fn add_key(&mut self, kid: u64, base_key: &[u8]) -> Result<()> {
        let key = FrameKey::new(self.suite, base_key, kid)?;
        match self.keys.get_mut(&kid) {
            Some(state) => state.key = key,
            None => {
                let window = ReplayWindow::new(self.replay_window);
                self.keys.insert(kid, KidState { key, window });
            }
        }
        Ok(())
    }

    /// Forgets `kid`; false if it was not registered.
    pub fn remove_key(&mut self, kid: u64) -> bool {
        self.keys.remove(&kid).is_some()
    }

    pub fn has_key(&self, kid: u64) -> bool {
        self.keys.contains_key(&kid)
    }

    /// The registered KIDs, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Authenticates and decrypts `data`, writing the plaintext at the start of `out`;
    /// returns its length.  On any failure nothing is left in `out` and the replay
    /// window is unchanged.
    pub fn decrypt_into(&mut self, data: &[u8], metadata: &[u8], out: &mut [u8]) -> Result<usize> {
        let l = layout(self.suite, data)?;
        let state = self
            .keys
            .get_mut(&l.header.kid)
            .ok_or(Error::UnknownKeyId(l.header.kid))?;
        let ctr = l.header.ctr;
        if !state.window.check(ctr) {
            return Err(Error::Replayed {
                kid: l.header.kid,
                ctr,
            });
        }
        let Some(out) = out.get_mut(..l.ciphertext_len) else {
            return Err(Error::InvalidLength(format!(
                "output buffer too small: {} < {} bytes",
                out.len(),
                l.ciphertext_len
            )));
        };
        state.key.decrypt_frame(&l, data, metadata, out)?;
        state.window.accept(ctr);
        Ok(l.ciphertext_len)
    }

    /// The allocating form of [`decrypt_into`](Self::decrypt_into).
    pub fn decrypt(&mut self, data: &[u8], metadata: &[u8]) -> Result<Vec<u8>> {
        let l = layout(self.suite, data)?;
        let mut out = vec![0u8; l.ciphertext_len];
        self.decrypt_into(data, metadata, &mut out)?;
        Ok(out)
    }
}

/// Copies as much of `src` as fits to the start of `dst`.
#[inline]
pub(crate) fn copy_prefix(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

/// Builds `header || metadata` where an AEAD needs the AAD in one piece (GCM).
pub(crate) fn join_aad<R>(header: &[u8], metadata: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    let n = header.len() + metadata.len();
    if n <= 64 {
        let mut buf = [0u8; 64];
        copy_prefix(&mut buf, header);
        copy_prefix(buf.get_mut(header.len()..).unwrap_or_default(), metadata);
        f(buf.get(..n).unwrap_or_default())
    } else {
        let mut v = Vec::with_capacity(n);
        v.extend_from_slice(header);
        v.extend_from_slice(metadata);
        f(&v)
    }
}

/// The bare AEAD of a suite (RFC 9605 §4.5), outside the SFrame framing: `ct || tag`
/// for an explicit key (Nk bytes), nonce and AAD.  For tests and interoperability
/// checks; frames go through [`Encryptor`].
pub fn aead_encrypt(
    suite: CipherSuite,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    check_plaintext_len(plaintext.len())?;
    let aead = AeadKey::new(suite, key)?;
    let mut out = vec![0u8; plaintext.len()];
    let tag = aead.seal(nonce, aad, b"", Some(plaintext), &mut out);
    out.extend_from_slice(tag.get(..suite.nt()).unwrap_or_default());
    Ok(out)
}

/// The inverse of [`aead_encrypt`].
pub fn aead_decrypt(
    suite: CipherSuite,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    let aead = AeadKey::new(suite, key)?;
    let ct_len = ciphertext
        .len()
        .checked_sub(suite.nt())
        .ok_or(Error::Authentication)?;
    let (ct, tag) = ciphertext.split_at(ct_len);
    let mut out = vec![0u8; ct_len];
    aead.open(nonce, aad, b"", ct, tag, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [7u8; 16];

    #[test]
    fn output_len_refuses_impossible_lengths() {
        for suite in CipherSuite::ALL {
            let Ok(enc) = Encryptor::new(suite, &KEY, 1, 0) else {
                panic!("a 16-byte base key is valid for suite {}", suite.id());
            };
            assert_eq!(enc.output_len(10), Ok(enc.header_len() + 10 + suite.nt()));
            assert!(enc.output_len(MAX_PLAINTEXT_LEN).is_ok());
            for n in [MAX_PLAINTEXT_LEN + 1, usize::MAX - 5, usize::MAX] {
                assert!(matches!(enc.output_len(n), Err(Error::InvalidLength(_))));
            }
        }
        assert!(matches!(
            frame_len(usize::MAX, 1, 0),
            Err(Error::InvalidLength(_))
        ));
        assert!(matches!(
            frame_len(1, usize::MAX - 1, 1),
            Err(Error::InvalidLength(_))
        ));
        assert_eq!(frame_len(1, 2, 3), Ok(6));
    }

    #[test]
    fn short_base_keys_are_refused() {
        for suite in CipherSuite::ALL {
            for n in [0, 1, MIN_BASE_KEY_LEN - 1] {
                let key = vec![1u8; n];
                assert!(matches!(
                    derive_key_salt(suite, &key, 1),
                    Err(Error::InvalidLength(_))
                ));
                assert!(matches!(
                    Encryptor::new(suite, &key, 1, 0),
                    Err(Error::InvalidLength(_))
                ));
                let Ok(mut dec) = Decryptor::new(suite, 128) else {
                    panic!("a 128 window is valid");
                };
                assert!(matches!(dec.add_key(1, &key), Err(Error::InvalidLength(_))));
                assert!(dec.is_empty());
            }
            assert!(derive_key_salt(suite, &KEY, 1).is_ok());
            assert!(derive_key_salt(suite, &[2u8; 64], 1).is_ok());
        }
    }
}
