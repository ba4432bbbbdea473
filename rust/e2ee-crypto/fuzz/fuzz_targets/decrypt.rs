//! `Decryptor::decrypt` / `decrypt_into` never panic, and succeed only on frames the
//! matching `Encryptor` produced.
//!
//! Byte 0 picks the suite, byte 1 the mode:
//! * raw: arbitrary frame and metadata.  Any success must be reproduced exactly by
//!   `Encryptor::new(suite, key, kid, ctr).encrypt(plaintext, metadata)`.
//! * tamper: encrypt an input-derived frame, optionally change one byte of the frame or
//!   the metadata (or cut/extend either).  Changed: both decrypt paths fail and the
//!   replay window is left alone.  Unchanged: it round-trips, then counts as a replay.
//! * replay: a sequence of genuine frames with input-chosen CTRs, checked against a model
//!   of the replay window, with forged frames mixed in.
//! * aead: `aead_encrypt` / `aead_decrypt` round trip and tamper check.
#![no_main]

use std::collections::HashSet;

use e2ee_crypto::sframe::{aead_decrypt, aead_encrypt, layout};
use e2ee_crypto::{CipherSuite, Decryptor, Encryptor, Error, Header};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz base key, 32 bytes long....";
const OTHER_KEY: &[u8] = b"another base key for KID 7 only";
/// Registered KIDs: config-byte values, a 2-byte and an 8-byte one.  KID 7 has OTHER_KEY.
const KIDS: [u64; 5] = [0, 5, 7, 0x123, 0xbeef_0000_1234_5678];
/// KIDs never registered.
const UNKNOWN_KIDS: [u64; 3] = [1, 0x4567, u64::MAX];
const SENTINEL: u8 = 0xa5;

fn key_of(kid: u64) -> Option<&'static [u8]> {
    match kid {
        7 => Some(OTHER_KEY),
        k if KIDS.contains(&k) => Some(KEY),
        _ => None,
    }
}

fn decryptor(suite: CipherSuite, window: u32) -> Decryptor {
    let mut d = Decryptor::new(suite, window).expect("window <= 128");
    for kid in KIDS {
        d.add_key(kid, key_of(kid).unwrap_or(KEY)).expect("add_key");
    }
    d
}

/// A u64 spread over all magnitudes: a random value shifted right by 0 to 64 bits.
fn spread_u64(u: &mut Unstructured) -> Result<u64> {
    let v: u64 = u.arbitrary()?;
    let s: u8 = u.int_in_range(0..=64)?;
    Ok(v.checked_shr(u32::from(s)).unwrap_or(0))
}

fn bytes<'a>(u: &mut Unstructured<'a>, max: usize) -> Result<&'a [u8]> {
    let n = u.int_in_range(0..=max)?;
    u.bytes(n.min(u.len()))
}

/// What `Encryptor` would have sent for this plaintext under the frame's (KID, CTR).
fn reencrypt(suite: CipherSuite, data: &[u8], metadata: &[u8], pt: &[u8]) -> Vec<u8> {
    let (h, _) = Header::decode(data).expect("decrypted frame has a header");
    let key = key_of(h.kid).expect("decrypted frame has a registered KID");
    let mut enc = Encryptor::new(suite, key, h.kid, h.ctr).expect("encryptor");
    enc.encrypt(pt, metadata).expect("encrypt")
}

