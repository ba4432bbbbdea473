//! `normalize_secret` on arbitrary UTF-8: never panics; on success the result has 8 to
//! 256 code points, is NFC (normalizing it again changes nothing) and gives the same key.
#![no_main]

use e2ee_crypto::secret::{MAX_SECRET_CHARS, MIN_SECRET_CHARS};
use e2ee_crypto::{Error, derive_secret_key, normalize_secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match normalize_secret(s) {
        Ok(nfc) => {
            let n = nfc.chars().count();
            assert!(
                (MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&n),
                "{n} chars"
            );
            let again = normalize_secret(&nfc);
            assert_eq!(
                again.as_ref().map(|a| a.as_str()),
                Ok(nfc.as_str()),
                "NFC not idempotent"
            );
            // One PBKDF2 iteration keeps this cheap; equivalent inputs, one key.
            let k1 = derive_secret_key(s, "fuzz", 1);
            let k2 = derive_secret_key(&nfc, "fuzz", 1);
            assert!(k1.is_ok());
            assert_eq!(k1, k2);
        }
        Err(Error::InvalidSecret(_)) => {
            assert!(derive_secret_key(s, "fuzz", 1).is_err());
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
});
