//! Every official vector (RFC 9605 Appendix C; draft-barnes-sframe-iana-256), read from
//! the JSON files the Python tests read too: `tests/vectors/` at the repository root.

// Test code: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use e2ee_crypto::sframe::{aead_decrypt, aead_encrypt};
use e2ee_crypto::{CipherSuite, Decryptor, Encryptor, Error, Header, derive_key_salt};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn hex(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().expect("hex string")).expect("valid hex")
}

fn u64_of(v: &Value, field: &str) -> u64 {
    // serde_json keeps integers up to u64::MAX exact (never through f64).
    v[field].as_u64().expect("u64")
}

fn suite_of(v: &Value) -> CipherSuite {
    CipherSuite::try_from(u64_of(v, "cipher_suite") as u16).expect("known suite")
}

/// All full-SFrame cases: suites 1 to 5, then 6 to 8.
fn sframe_cases() -> Vec<Value> {
    let mut cases = load("rfc9605.json")["sframe"]
        .as_array()
        .expect("array")
        .clone();
    cases.extend(
        load("draft-barnes-sframe-iana-256.json")["sframe_aes_256_ctr_hmac"]
            .as_array()
            .expect("array")
            .iter()
            .cloned(),
    );
    cases
}

#[test]
fn headers() {
    let cases = load("rfc9605.json");
    let cases = cases["header"].as_array().expect("array");
    assert_eq!(cases.len(), 289);
    for c in cases {
        let (kid, ctr, encoded) = (u64_of(c, "kid"), u64_of(c, "ctr"), hex(c, "encoded"));
        let (buf, n) = Header::new(kid, ctr).encode();
        assert_eq!(&buf[..n], &encoded[..], "encode kid={kid} ctr={ctr}");
        assert_eq!(
            Header::decode(&encoded),
            Ok((Header::new(kid, ctr), encoded.len()))
        );
    }
}

#[test]
fn key_schedule_and_full_frames() {
    let cases = sframe_cases();
    assert_eq!(cases.len(), 8);
    for c in &cases {
        let suite = suite_of(c);
        let (kid, ctr) = (u64_of(c, "kid"), u64_of(c, "ctr"));
        let (base_key, metadata, pt, ct) = (
            hex(c, "base_key"),
            hex(c, "metadata"),
            hex(c, "pt"),
            hex(c, "ct"),
        );

        let (key, salt) = derive_key_salt(suite, &base_key, kid).unwrap();
        assert_eq!(
            &key[..],
            &hex(c, "sframe_key")[..],
            "sframe_key, suite {}",
            suite.id()
        );
        assert_eq!(
            &salt[..],
            &hex(c, "sframe_salt")[..],
            "sframe_salt, suite {}",
            suite.id()
        );

        let mut enc = Encryptor::new(suite, &base_key, kid, ctr).expect("encryptor");
        assert_eq!(
            enc.encrypt(&pt, &metadata).expect("encrypt"),
            ct,
            "suite {}",
            suite.id()
        );
        assert_eq!(enc.counter(), Some(ctr + 1));

        let mut dec = Decryptor::new(suite, 128).expect("decryptor");
        dec.add_key(kid, &base_key).expect("add_key");
        assert_eq!(
            dec.decrypt(&ct, &metadata).expect("decrypt"),
            pt,
            "suite {}",
            suite.id()
        );
        assert_eq!(
            dec.decrypt(&ct, &metadata),
            Err(Error::Replayed { kid, ctr })
        );
    }
}

#[test]
fn every_flipped_bit_is_refused() {
    for c in &sframe_cases() {
        let suite = suite_of(c);
        let (kid, base_key, metadata, ct) = (
            u64_of(c, "kid"),
            hex(c, "base_key"),
            hex(c, "metadata"),
            hex(c, "ct"),
        );
        let mut dec = Decryptor::new(suite, 0).expect("decryptor");
        dec.add_key(kid, &base_key).expect("add_key");
        for bit in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                dec.decrypt(&bad, &metadata).is_err(),
                "suite {} bit {bit}",
                suite.id()
            );
        }
        for bit in 0..metadata.len() * 8 {
            let mut bad = metadata.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(dec.decrypt(&ct, &bad), Err(Error::Authentication));
        }
        for cut in 0..ct.len() {
            assert!(dec.decrypt(&ct[..cut], &metadata).is_err());
        }
    }
}

#[test]
fn self_test_passes_and_its_answers_match_the_vector_files() {
    // self_test() runs the vectors compiled into the crate (src/kat.rs); the full-frame
    // test above runs the files: both passing means the two copies agree.
    assert_eq!(e2ee_crypto::self_test(), Ok(8));
}

fn aead_case(c: &Value) {
    let suite = suite_of(c);
    let (key, aad, pt, ct) = (hex(c, "key"), hex(c, "aad"), hex(c, "pt"), hex(c, "ct"));
    let nonce: [u8; 12] = hex(c, "nonce").try_into().expect("12-byte nonce");
    assert_eq!(
        aead_encrypt(suite, &key, &nonce, &aad, &pt),
        Ok(ct.clone()),
        "suite {}",
        suite.id()
    );
    assert_eq!(aead_decrypt(suite, &key, &nonce, &aad, &ct), Ok(pt));
    let mut bad = ct.clone();
    *bad.last_mut().expect("non-empty") ^= 1;
    assert_eq!(
        aead_decrypt(suite, &key, &nonce, &aad, &bad),
        Err(Error::Authentication)
    );
}

#[test]
fn raw_aead_cases() {
    let mut n = 0;
    for c in load("rfc9605.json")["aes_ctr_hmac"]
        .as_array()
        .expect("array")
    {
        aead_case(c);
        n += 1;
    }
    for c in load("draft-barnes-sframe-iana-256.json")["aes_256_ctr_hmac"]
        .as_array()
        .expect("array")
    {
        aead_case(c);
        n += 1;
    }
    assert_eq!(n, 6);
}