/// Runs `decrypt` on `a` and `decrypt_into` (out buffer of `out_len`) on `b`, two
/// decryptors in the same state, and checks they agree.  Returns the `decrypt` result.
fn decrypt_both(
    suite: CipherSuite,
    a: &mut Decryptor,
    b: &mut Decryptor,
    data: &[u8],
    metadata: &[u8],
    out_len: usize,
) -> std::result::Result<Vec<u8>, Error> {
    let r1 = a.decrypt(data, metadata);
    let mut out = vec![SENTINEL; out_len];
    let r2 = b.decrypt_into(data, metadata, &mut out);
    match &r1 {
        Err(
            Error::MalformedHeader(_)
            | Error::InvalidLength(_)
            | Error::UnknownKeyId(_)
            | Error::Replayed { .. }
            | Error::Authentication,
        ) => {}
        Err(e) => panic!("decrypt: unexpected error {e:?}"),
        Ok(pt) => {
            let l = layout(suite, data).expect("layout of a decrypted frame");
            assert_eq!(pt.len(), l.ciphertext_len);
            assert_eq!(
                reencrypt(suite, data, metadata, pt),
                data,
                "accepted a frame the encryptor would not produce"
            );
        }
    }
    let ct_len = layout(suite, data).map(|l| l.ciphertext_len);
    match (&r1, &r2) {
        (Ok(pt), Ok(n)) => {
            assert_eq!(*n, pt.len());
            assert_eq!(&out[..*n], &pt[..]);
            assert!(
                out[*n..].iter().all(|&x| x == SENTINEL),
                "wrote past the plaintext"
            );
        }
        (_, Err(e2)) => {
            // No plaintext left behind: every byte is untouched or wiped.
            assert!(
                out.iter().all(|&x| x == SENTINEL || x == 0),
                "plaintext left in out on {e2:?}"
            );
            match (&r1, e2) {
                (Err(e1), e2) if e1 == e2 => {}
                // The buffer check comes after the KID and replay checks, before the tag.
                (Ok(_) | Err(Error::Authentication), Error::InvalidLength(_))
                    if ct_len.as_ref().is_ok_and(|&c| out_len < c) => {}
                (r1, e2) => panic!("decrypt {r1:?} but decrypt_into {e2:?}"),
            }
        }
        (Err(e1), Ok(_)) => panic!("decrypt {e1:?} but decrypt_into succeeded"),
    }
    r1
}

fn suite_of(b: u8) -> CipherSuite {
    CipherSuite::ALL[usize::from(b) % CipherSuite::ALL.len()]
}

