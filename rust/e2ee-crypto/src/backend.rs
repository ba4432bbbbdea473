//! Which implementation serves AES-CTR and HMAC, per frame size: measured once per
//! process, because the fastest differs by CPU (docs/crypto-backend.md).
//!
//! On an AMD EPYC (Zen 3) OpenSSL's SHA-512 (AVX2 with BMI2) is 1.45 times AWS-LC's,
//! which keeps its vector code for Intel CPUs, and RustCrypto's; on an Intel Xeon
//! AWS-LC's is within a few percent of it.  AES-CTR: RustCrypto's VAES code leads where
//! AVX-512 is present, AWS-LC's AES-NI code where it is not.  Rather than a table of
//! CPU models, the first CTR-HMAC key set up times each candidate on each size class
//! (a few milliseconds, once) and every later frame uses the winner of its class.  All
//! candidates are constant-time and compute the same bytes, so the choice changes
//! speed only.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::primitives::{self, CtrKey, HmacKey};
use crate::suite::Hash;

/// A candidate implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Impl {
    RustCrypto,
    AwsLc,
    #[cfg(feature = "openssl-backend")]
    OpenSsl,
}

impl Impl {
    /// Every HMAC candidate, the pure-Rust one first (it wins ties).
    #[cfg(feature = "openssl-backend")]
    pub(crate) const ALL: [Impl; 3] = [Impl::RustCrypto, Impl::AwsLc, Impl::OpenSsl];
    /// Every HMAC candidate, the pure-Rust one first (it wins ties).
    #[cfg(not(feature = "openssl-backend"))]
    pub(crate) const ALL: [Impl; 2] = [Impl::RustCrypto, Impl::AwsLc];
}

/// AES-CTR candidates: OpenSSL's AES-NI code is AWS-LC's, so it is not timed twice.
pub(crate) const CTR_CANDIDATES: [Impl; 2] = [Impl::RustCrypto, Impl::AwsLc];

/// AES-GCM encrypt candidates, AWS-LC first (it wins ties): OpenSSL encrypts from one
/// buffer into another, AWS-LC's safe API only in place, after a copy.  (Decrypt is
/// AWS-LC's, from one buffer into another.)  RustCrypto's GCM is not a candidate: 3.5
/// times slower at 1 MB.
#[cfg(feature = "openssl-backend")]
pub(crate) const GCM_CANDIDATES: [Impl; 2] = [Impl::AwsLc, Impl::OpenSsl];

/// Size classes by input length: `[0, 512)`, `[512, 8192)`, `[8192, ..)` bytes.
/// Below 512 B the per-call cost decides (copying HMAC states, setting up the
/// counter), from 8 KiB the per-byte code alone.
const CLASS_BOUNDS: [usize; 2] = [512, 8192];
/// The length timed for each class: an audio frame, a video packet, a large frame.
const PROBE_LEN: [usize; 3] = [128, 1200, 16 * 1024];
const CLASS_NAMES: [&str; 3] = ["under 512 B", "512 B to 8 KiB", "8 KiB and more"];
/// Another candidate replaces the default (RustCrypto; AWS-LC for GCM) only if at least
/// this much faster, so that timing noise between equals does not flip the choice from
/// run to run.
const MARGIN: f64 = 0.97;

fn class(len: usize) -> usize {
    CLASS_BOUNDS.iter().filter(|&&b| len >= b).count()
}

/// The winners, per size class.
#[derive(Debug)]
pub(crate) struct Choice {
    ctr: [Impl; 3],
    sha256: [Impl; 3],
    sha512: [Impl; 3],
    gcm: [Impl; 3],
    took: Duration,
}

impl Choice {
    #[inline]
    pub(crate) fn ctr(&self, len: usize) -> Impl {
        self.ctr
            .get(class(len))
            .copied()
            .unwrap_or(Impl::RustCrypto)
    }

    #[inline]
    pub(crate) fn mac(&self, hash: Hash, len: usize) -> Impl {
        let table = match hash {
            Hash::Sha256 => &self.sha256,
            Hash::Sha512 => &self.sha512,
        };
        table.get(class(len)).copied().unwrap_or(Impl::RustCrypto)
    }

    /// Who encrypts with AES-GCM a frame of `len` bytes.
    #[inline]
    pub(crate) fn gcm(&self, len: usize) -> Impl {
        self.gcm.get(class(len)).copied().unwrap_or(Impl::AwsLc)
    }

    /// Whether `imp` encrypts with AES-GCM for any size (AWS-LC is always keyed).
    pub(crate) fn uses_gcm(&self, imp: Impl) -> bool {
        self.gcm.contains(&imp)
    }

    /// Whether `imp` serves AES-CTR for any size (only those are keyed).
    pub(crate) fn uses_ctr(&self, imp: Impl) -> bool {
        self.ctr.contains(&imp)
    }

    /// Whether `imp` serves HMAC with `hash` for any size.
    pub(crate) fn uses_mac(&self, hash: Hash, imp: Impl) -> bool {
        match hash {
            Hash::Sha256 => self.sha256.contains(&imp),
            Hash::Sha512 => self.sha512.contains(&imp),
        }
    }
}

static CHOICE: OnceLock<Choice> = OnceLock::new();

/// The choice for this process, measured on first use.
pub(crate) fn choice() -> &'static Choice {
    CHOICE.get_or_init(measure)
}

