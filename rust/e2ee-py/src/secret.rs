//! The e2ee v1 key schedule: secret validation, `secret_key`, `secret_id`, KIDs.

use e2ee_crypto::Error;
use e2ee_crypto::secret as core;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::buf::Buf;
use crate::error::{CoreError, CoreResult};

/// The type name of `obj`, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}

/// The one door through which a secret enters Rust: a `str` that UTF-8 can encode.
/// Anything else is `InvalidEncryptionSecret` (never a `TypeError` or
/// `UnicodeEncodeError`), and the message names the problem, never the secret.
fn secret_str<'a>(secret: &'a Bound<'_, PyAny>) -> CoreResult<&'a str> {
    let s = secret
        .cast::<PyString>()
        .map_err(|_| Error::InvalidSecret(format!("must be a str, not {}", type_name(secret))))?;
    s.to_str().map_err(|_| {
        CoreError(Error::InvalidSecret(
            "contains a lone surrogate, which is not valid Unicode text".to_string(),
        ))
    })
}

/// A session id as UTF-8 text: `ValueError` (not `UnicodeEncodeError`) when it is not.
fn session_str<'a>(session_id: &'a Bound<'_, PyAny>) -> CoreResult<&'a str> {
    let s = session_id.cast::<PyString>().map_err(|_| {
        Error::InvalidArgument(format!(
            "session id must be a str, not {}",
            type_name(session_id)
        ))
    })?;
    s.to_str().map_err(|_| {
        CoreError(Error::InvalidArgument(
            "session id contains a lone surrogate, which is not valid Unicode text".to_string(),
        ))
    })
}

/// The NFC form of `secret`, after checking it is 8 to 256 code points long.
#[pyfunction]
pub(crate) fn normalize_secret(secret: &Bound<'_, PyAny>) -> CoreResult<String> {
    Ok(core::normalize_secret(secret_str(secret)?)?.to_string())
}

/// PBKDF2-HMAC-SHA256 of the NFC secret, salted with the session id; 32 bytes.
/// Runs without the GIL: it is slow on purpose.
#[pyfunction]
#[pyo3(signature = (secret, session_id, *, iterations))]
pub(crate) fn derive_secret_key<'py>(
    py: Python<'py>,
    secret: &Bound<'py, PyAny>,
    session_id: &Bound<'py, PyAny>,
    iterations: u32,
) -> PyResult<Bound<'py, PyBytes>> {
    let secret = secret_str(secret)?;
    let session_id = session_str(session_id)?;
    let key = py
        .detach(|| core::derive_secret_key(secret, session_id, iterations))
        .map_err(CoreError)?;
    Ok(PyBytes::new(py, key.as_bytes()))
}

/// The 16-bit name of a secret key (HKDF-SHA256, info "e2ee v1 secret id").
#[pyfunction]
pub(crate) fn secret_id(secret_key: &Bound<'_, PyAny>) -> PyResult<u16> {
    let key = Buf::read(secret_key)?;
    if key.len() != 32 {
        return Err(CoreError(e2ee_crypto::Error::InvalidLength(format!(
            "a secret key is 32 bytes, not {}",
            key.len()
        )))
        .into());
    }
    Ok(core::secret_id(key.as_slice()))
}

/// A fresh random KID for `secret_id`: `secret_id << 48 | 48 random bits`.
#[pyfunction]
pub(crate) fn new_kid(secret_id: u16) -> CoreResult<u64> {
    Ok(core::new_kid(secret_id)?)
}

/// The `secret_id` carried in the top 16 bits of a KID.
#[pyfunction]
pub(crate) fn kid_secret_id(kid: u64) -> u16 {
    core::kid_secret_id(kid)
}
