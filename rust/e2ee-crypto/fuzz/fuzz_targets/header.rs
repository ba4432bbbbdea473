//! `Header::decode` on arbitrary bytes, and `decode(encode(kid, ctr))` for input-chosen
//! values.  Decoding is strict (minimal encodings only), so whenever it succeeds,
//! re-encoding must give back exactly the bytes it consumed.
#![no_main]

use e2ee_crypto::header::{MAX_HEADER_LEN, encoded_len};
use e2ee_crypto::sframe::layout;
use e2ee_crypto::{CipherSuite, Error, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes.
    match Header::decode(data) {
        Ok((h, n)) => {
            assert!((1..=MAX_HEADER_LEN).contains(&n) && n <= data.len());
            assert_eq!(n, h.len());
            assert_eq!(n, encoded_len(h.kid, h.ctr));
            let (buf, m) = h.encode();
            assert_eq!(
                &buf[..m],
                &data[..n],
                "decode accepted a non-canonical header"
            );
            for suite in CipherSuite::ALL {
                match layout(suite, data) {
                    Ok(l) => {
                        assert_eq!((l.header, l.header_len), (h, n));
                        assert_eq!(n + l.ciphertext_len + suite.nt(), data.len());
                    }
                    Err(Error::InvalidLength(_)) => assert!(data.len() - n < suite.nt()),
                    Err(e) => panic!("layout: unexpected {e:?}"),
                }
            }
        }
        Err(Error::MalformedHeader(_)) => {
            for suite in CipherSuite::ALL {
                assert!(matches!(
                    layout(suite, data),
                    Err(Error::MalformedHeader(_))
                ));
            }
        }
        Err(e) => panic!("decode: unexpected {e:?}"),
    }

    // 2. Round trip for (kid, ctr) taken from the input.  The shifts spread the values
    //    over every encoded length (0 to 8 extra bytes each) instead of mostly 8.
    let mut w = [0u8; 18];
    for (d, s) in w.iter_mut().zip(data) {
        *d = *s;
    }
    let kid = u64::from_le_bytes(w[0..8].try_into().unwrap_or_default()) >> (w[16] % 65).min(63);
    let ctr = u64::from_le_bytes(w[8..16].try_into().unwrap_or_default()) >> (w[17] % 65).min(63);
    let kid = if w[16] % 65 == 64 { 0 } else { kid };
    let ctr = if w[17] % 65 == 64 { 0 } else { ctr };
    let h = Header::new(kid, ctr);
    let (buf, n) = h.encode();
    assert_eq!(n, h.len());
    assert_eq!(Header::decode(&buf[..n]), Ok((h, n)));
    // Trailing bytes are not part of the header.
    let mut long = buf[..n].to_vec();
    long.extend_from_slice(data);
    assert_eq!(Header::decode(&long), Ok((h, n)));
    // Every proper prefix is truncated.
    for cut in 0..n {
        assert!(matches!(
            Header::decode(&buf[..cut]),
            Err(Error::MalformedHeader(_))
        ));
    }
    // encode_into refuses a short buffer and writes exactly n bytes otherwise.
    let mut out = [0xa5u8; MAX_HEADER_LEN + 1];
    assert!(h.encode_into(&mut out[..n - 1]).is_err());
    assert_eq!(h.encode_into(&mut out), Ok(n));
    assert_eq!(&out[..n], &buf[..n]);
    assert!(out[n..].iter().all(|&b| b == 0xa5));
});
