//! Codec-aware frame encryption for media tracks (docs/protocol.md, "Frame format" and
//! "Receiving").  The codec header stays readable, because the router needs the VP8
//! key-frame flag and depacketizers read the first bytes, but it is authenticated:
//!
//! ```text
//! wire = clear || SFrame(KID, CTR, metadata = clear, plaintext = frame[n..])
//! ```
//!
//! with `n` = 10 for VP8 key frames (3-byte tag, start code, dimensions; RFC 6386 §9.1),
//! 3 for VP8 inter frames, 1 for Opus (the TOC byte, RFC 6716 §3.1).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::replay::ReplayWindow;
use crate::secret::{SecretKey, kid_secret_id};
use crate::sframe::{Encryptor, FrameKey, layout};
use crate::suite::CipherSuite;

/// The codecs an E2EE session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Opus,
}

impl Codec {
    /// `vp8`, `opus`, or the MIME forms `video/VP8`, `audio/opus`, in any case.
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        match lower
            .strip_prefix("video/")
            .or(lower.strip_prefix("audio/"))
            .unwrap_or(&lower)
        {
            "vp8" if !lower.starts_with("audio/") => Ok(Codec::Vp8),
            "opus" if !lower.starts_with("video/") => Ok(Codec::Opus),
            _ => Err(Error::UnsupportedCodec(name.to_string())),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Codec::Vp8 => "vp8",
            Codec::Opus => "opus",
        }
    }

    /// How many leading bytes of `frame` stay in clear.  A frame shorter than that is
    /// not valid for its codec (and an empty frame never is).
    #[inline]
    pub fn clear_len(self, frame: &[u8]) -> Result<usize> {
        let needed = match (self, frame.first()) {
            // RFC 6386 §9.1: bit 0 of the frame tag is 0 on key frames.
            (Codec::Vp8, Some(b)) if b & 1 == 0 => 10,
            (Codec::Vp8, _) => 3,
            (Codec::Opus, _) => 1,
        };
        if frame.len() < needed {
            return Err(Error::FrameTooShort {
                codec: self.name(),
                len: frame.len(),
                needed,
            });
        }
        Ok(needed)
    }
}

/// Encrypts one outgoing track's frames under the current secret's KID.
pub struct FrameSender {
    suite: CipherSuite,
    codec: Codec,
    enc: Option<Encryptor>,
}