/// Seconds per call of `f` over `calls` calls.
fn time(calls: usize, f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_secs_f64() / calls.max(1) as f64
}

/// The fastest of `candidates`: each timed in `ROUNDS` interleaved rounds of about 16 KiB
/// of input, its best round kept (the least disturbed by other processes).  The first
/// candidate is the default: another replaces it only if `MARGIN` faster.
fn fastest(candidates: &[Impl], len: usize, run: &mut dyn FnMut(Impl)) -> Impl {
    const ROUNDS: usize = 3;
    let calls = (16 * 1024 / len.max(1)).max(1);
    let mut best = [f64::INFINITY; 3];
    for &imp in candidates {
        run(imp); // warm up: first-touch of tables and code
    }
    for round in 0..ROUNDS {
        for k in 0..candidates.len() {
            let i = (k + round) % candidates.len();
            if let (Some(&imp), Some(slot)) = (candidates.get(i), best.get_mut(i)) {
                *slot = slot.min(time(calls, &mut || run(imp)));
            }
        }
    }
    let first = best.first().copied().unwrap_or(f64::INFINITY);
    let default = candidates.first().copied().unwrap_or(Impl::RustCrypto);
    let mut winner = (default, first * MARGIN);
    for (&imp, &t) in candidates.iter().zip(&best).skip(1) {
        if t < winner.1 {
            winner = (imp, t);
        }
    }
    winner.0
}

fn measure() -> Choice {
    let started = Instant::now();
    let mut choice = Choice {
        ctr: [Impl::RustCrypto; 3],
        sha256: [Impl::RustCrypto; 3],
        sha512: [Impl::RustCrypto; 3],
        gcm: [Impl::AwsLc; 3],
        took: Duration::ZERO,
    };
    // Probe keys are fixed and public: only speed is measured here.
    let ctr = CtrKey::new(&[0x5a; 32], |_| true);
    let sha256 = HmacKey::new(Hash::Sha256, &[0x5a; 32], |_| true);
    let sha512 = HmacKey::new(Hash::Sha512, &[0x5a; 64], |_| true);
    #[cfg(feature = "openssl-backend")]
    let gcm = primitives::GcmKey::new(&[0x5a; 32], |_| true);
    let mut buf = vec![0u8; PROBE_LEN[2]];
    #[cfg(feature = "openssl-backend")]
    let plain = vec![0x3c; PROBE_LEN[2]];
    let nonce = [0xa5; 12];
    for (c, &len) in PROBE_LEN.iter().enumerate() {
        let data = buf.get_mut(..len).unwrap_or_default();
        if let (Some(key), Some(slot)) = (&ctr, choice.ctr.get_mut(c)) {
            *slot = fastest(&CTR_CANDIDATES, len, &mut |imp| {
                key.xor(imp, &nonce, data);
                std::hint::black_box(&data);
            });
        }
        for (key, table) in [(&sha256, &mut choice.sha256), (&sha512, &mut choice.sha512)] {
            if let (Some(key), Some(slot)) = (key, table.get_mut(c)) {
                *slot = fastest(&Impl::ALL, len, &mut |imp| {
                    std::hint::black_box(key.tag(imp, &[&nonce[..], &*data]));
                });
            }
        }
        // Encrypt as `encrypt_into` does: from the caller's plaintext into the output.
        #[cfg(feature = "openssl-backend")]
        if let (Some(key), Some(slot), Some(from)) = (&gcm, choice.gcm.get_mut(c), plain.get(..len))
        {
            *slot = fastest(&GCM_CANDIDATES, len, &mut |imp| {
                std::hint::black_box(key.seal(imp, &nonce, b"hdr", b"", Some(from), data));
            });
        }
    }
    choice.took = started.elapsed();
    choice
}

/// What serves each primitive and size class in this process, as `(what, who)` pairs,
/// then how long the measurement took.  Runs the measurement if no key has yet.
pub fn backend_info() -> Vec<(String, String)> {
    let c = choice();
    let mut info = Vec::new();
    for (name, table) in [
        ("AES-CTR", &c.ctr),
        ("HMAC-SHA256", &c.sha256),
        ("HMAC-SHA512", &c.sha512),
        ("AES-GCM encrypt", &c.gcm),
    ] {
        for (class, imp) in CLASS_NAMES.iter().zip(table) {
            info.push((format!("{name}, {class}"), describe(*imp)));
        }
    }
    info.push(("AES-GCM decrypt".into(), describe(Impl::AwsLc)));
    info.push((
        "chosen by".into(),
        format!(
            "timing each candidate at first use ({:.1} ms)",
            c.took.as_secs_f64() * 1e3
        ),
    ));
    info
}

fn describe(imp: Impl) -> String {
    match imp {
        #[cfg(feature = "openssl-backend")]
        Impl::OpenSsl => format!("OpenSSL ({})", primitives::openssl_version()),
        other => primitives::impl_name(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class(0), 0);
        assert_eq!(class(511), 0);
        assert_eq!(class(512), 1);
        assert_eq!(class(8191), 1);
        assert_eq!(class(8192), 2);
        assert_eq!(class(usize::MAX), 2);
        for (c, &len) in PROBE_LEN.iter().enumerate() {
            assert_eq!(class(len), c);
        }
    }

    #[test]
    fn info_names_every_class() {
        let info = backend_info();
        assert_eq!(info.len(), 4 * 3 + 2);
        assert!(info.iter().all(|(_, who)| !who.is_empty()));
    }
}
