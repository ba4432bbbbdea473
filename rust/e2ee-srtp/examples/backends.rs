//! Which library to take each SRTP primitive from, measured on this CPU: one packet's
//! protect done by RustCrypto and by AWS-LC (aws-lc-rs), and by this crate as built.
//!
//!     cargo run --release -p e2ee-srtp --example backends
//!
//! The two library columns are the packet's own work only (header copy, then AES-CM +
//! HMAC-SHA1-80, or a GCM seal); the crate column adds its index bookkeeping.  On the
//! AMD EPYC of issue 13 (VAES, VPCLMULQDQ, SHA-NI, no AVX-512), shared with other jobs,
//! fastest of 21 x 50,000, three runs:
//!
//!     profile                  bytes   RustCrypto    aws-lc-rs    e2ee-srtp
//!     SRTP_AEAD_AES_256_GCM      100   226-255 ns   222-234 ns   267-329 ns
//!     SRTP_AEAD_AES_256_GCM     1100   683-716 ns   518-591 ns   538-555 ns
//!     SRTP_AEAD_AES_128_GCM     1100   603-631 ns   474-501 ns   510-669 ns
//!     SRTP_AES128_CM_SHA1_80     100   273-328 ns   434-554 ns   289-334 ns
//!     SRTP_AES128_CM_SHA1_80    1100  1051-1204 ns 1186-1592 ns 1083-1278 ns
//!
//! Hence GCM from AWS-LC, AES-CM and HMAC-SHA1 from RustCrypto.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::time::Instant;

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use aes_gcm::aead::AeadInOut;
use aws_lc_rs::{aead, cipher, hmac as lc_hmac};
use e2ee_srtp::{FrameHeader, Profile, SrtpSender};
use hmac::{Hmac, Mac};
use sha1::Sha1;

const ROUNDS: u32 = 50_000;
const RUNS: usize = 21;

/// The fastest of `RUNS` runs of `ROUNDS` calls, in ns per call (the machine is shared:
/// the minimum is the least disturbed).
fn time(mut f: impl FnMut(u32)) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..ROUNDS {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[0]
}

fn main() {
    let ext = [0xbe, 0xde, 0, 2, 0x10, b'0', 0x32, 1, 2, 3, 0, 0];
    println!(
        "{:<24} {:>6} {:>12} {:>12} {:>12}",
        "profile", "bytes", "RustCrypto", "aws-lc-rs", "e2ee-srtp"
    );
    for profile in Profile::ALL {
        for payload_len in [100usize, 1100] {
            let payload = vec![0x5a; payload_len];
            let key = vec![7u8; profile.master_key_len()];
            let salt = vec![9u8; profile.master_salt_len()];
            let header = FrameHeader::new(0x90, 96, 1234, 0x1122_3344, &ext).unwrap();
            let hlen = header.len();
            let mut ours = SrtpSender::new(profile, &key, &salt).unwrap();
            let mut out = vec![0u8; ours.protected_len(hlen + payload_len)];
            let crate_ns = time(|i| {
                if ours
                    .protect_packet(&header, i as u16, false, &payload, &mut out)
                    .is_err()
                {
                    // a new run starts again at sequence number 0: a fresh sender
                    ours = SrtpSender::new(profile, &key, &salt).unwrap();
                }
                black_box(&out);
            });
            let hdr = out[..hlen].to_vec();
            let fill = |out: &mut [u8]| {
                out[..hlen].copy_from_slice(&hdr);
                out[hlen..hlen + payload_len].copy_from_slice(&payload);
            };
            let (rc, lc) = if profile == Profile::Aes128CmSha1_80 {
                let aes = Aes128::new_from_slice(&key).unwrap();
                let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&[3; 20]).unwrap();
                let rc = time(|i| {
                    fill(&mut out);
                    let mut iv = [1u8; 16];
                    iv[12..14].copy_from_slice(&(i as u16).to_be_bytes());
                    iv[14..].fill(0);
                    let (body, tag) = out.split_at_mut(hlen + payload_len);
                    StreamCipherCoreWrapper::from_core(ctr::CtrCore::<
                        &Aes128,
                        ctr::flavors::Ctr32BE,
                    >::inner_iv_init(
                        &aes, &iv.into()
                    ))
                    .apply_keystream(&mut body[hlen..]);
                    let mut m = mac.clone();
                    m.update(body);
                    m.update(&[0, 0, 0, 0]);
                    tag.copy_from_slice(&m.finalize().into_bytes()[..10]);
                    black_box(&out);
                });
                let ctr = cipher::EncryptingKey::ctr(
                    cipher::UnboundCipherKey::new(&cipher::AES_128, &key).unwrap(),
                )
                .unwrap();
                let lmac = lc_hmac::Key::new(lc_hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[3; 20]);
                let lc = time(|i| {
                    fill(&mut out);
                    let mut iv = [1u8; 16];
                    iv[12..14].copy_from_slice(&(i as u16).to_be_bytes());
                    iv[14..].fill(0);
                    let (body, tag) = out.split_at_mut(hlen + payload_len);
                    ctr.less_safe_encrypt(
                        &mut body[hlen..],
                        cipher::EncryptionContext::Iv128(iv.into()),
                    )
                    .unwrap();
                    let mut m = lc_hmac::Context::with_key(&lmac);
                    m.update(body);
                    m.update(&[0, 0, 0, 0]);
                    tag.copy_from_slice(&m.sign().as_ref()[..10]);
                    black_box(&out);
                });
                (rc, lc)
            } else {
                let (rc, alg) = if profile == Profile::AeadAes128Gcm {
                    let k = aes_gcm::Aes128Gcm::new_from_slice(&key).unwrap();
                    let rc = time(|i| {
                        fill(&mut out);
                        let mut iv = [1u8; 12];
                        iv[10..].copy_from_slice(&(i as u16).to_be_bytes());
                        let (body, tag) = out.split_at_mut(hlen + payload_len);
                        let (h, p) = body.split_at_mut(hlen);
                        let t = k.encrypt_inout_detached(&iv.into(), h, p.into()).unwrap();
                        tag.copy_from_slice(&t);
                        black_box(&out);
                    });
                    (rc, &aead::AES_128_GCM)
                } else {
                    let k = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
                    let rc = time(|i| {
                        fill(&mut out);
                        let mut iv = [1u8; 12];
                        iv[10..].copy_from_slice(&(i as u16).to_be_bytes());
                        let (body, tag) = out.split_at_mut(hlen + payload_len);
                        let (h, p) = body.split_at_mut(hlen);
                        let t = k.encrypt_inout_detached(&iv.into(), h, p.into()).unwrap();
                        tag.copy_from_slice(&t);
                        black_box(&out);
                    });
                    (rc, &aead::AES_256_GCM)
                };
                let k = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &key).unwrap());
                let lc = time(|i| {
                    fill(&mut out);
                    let mut iv = [1u8; 12];
                    iv[10..].copy_from_slice(&(i as u16).to_be_bytes());
                    let (body, tag) = out.split_at_mut(hlen + payload_len);
                    let (h, p) = body.split_at_mut(hlen);
                    let t = k
                        .seal_in_place_separate_tag(
                            aead::Nonce::assume_unique_for_key(iv),
                            aead::Aad::from(&*h),
                            p,
                        )
                        .unwrap();
                    tag.copy_from_slice(t.as_ref());
                    black_box(&out);
                });
                (rc, lc)
            };
            println!(
                "{:<24} {:>6} {:>9.0} ns {:>9.0} ns {:>9.0} ns",
                profile.name(),
                payload_len,
                rc,
                lc,
                crate_ns
            );
        }
    }
}
