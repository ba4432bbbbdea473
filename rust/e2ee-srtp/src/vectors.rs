//! Every vector in `tests/vectors/srtp.json` (RFC 3711 B.2 and B.3, RFC 6188 §7.2,
//! RFC 7714 §16, libsrtp's full packets), run against the crate's own pieces.

use std::path::PathBuf;

use serde_json::Value;

use crate::transform::{CmSha1, Gcm};
use crate::{Profile, SrtpSender, kdf, rtp};

fn load() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/srtp.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

fn hex(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let v = &load()["rfc3711_b2_aes_cm"];
    // The CM transform with that session key; salt and auth key play no part here.
    let key = hex(v, "session_key");
    let cm = CmSha1::new(&key, &[0; 14], &[0; 20]).expect("keyed");
    let iv: [u8; 16] = hex(v, "iv").try_into().expect("16 bytes");
    let mut stream = vec![0u8; v["segment_len"].as_u64().expect("len") as usize];
    cm.apply_keystream(&iv, &mut stream);
    let blocks = v["keystream"].as_array().expect("array");
    assert_eq!(blocks.len(), 6);
    for b in blocks {
        let n = b["block"].as_u64().expect("block") as usize;
        assert_eq!(
            stream[16 * n..16 * n + 16],
            hex(b, "value")[..],
            "block {n}"
        );
    }
}

#[test]
fn key_derivation() {
    let cases = load();
    let cases = cases["key_derivation"].as_array().expect("array");
    assert_eq!(cases.len(), 2);
    for c in cases {
        let (key, salt) = (hex(c, "master_key"), hex(c, "master_salt"));
        for (label, field) in [(0, "cipher_key"), (1, "auth_key"), (2, "cipher_salt")] {
            let want = hex(c, field);
            let mut got = vec![0u8; want.len()];
            kdf::derive(&key, &salt, label, &mut got).expect("derives");
            assert_eq!(got, want, "{} {field}", c["source"]);
        }
    }
}

#[test]
fn the_kdf_refuses_odd_lengths() {
    let mut out = [0u8; 16];
    assert!(kdf::derive(&[0; 24], &[0; 14], 0, &mut out).is_err());
    assert!(kdf::derive(&[0; 16], &[0; 15], 0, &mut out).is_err());
}

#[test]
fn rfc7714_gcm_packets() {
    let cases = load();
    let cases = cases["rfc7714_gcm"].as_array().expect("array");
    assert_eq!(cases.len(), 2);
    for c in cases {
        let profile = Profile::from_name(c["profile"].as_str().expect("name")).expect("known");
        let (key, salt) = (hex(c, "session_key"), hex(c, "session_salt"));
        let salt: [u8; 12] = salt.try_into().expect("12 bytes");
        let plain = hex(c, "plaintext");
        let h = rtp::parse(&plain).expect("RTP");
        let index = (c["roc"].as_u64().expect("roc") << 16) | u64::from(h.seq);
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.tag_len(), 0);
        let (packet, tag) = buf.split_at_mut(plain.len());
        assert_eq!(key.len(), profile.master_key_len());
        let g = Gcm::new(&key, &salt).expect("keyed");
        assert_eq!(g.iv(h.ssrc, index)[..], hex(c, "iv")[..]);
        g.protect(packet, h.len, h.ssrc, index, tag)
            .expect("protects");
        assert_eq!(buf, hex(c, "protected"), "{}", c["source"]);
    }
}

#[test]
fn full_packets_as_libsrtp_protects_them() {
    let cases = load();
    let cases = cases["full_packet"].as_array().expect("array");
    assert_eq!(cases.len(), 3);
    for c in cases {
        let profile = Profile::from_name(c["profile"].as_str().expect("name")).expect("known");
        let mut s =
            SrtpSender::new(profile, &hex(c, "master_key"), &hex(c, "master_salt")).expect("keyed");
        let want = hex(c, "protected");
        assert_eq!(
            s.protect(&hex(c, "plaintext")).expect("protects"),
            want,
            "{}",
            c["source"]
        );
        // Same packet again: refused, the index would repeat.
        assert!(s.protect(&hex(c, "plaintext")).is_err());
        // Built from its fields instead of parsed, the same bytes.
        let plain = hex(c, "plaintext");
        let mut s =
            SrtpSender::new(profile, &hex(c, "master_key"), &hex(c, "master_salt")).expect("keyed");
        let header =
            rtp::FrameHeader::new(plain[0], plain[1] & 0x7f, 0xdeca_fbad, 0xcafe_babe, &[])
                .expect("valid");
        let mut out = vec![0u8; want.len()];
        s.protect_packet(
            &header,
            0x1234,
            plain[1] & 0x80 != 0,
            &plain[12..],
            &mut out,
        )
        .expect("protects");
        assert_eq!(out, want);
    }
}