fn raw(suite: CipherSuite, u: &mut Unstructured) -> Result<()> {
    let window = u.int_in_range(0..=128)?;
    let out_len = usize::from(u.arbitrary::<u16>()?) % 2048;
    let metadata = bytes(u, 128)?;
    let data = u.bytes(u.len())?;
    let (mut a, mut b) = (decryptor(suite, window), decryptor(suite, window));
    if decrypt_both(suite, &mut a, &mut b, data, metadata, out_len).is_ok() {
        // Only a genuine frame (here, a chance match of a short tag) can get here.
        let again = a.decrypt(data, metadata);
        if window == 0 {
            assert!(again.is_ok());
        } else {
            assert!(matches!(again, Err(Error::Replayed { .. })));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Change {
    None,
    FlipFrame(usize, u8),
    FlipMetadata(usize, u8),
    CutFrame(usize),
    ExtendFrame(u8),
    CutMetadata(usize),
    ExtendMetadata(u8),
}

fn apply(c: Change, frame: &[u8], md: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut f, mut m) = (frame.to_vec(), md.to_vec());
    match c {
        Change::None => {}
        Change::FlipFrame(i, x) => f[i] ^= x,
        Change::FlipMetadata(i, x) => m[i] ^= x,
        Change::CutFrame(n) => f.truncate(n),
        Change::ExtendFrame(b) => f.push(b),
        Change::CutMetadata(n) => m.truncate(n),
        Change::ExtendMetadata(b) => m.push(b),
    }
    (f, m)
}

fn tamper(suite: CipherSuite, u: &mut Unstructured) -> Result<()> {
    let window = u.int_in_range(0..=128)?;
    let out_len = usize::from(u.arbitrary::<u16>()?) % 2048;
    let (kid, enc_key) = match u.int_in_range(0..=9u8)? {
        i @ 0..=4 => (
            KIDS[usize::from(i)],
            key_of(KIDS[usize::from(i)]).unwrap_or(KEY),
        ),
        5 => (7, KEY), // registered KID, wrong key
        6..=8 => (UNKNOWN_KIDS[usize::from(u.int_in_range(0..=2u8)?)], KEY),
        _ => (spread_u64(u)?, KEY),
    };
    let ctr = spread_u64(u)?;
    let kind: u8 = u.int_in_range(0..=7)?;
    let pos: u16 = u.arbitrary()?;
    let x: u8 = u.int_in_range(1..=255)?;
    // Metadata up to 200 bytes crosses the 64-byte inline AAD buffer of the GCM path.
    let metadata = bytes(u, 200)?;
    let pt = u.bytes(u.len())?;

    let mut enc = Encryptor::new(suite, enc_key, kid, ctr).expect("encryptor");
    assert_eq!(enc.counter(), Some(ctr));
    let frame = enc.encrypt(pt, metadata).expect("encrypt");
    assert_eq!(
        frame.len(),
        Header::new(kid, ctr).len() + pt.len() + suite.nt()
    );
    assert_eq!(enc.counter(), ctr.checked_add(1));
    if ctr == u64::MAX {
        assert_eq!(enc.encrypt(pt, metadata), Err(Error::CounterExhausted));
    }
    let l = layout(suite, &frame).expect("layout of a fresh frame");
    assert_eq!(
        (l.header, l.ciphertext_len),
        (Header::new(kid, ctr), pt.len())
    );

    let p = usize::from(pos);
    let change = match kind {
        1 | 2 => Change::FlipFrame(p % frame.len(), x),
        3 if !metadata.is_empty() => Change::FlipMetadata(p % metadata.len(), x),
        4 => Change::CutFrame(p % frame.len()),
        5 => Change::ExtendFrame(x),
        6 if !metadata.is_empty() => Change::CutMetadata(p % metadata.len()),
        7 => Change::ExtendMetadata(x),
        _ => Change::None,
    };
    let genuine = key_of(kid) == Some(enc_key);
    let (mut a, mut b) = (decryptor(suite, window), decryptor(suite, window));

    if !matches!(change, Change::None) {
        let (f2, m2) = apply(change, &frame, metadata);
        let r = decrypt_both(suite, &mut a, &mut b, &f2, &m2, out_len);
        if r.is_ok() {
            // decrypt_both already checked that the encryptor would send exactly this, so
            // with a 32-bit tag it can be a 2^-32 chance match.  A second, different
            // change at the same place must then fail; with longer tags, never accept.
            let second = match change {
                Change::FlipFrame(i, x) if suite.nt() <= 4 => Some(Change::FlipFrame(i, x ^ 0x5a)),
                Change::FlipMetadata(i, x) if suite.nt() <= 4 => {
                    Some(Change::FlipMetadata(i, x ^ 0x5a))
                }
                Change::ExtendFrame(v) if suite.nt() <= 4 => Some(Change::ExtendFrame(v ^ 0x5a)),
                Change::ExtendMetadata(v) if suite.nt() <= 4 => {
                    Some(Change::ExtendMetadata(v ^ 0x5a))
                }
                _ => None,
            };
            let Some(second) = second
                .filter(|c| !matches!(c, Change::FlipFrame(_, 0) | Change::FlipMetadata(_, 0)))
            else {
                panic!("tampered frame accepted: {change:?}");
            };
            let (f3, m3) = apply(second, &frame, metadata);
            let mut c = decryptor(suite, window);
            assert!(
                c.decrypt(&f3, &m3).is_err(),
                "tampered frame accepted twice: {change:?}, {second:?}"
            );
            return Ok(());
        }
    }
    // The failure above left both replay windows alone: the genuine frame still passes.
    let r = decrypt_both(suite, &mut a, &mut b, &frame, metadata, out_len);
    match (&r, genuine) {
        (Ok(got), true) => assert_eq!(got, pt),
        (Err(Error::UnknownKeyId(k)), false) if key_of(kid).is_none() => assert_eq!(*k, kid),
        (Err(Error::Authentication), false) if key_of(kid).is_some() => {}
        (r, g) => panic!("genuine={g} kid={kid:#x} ctr={ctr}: {r:?}"),
    }
    if genuine {
        let again = a.decrypt(&frame, metadata);
        if window == 0 {
            assert_eq!(again.as_deref(), Ok(pt));
        } else {
            assert_eq!(again, Err(Error::Replayed { kid, ctr }));
        }
    }
    Ok(())
}

/// The replay window as a set: accepted CTRs and the highest.
struct Model {
    width: u64,
    top: Option<u64>,
    seen: HashSet<u64>,
}

impl Model {
    fn allows(&self, ctr: u64) -> bool {
        match self.top {
            _ if self.width == 0 => true,
            None => true,
            Some(top) if ctr > top => true,
            Some(top) => top - ctr < self.width && !self.seen.contains(&ctr),
        }
    }
    fn accept(&mut self, ctr: u64) {
        self.seen.insert(ctr);
        self.top = Some(self.top.map_or(ctr, |t| t.max(ctr)));
    }
}

fn replay(suite: CipherSuite, u: &mut Unstructured) -> Result<()> {
    let window = u.int_in_range(0..=128)?;
    let kid = KIDS[usize::from(u.int_in_range(0..=4u8)?)];
    let key = key_of(kid).unwrap_or(KEY);
    let base = spread_u64(u)?;
    let mut dec = decryptor(suite, window);
    let mut model = Model {
        width: u64::from(window),
        top: None,
        seen: HashSet::new(),
    };
    let mut last = base;
    for step in 0..64u8 {
        if u.is_empty() {
            break;
        }
        let op: u8 = u.arbitrary()?;
        let ctr = match op % 8 {
            0 | 1 => base.wrapping_add(u64::from(u.arbitrary::<u8>()?)),
            2 | 3 => model
                .top
                .unwrap_or(base)
                .wrapping_sub(u64::from(u.arbitrary::<u8>()?)),
            4 => last,
            5 => model.top.unwrap_or(base).wrapping_add(spread_u64(u)?),
            6 => u64::MAX - u64::from(u.arbitrary::<u8>()?),
            _ => spread_u64(u)?,
        };
        last = ctr;
        let metadata = [step, op];
        let mut enc = Encryptor::new(suite, key, kid, ctr).expect("encryptor");
        let frame = enc.encrypt(&[step; 3], &metadata).expect("encrypt");
        if op & 0x80 != 0 {
            // A forgery at this CTR must fail without moving the window.
            let mut bad = frame.clone();
            let last_byte = bad.len() - 1;
            bad[last_byte] ^= 1;
            assert!(dec.decrypt(&bad, &metadata).is_err(), "forged tag accepted");
        }
        let expect = model.allows(ctr);
        match dec.decrypt(&frame, &metadata) {
            Ok(pt) => {
                assert!(
                    expect,
                    "window={window} accepted ctr={ctr} (top={:?})",
                    model.top
                );
                assert_eq!(pt, [step; 3]);
                model.accept(ctr);
            }
            Err(Error::Replayed { kid: k, ctr: c }) => {
                assert!(
                    !expect,
                    "window={window} refused ctr={ctr} (top={:?})",
                    model.top
                );
                assert_eq!((k, c), (kid, ctr));
            }
            Err(e) => panic!("genuine frame refused: {e:?}"),
        }
    }
    Ok(())
}

fn aead(suite: CipherSuite, u: &mut Unstructured) -> Result<()> {
    let key_len = if u.ratio(1u8, 8)? {
        u.int_in_range(0..=100)?
    } else {
        suite.nk()
    };
    let key = u.bytes(key_len.min(u.len()))?;
    let nonce: [u8; 12] = u.arbitrary()?;
    let flip: u16 = u.arbitrary()?;
    let aad = bytes(u, 100)?;
    let pt = u.bytes(u.len())?;
    let sealed = aead_encrypt(suite, key, &nonce, aad, pt);
    if key.len() != suite.nk() {
        assert!(matches!(sealed, Err(Error::InvalidLength(_))));
        assert!(aead_decrypt(suite, key, &nonce, aad, pt).is_err());
        return Ok(());
    }
    let ct = sealed.expect("aead_encrypt");
    assert_eq!(ct.len(), pt.len() + suite.nt());
    assert_eq!(
        aead_decrypt(suite, key, &nonce, aad, &ct).as_deref(),
        Ok(pt)
    );
    let mut bad = ct.clone();
    let i = usize::from(flip) % bad.len();
    bad[i] ^= 0x80;
    if aead_decrypt(suite, key, &nonce, aad, &bad).is_ok() {
        bad[i] ^= 0x80 ^ 0x01;
        assert!(
            aead_decrypt(suite, key, &nonce, aad, &bad).is_err() || suite.nt() > 4,
            "tampered AEAD ciphertext accepted twice"
        );
        assert!(suite.nt() <= 4, "tampered AEAD ciphertext accepted");
    }
    assert!(aead_decrypt(suite, key, &nonce, aad, &ct[..ct.len() - 1]).is_err() || suite.nt() <= 4);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let [s, mode, rest @ ..] = data else {
        return;
    };
    let suite = suite_of(*s);
    let mut u = Unstructured::new(rest);
    let _ = match mode % 4 {
        0 => raw(suite, &mut u),
        1 => tamper(suite, &mut u),
        2 => replay(suite, &mut u),
        _ => aead(suite, &mut u),
    };
});
