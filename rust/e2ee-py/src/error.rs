//! The one place where the core's errors become Python exceptions (the classes live in
//! `python/e2ee/errors.py`, so Python code can define, document and subclass them).

use e2ee_crypto::Error;
use pyo3::PyErr;
use pyo3::exceptions::{PyOSError, PyValueError};

pyo3::import_exception!(e2ee.errors, AuthenticationFailed);
pyo3::import_exception!(e2ee.errors, CounterExhausted);
pyo3::import_exception!(e2ee.errors, EncryptionSecretMismatch);
pyo3::import_exception!(e2ee.errors, EncryptionSecretMissing);
pyo3::import_exception!(e2ee.errors, FrameTooShort);
pyo3::import_exception!(e2ee.errors, InvalidEncryptionSecret);
pyo3::import_exception!(e2ee.errors, InvalidLength);
pyo3::import_exception!(e2ee.errors, MalformedHeader);
pyo3::import_exception!(e2ee.errors, ReplayedFrame);
pyo3::import_exception!(e2ee.errors, UnknownKeyId);
pyo3::import_exception!(e2ee.errors, UnsupportedCipherSuite);
pyo3::import_exception!(e2ee.errors, UnsupportedCodec);

/// A core error on its way to Python.
pub(crate) struct CoreError(pub(crate) Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::MalformedHeader(_) => MalformedHeader::new_err(msg),
            Error::UnknownKeyId(kid) => UnknownKeyId::new_err((msg, kid)),
            // Opaque by design: the same message whatever failed.
            Error::Authentication => AuthenticationFailed::new_err(msg),
            Error::Replayed { kid, ctr } => ReplayedFrame::new_err((msg, kid, ctr)),
            Error::InvalidLength(_) => InvalidLength::new_err(msg),
            Error::UnsupportedSuite(_) => UnsupportedCipherSuite::new_err(msg),
            Error::CounterExhausted => CounterExhausted::new_err(msg),
            Error::InvalidSecret(_) => InvalidEncryptionSecret::new_err(msg),
            Error::InvalidArgument(_) => PyValueError::new_err(msg),
            Error::Rng => PyOSError::new_err(msg),
            Error::SecretMissing => EncryptionSecretMissing::new_err(msg),
            Error::SecretMismatch { kid } => EncryptionSecretMismatch::new_err((msg, kid)),
            Error::FrameTooShort { codec, len, needed } => {
                FrameTooShort::new_err((msg, codec, len, needed))
            }
            Error::UnsupportedCodec(_) => UnsupportedCodec::new_err(msg),
        }
    }
}

pub(crate) type CoreResult<T> = Result<T, CoreError>;