impl FrameSender {
    pub fn new(suite: CipherSuite, codec: Codec) -> Self {
        FrameSender {
            suite,
            codec,
            enc: None,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Starts encrypting under `secret_key` with a fresh `kid`, CTR from 0.
    pub fn set_key(&mut self, secret_key: &SecretKey, kid: u64) -> Result<()> {
        self.enc = Some(Encryptor::new(self.suite, secret_key.as_bytes(), kid, 0)?);
        Ok(())
    }

    /// Stops encrypting: every later frame is refused with [`Error::SecretMissing`].
    pub fn clear_key(&mut self) {
        self.enc = None;
    }

    pub fn kid(&self) -> Option<u64> {
        self.enc.as_ref().map(Encryptor::kid)
    }

    /// Bytes [`encrypt_into`](Self::encrypt_into) writes for a frame of `n` bytes.
    pub fn output_len(&self, n: usize) -> Result<usize> {
        self.enc.as_ref().ok_or(Error::SecretMissing)?.output_len(n)
    }

    /// Where the parts of `frame` go in its wire form: `(clear_len, header_len)`; the
    /// payload starts at `clear_len + header_len`.  Refuses a frame too short for its
    /// codec, or any frame without a secret.
    pub fn layout(&self, frame: &[u8]) -> Result<(usize, usize)> {
        let enc = self.enc.as_ref().ok_or(Error::SecretMissing)?;
        Ok((self.codec.clear_len(frame)?, enc.header_len()))
    }

    /// Encrypts a wire frame laid out in `buf` as `[clear | header space | payload | tag
    /// space]`, with the `clear_len` clear bytes and the `payload_len` payload bytes
    /// already in place (see [`layout`](Self::layout)); returns the wire length.  The
    /// form that needs no second buffer.
    pub fn encrypt_in_place(
        &mut self,
        buf: &mut [u8],
        clear_len: usize,
        payload_len: usize,
    ) -> Result<usize> {
        let enc = self.enc.as_mut().ok_or(Error::SecretMissing)?;
        let Some((clear, rest)) = buf.split_at_mut_checked(clear_len) else {
            return Err(Error::InvalidLength("output buffer too small".to_string()));
        };
        Ok(clear_len + enc.encrypt_in_place(rest, payload_len, clear)?)
    }

    /// Writes `clear || header || ciphertext || tag` to the start of `out`.
    pub fn encrypt_into(&mut self, frame: &[u8], out: &mut [u8]) -> Result<usize> {
        let enc = self.enc.as_mut().ok_or(Error::SecretMissing)?;
        let n = self.codec.clear_len(frame)?;
        let (clear, payload) = frame.split_at(n);
        let Some((out_clear, out_rest)) = out.split_at_mut_checked(n) else {
            return Err(Error::InvalidLength("output buffer too small".to_string()));
        };
        out_clear.copy_from_slice(clear);
        Ok(n + enc.encrypt_into(payload, clear, out_rest)?)
    }

    pub fn encrypt(&mut self, frame: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.output_len(frame.len())?];
        let n = self.encrypt_into(frame, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

/// A secret a receiver holds, and until when.
struct HeldSecret {
    key: SecretKey,
    id: u16,
    expires: Option<Instant>,
}

impl HeldSecret {
    fn live(&self, now: impl FnOnce() -> Instant) -> bool {
        self.expires.is_none_or(|t| now() < t)
    }
}

/// A KID that has authenticated at least one frame.
struct KidState {
    key: FrameKey,
    window: ReplayWindow,
    secret: SecretKey,
    expires: Option<Instant>,
}

/// Counts of what became of the frames a receiver saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub ok: u64,
    pub mismatched: u64,
    pub failed: u64,
    pub replayed: u64,
    pub missing: u64,
}

/// How many authenticated KIDs a receiver keeps keys for.  A track has one sender, which
/// uses one KID per secret, so a handful is plenty; more are evicted oldest first.
pub const LIVE_KIDS: usize = 16;
/// How many evicted KIDs keep their highest CTR, so that re-admitting one never
/// re-opens frames it already accepted.
pub const RETIRED_KIDS: usize = 1024;

/// Decrypts one incoming track: holds the secrets (current and, for a grace period,
/// previous ones), derives a KID's key on first sight of a KID whose `secret_id` matches
/// a held secret, and keeps a replay window per KID.
///
/// A KID's key is cached only once a frame under it authenticated: forged frames with
/// made-up KIDs (the `secret_id` is public) cost a derivation each but cannot evict
/// genuine keys, nor reset a replay window.
pub struct FrameReceiver {
    suite: CipherSuite,
    codec: Codec,
    replay_window: u32,
    secrets: Vec<HeldSecret>,
    live: HashMap<u64, KidState>,
    live_order: VecDeque<u64>,
    retired: HashMap<u64, u64>,
    retired_order: VecDeque<u64>,
    stats: ReceiverStats,
    last: Option<(u64, u64)>,
}

impl FrameReceiver {
    pub fn new(suite: CipherSuite, codec: Codec, replay_window: u32) -> Result<Self> {
        ReplayWindow::check_width(replay_window)?;
        Ok(FrameReceiver {
            suite,
            codec,
            replay_window,
            secrets: Vec::new(),
            live: HashMap::new(),
            live_order: VecDeque::new(),
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
            stats: ReceiverStats::default(),
            last: None,
        })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The KID of the last frame that authenticated (`None` before the first).  Frames
    /// that fail, for any reason, leave it unchanged: it never names an unauthenticated
    /// KID.  A sender uses it to notice another sender on its own KID (docs/protocol.md,
    /// "KID collisions").
    pub fn last_kid(&self) -> Option<u64> {
        self.last.map(|(kid, _)| kid)
    }

    /// The CTR of the last frame that authenticated, with [`last_kid`](Self::last_kid).
    pub fn last_ctr(&self) -> Option<u64> {
        self.last.map(|(_, ctr)| ctr)
    }

    /// The KIDs with cached keys, oldest first.
    pub fn kids(&self) -> impl Iterator<Item = u64> + '_ {
        self.live_order.iter().copied()
    }

    /// Replaces the held secrets: each with the time it stays valid (`None`: until
    /// replaced).  KIDs of secrets no longer held are forgotten (their highest CTR is
    /// kept); KIDs of secrets still held keep their keys and replay windows.
    pub fn set_secrets(&mut self, secrets: Vec<(SecretKey, Option<Duration>)>) {
        let now = Instant::now();
        self.secrets = secrets
            .into_iter()
            .map(|(key, ttl)| HeldSecret {
                id: key.id(),
                // A TTL too long to represent is no expiry at all (never a panic).
                expires: ttl.and_then(|d| now.checked_add(d)),
                key,
            })
            .collect();
        let mut gone = Vec::new();
        for (&kid, state) in self.live.iter_mut() {
            match self
                .secrets
                .iter()
                .find(|s| bool::from(s.key.as_bytes().ct_eq(state.secret.as_bytes())))
            {
                Some(held) => state.expires = held.expires,
                None => gone.push(kid),
            }
        }
        for kid in gone {
            self.retire(kid);
        }
    }

    /// Authenticates and decrypts a wire frame, writing the codec frame (clear bytes and
    /// plaintext) to the start of `out`; returns its length.  Nothing is written on
    /// failure, and every outcome is counted in [`stats`](Self::stats).
    pub fn decrypt_into(&mut self, wire: &[u8], out: &mut [u8]) -> Result<usize> {
        let result = self.open(wire, out);
        let s = &mut self.stats;
        match &result {
            Ok(_) => s.ok += 1,
            Err(Error::SecretMismatch { .. }) => s.mismatched += 1,
            Err(Error::SecretMissing) => s.missing += 1,
            Err(Error::Replayed { .. }) => s.replayed += 1,
            Err(_) => s.failed += 1,
        }
        result
    }

    /// The allocating form of [`decrypt_into`](Self::decrypt_into).
    pub fn decrypt(&mut self, wire: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.plaintext_len(wire).unwrap_or(0)];
        let n = self.decrypt_into(wire, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// The length of the codec frame inside `wire`, from its clear bytes and header.
    pub fn plaintext_len(&self, wire: &[u8]) -> Result<usize> {
        let n = self.codec.clear_len(wire)?;
        Ok(n + layout(self.suite, wire.get(n..).unwrap_or_default())?.ciphertext_len)
    }

    fn open(&mut self, wire: &[u8], out: &mut [u8]) -> Result<usize> {
        let n = self.codec.clear_len(wire)?;
        let (clear, sframe) = wire.split_at(n);
        let l = layout(self.suite, sframe)?;
        let kid = l.header.kid;
        let total = n + l.ciphertext_len;
        let Some(out) = out.get_mut(..total) else {
            return Err(Error::InvalidLength(format!(
                "output buffer too small: {} < {total} bytes",
                out.len()
            )));
        };
        let (out_clear, out_body) = out.split_at_mut(n);

        let expired = self
            .live
            .get(&kid)
            .is_some_and(|st| st.expires.is_some_and(|t| Instant::now() >= t));
        if expired {
            self.retire(kid);
        }
        if let Some(state) = self.live.get_mut(&kid) {
            if !state.window.check(l.header.ctr) {
                return Err(Error::Replayed {
                    kid,
                    ctr: l.header.ctr,
                });
            }
            state.key.decrypt_frame(&l, sframe, clear, out_body)?;
            state.window.accept(l.header.ctr);
            out_clear.copy_from_slice(clear);
            self.last = Some((kid, l.header.ctr));
            return Ok(total);
        }

        // First frame of this KID (or first since it was retired).
        let mut now = None;
        let mut clock = || *now.get_or_insert_with(Instant::now);
        let sid = kid_secret_id(kid);
        let Some(held) = self
            .secrets
            .iter()
            .find(|s| s.id == sid && s.live(&mut clock))
        else {
            return Err(if self.secrets.iter().any(|s| s.live(&mut clock)) {
                Error::SecretMismatch { kid }
            } else {
                Error::SecretMissing
            });
        };
        // The bitmap of an evicted KID went with its key: everything up to its old top
        // counts as seen, for good (not only for this first frame).
        let mut window = match self.retired.get(&kid) {
            Some(&top) => ReplayWindow::resume(self.replay_window, top),
            None => ReplayWindow::new(self.replay_window),
        };
        if !window.check(l.header.ctr) {
            return Err(Error::Replayed {
                kid,
                ctr: l.header.ctr,
            });
        }
        let key = FrameKey::new(self.suite, held.key.as_bytes(), kid)?;
        key.decrypt_frame(&l, sframe, clear, out_body)?;
        window.accept(l.header.ctr);
        out_clear.copy_from_slice(clear);
        let state = KidState {
            key,
            window,
            secret: held.key.clone(),
            expires: held.expires,
        };
        self.admit(kid, state);
        self.last = Some((kid, l.header.ctr));
        Ok(total)
    }

    fn admit(&mut self, kid: u64, state: KidState) {
        if self.live.len() >= LIVE_KIDS {
            if let Some(oldest) = self.live_order.front().copied() {
                self.retire(oldest);
            }
        }
        self.retired.remove(&kid);
        self.retired_order.retain(|&k| k != kid);
        self.live.insert(kid, state);
        self.live_order.push_back(kid);
    }

    /// Drops a KID's key but remembers its highest CTR.
    fn retire(&mut self, kid: u64) {
        let Some(state) = self.live.remove(&kid) else {
            return;
        };
        self.live_order.retain(|&k| k != kid);
        if let Some(top) = state.window.top() {
            if self.retired.len() >= RETIRED_KIDS {
                if let Some(oldest) = self.retired_order.pop_front() {
                    self.retired.remove(&oldest);
                }
            }
            self.retired.insert(kid, top);
            self.retired_order.push_back(kid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{derive_secret_key, new_kid};

    const SUITE: CipherSuite = CipherSuite::Aes256CtrHmacSha512_80;

    fn key(secret: &str) -> SecretKey {
        derive_secret_key(secret, "session", 10).unwrap()
    }

    fn sender(k: &SecretKey, codec: Codec) -> FrameSender {
        let mut s = FrameSender::new(SUITE, codec);
        s.set_key(k, new_kid(k.id()).unwrap()).unwrap();
        s
    }

    fn receiver(secrets: &[&SecretKey]) -> FrameReceiver {
        let mut r = FrameReceiver::new(SUITE, Codec::Vp8, 128).unwrap();
        r.set_secrets(secrets.iter().map(|k| ((*k).clone(), None)).collect());
        r
    }

    fn vp8_key_frame() -> Vec<u8> {
        let mut f = vec![0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        f.extend(0..200u8);
        f
    }

    #[test]
    fn codec_rule() {
        assert_eq!(Codec::parse("video/VP8"), Ok(Codec::Vp8));
        assert_eq!(Codec::parse("OPUS"), Ok(Codec::Opus));
        assert!(Codec::parse("audio/vp8").is_err());
        assert!(Codec::parse("h264").is_err());
        assert_eq!(Codec::Vp8.clear_len(&vp8_key_frame()), Ok(10));
        assert_eq!(Codec::Vp8.clear_len(&[1, 0, 0]), Ok(3));
        assert!(Codec::Vp8.clear_len(&[0, 0, 0]).is_err());
        assert!(Codec::Opus.clear_len(&[]).is_err());
        assert_eq!(Codec::Opus.clear_len(&[0xfc]), Ok(1));
    }

    #[test]
    fn round_trip_keeps_the_codec_header_clear_and_authenticated() {
        let k = key("correct horse battery");
        let mut tx = sender(&k, Codec::Vp8);
        let mut rx = receiver(&[&k]);
        let frame = vp8_key_frame();
        let wire = tx.encrypt(&frame).unwrap();
        assert_eq!(&wire[..10], &frame[..10]);
        assert_ne!(&wire[10..210], &frame[10..]);
        let mut bad = wire.clone();
        bad[7] ^= 1; // a dimension byte: clear but authenticated
        assert_eq!(rx.decrypt(&bad), Err(Error::Authentication));
        assert_eq!(rx.decrypt(&wire).unwrap(), frame);
        assert!(matches!(rx.decrypt(&wire), Err(Error::Replayed { .. })));
        assert_eq!(
            rx.stats(),
            ReceiverStats {
                ok: 1,
                failed: 1,
                replayed: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn in_place_and_copying_forms_agree() {
        let k = key("correct horse battery");
        let kid = new_kid(k.id()).unwrap();
        let (mut a, mut b) = (
            FrameSender::new(SUITE, Codec::Vp8),
            FrameSender::new(SUITE, Codec::Vp8),
        );
        a.set_key(&k, kid).unwrap();
        b.set_key(&k, kid).unwrap();
        let frame = vp8_key_frame();
        let (n, hlen) = b.layout(&frame).unwrap();
        let mut buf = vec![0u8; b.output_len(frame.len()).unwrap()];
        buf[..n].copy_from_slice(&frame[..n]);
        buf[n + hlen..n + hlen + frame.len() - n].copy_from_slice(&frame[n..]);
        let len = b.encrypt_in_place(&mut buf, n, frame.len() - n).unwrap();
        assert_eq!(&buf[..len], &a.encrypt(&frame).unwrap()[..]);
    }

    #[test]
    fn too_short_frames_are_never_sent() {
        let k = key("correct horse battery");
        let mut tx = sender(&k, Codec::Vp8);
        assert!(matches!(
            tx.encrypt(&[0, 1, 2]),
            Err(Error::FrameTooShort { needed: 10, .. })
        ));
        assert!(matches!(tx.encrypt(&[]), Err(Error::FrameTooShort { .. })));
        tx.clear_key();
        assert_eq!(tx.encrypt(&vp8_key_frame()), Err(Error::SecretMissing));
    }

    #[test]
    fn missing_then_mismatch_then_match() {
        let (a, b) = (key("secret number one"), key("secret number two"));
        let mut tx = sender(&a, Codec::Vp8);
        let mut rx = receiver(&[]);
        assert_eq!(
            rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()),
            Err(Error::SecretMissing)
        );
        rx.set_secrets(vec![(b.clone(), None)]);
        assert!(matches!(
            rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()),
            Err(Error::SecretMismatch { .. })
        ));
        rx.set_secrets(vec![(b, None), (a, None)]);
        assert!(rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()).is_ok());
        let s = rx.stats();
        assert_eq!((s.missing, s.mismatched, s.ok), (1, 1, 1));
    }

    #[test]
    fn an_expired_grace_secret_is_a_mismatch() {
        let (old, new) = (key("the old secret"), key("the new secret"));
        let mut tx = sender(&old, Codec::Vp8);
        let mut rx = receiver(&[&old]);
        assert!(rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()).is_ok());
        rx.set_secrets(vec![
            (new.clone(), None),
            (old.clone(), Some(Duration::from_secs(60))),
        ]);
        assert!(
            rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()).is_ok(),
            "within grace"
        );
        rx.set_secrets(vec![(new, None), (old, Some(Duration::ZERO))]);
        assert!(matches!(
            rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()),
            Err(Error::SecretMismatch { .. })
        ));
    }

    #[test]
    fn forged_kids_cannot_evict_genuine_ones() {
        let k = key("correct horse battery");
        let mut tx = sender(&k, Codec::Vp8);
        let mut rx = receiver(&[&k]);
        let first = tx.encrypt(&vp8_key_frame()).unwrap();
        assert!(rx.decrypt(&first).is_ok());
        let genuine = rx.kids().collect::<Vec<_>>();
        // Frames with made-up KIDs carrying the right (public) secret id.
        for _ in 0..100 {
            let mut forger = FrameSender::new(SUITE, Codec::Vp8);
            forger
                .set_key(&key("not the secret"), new_kid(k.id()).unwrap())
                .unwrap();
            let forged = forger.encrypt(&vp8_key_frame()).unwrap();
            assert_eq!(rx.decrypt(&forged), Err(Error::Authentication));
        }
        assert_eq!(rx.kids().collect::<Vec<_>>(), genuine);
        assert!(matches!(rx.decrypt(&first), Err(Error::Replayed { .. })));
    }

    #[test]
    fn an_evicted_kid_never_accepts_its_old_frames_again() {
        let k = key("correct horse battery");
        let mut rx = receiver(&[&k]);
        let mut first_tx = sender(&k, Codec::Vp8);
        let old = first_tx.encrypt(&vp8_key_frame()).unwrap();
        assert!(rx.decrypt(&old).is_ok());
        for _ in 0..LIVE_KIDS {
            let mut tx = sender(&k, Codec::Vp8);
            assert!(rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()).is_ok());
        }
        assert_eq!(rx.kids().count(), LIVE_KIDS);
        assert!(matches!(rx.decrypt(&old), Err(Error::Replayed { .. })));
        // Its next frame is new, so the KID comes back, but its old frames stay refused.
        assert!(
            rx.decrypt(&first_tx.encrypt(&vp8_key_frame()).unwrap())
                .is_ok()
        );
        assert!(matches!(rx.decrypt(&old), Err(Error::Replayed { .. })));
    }

    #[test]
    fn a_readmitted_kid_refuses_every_old_ctr() {
        let k = key("correct horse battery");
        let mut rx = receiver(&[&k]);
        let mut tx = sender(&k, Codec::Vp8);
        let old: Vec<Vec<u8>> = (0..10)
            .map(|_| tx.encrypt(&vp8_key_frame()).unwrap())
            .collect();
        for w in &old {
            assert!(rx.decrypt(w).is_ok());
        }
        for _ in 0..LIVE_KIDS {
            let mut other = sender(&k, Codec::Vp8);
            assert!(
                rx.decrypt(&other.encrypt(&vp8_key_frame()).unwrap())
                    .is_ok()
            );
        }
        assert!(rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()).is_ok());
        for w in &old {
            assert!(matches!(rx.decrypt(w), Err(Error::Replayed { .. })));
        }
    }

    #[test]
    fn last_kid_names_only_authenticated_frames() {
        let k = key("correct horse battery");
        let mut rx = receiver(&[&k]);
        let mut tx = sender(&k, Codec::Vp8);
        let first = tx.encrypt(&vp8_key_frame()).unwrap();
        assert_eq!(rx.last_kid(), None);
        let mut bad = first.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(rx.decrypt(&bad), Err(Error::Authentication));
        assert_eq!(rx.last_kid(), None, "a forged frame names no KID");
        assert!(rx.decrypt(&first).is_ok());
        assert_eq!(rx.last_kid(), tx.kid());
        assert_eq!(rx.last_ctr(), Some(0));
        // A forgery under another KID, a replay and a mismatch leave it unchanged.
        let mut forger = FrameSender::new(SUITE, Codec::Vp8);
        forger
            .set_key(&key("not the secret"), new_kid(k.id()).unwrap())
            .unwrap();
        let forged = forger.encrypt(&vp8_key_frame()).unwrap();
        assert_eq!(rx.decrypt(&forged), Err(Error::Authentication));
        assert!(matches!(rx.decrypt(&first), Err(Error::Replayed { .. })));
        let mut other = sender(&key("another secret"), Codec::Vp8);
        assert!(matches!(
            rx.decrypt(&other.encrypt(&vp8_key_frame()).unwrap()),
            Err(Error::SecretMismatch { .. })
        ));
        assert_eq!((rx.last_kid(), rx.last_ctr()), (tx.kid(), Some(0)));
        // The live-KID path sets it too.
        assert!(rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()).is_ok());
        assert_eq!((rx.last_kid(), rx.last_ctr()), (tx.kid(), Some(1)));
    }

    #[test]
    fn an_unrepresentable_grace_period_never_panics() {
        let k = key("correct horse battery");
        let mut rx = receiver(&[]);
        rx.set_secrets(vec![(k.clone(), Some(Duration::MAX))]);
        let mut tx = sender(&k, Codec::Vp8);
        assert!(rx.decrypt(&tx.encrypt(&vp8_key_frame()).unwrap()).is_ok());
    }
}
