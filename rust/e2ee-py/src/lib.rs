//! `e2ee._core`: the thin PyO3 binding of `e2ee-crypto`.  Python code imports it only
//! through the typed facade in `python/e2ee/`.

mod buf;
mod error;
mod media;
mod secret;
mod sframe;
mod shared;

use pyo3::prelude::*;

use crate::error::CoreResult;

/// Runs the known-answer tests of every suite; returns how many passed.
#[pyfunction]
fn self_test() -> CoreResult<usize> {
    Ok(e2ee_crypto::self_test()?)
}

/// The CPU features the backend can use, and whether this CPU has them.
#[pyfunction]
fn cpu_features() -> Vec<(&'static str, bool)> {
    e2ee_crypto::cpu_features()
}

/// Which implementation serves each primitive and frame size in this process, as
/// `(what, who)` pairs; measured once, at the first CTR-HMAC key (or here).
#[pyfunction]
fn backend_info() -> Vec<(String, String)> {
    e2ee_crypto::backend_info()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BACKEND", e2ee_crypto::BACKEND)?;
    m.add("MIN_SECRET_CHARS", e2ee_crypto::secret::MIN_SECRET_CHARS)?;
    m.add("MAX_SECRET_CHARS", e2ee_crypto::secret::MAX_SECRET_CHARS)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<sframe::Encryptor>()?;
    m.add_class::<sframe::Decryptor>()?;
    m.add_class::<media::FrameSender>()?;
    m.add_class::<media::FrameReceiver>()?;
    m.add_function(wrap_pyfunction!(sframe::encode_header, m)?)?;
    m.add_function(wrap_pyfunction!(sframe::decode_header, m)?)?;
    m.add_function(wrap_pyfunction!(sframe::derive_key_salt, m)?)?;
    m.add_function(wrap_pyfunction!(sframe::aead_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(sframe::aead_decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(sframe::suite_params, m)?)?;
    m.add_function(wrap_pyfunction!(secret::normalize_secret, m)?)?;
    m.add_function(wrap_pyfunction!(secret::derive_secret_key, m)?)?;
    m.add_function(wrap_pyfunction!(secret::secret_id, m)?)?;
    m.add_function(wrap_pyfunction!(secret::new_kid, m)?)?;
    m.add_function(wrap_pyfunction!(secret::kid_secret_id, m)?)?;
    m.add_function(wrap_pyfunction!(self_test, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_features, m)?)?;
    m.add_function(wrap_pyfunction!(backend_info, m)?)?;
    Ok(())
}
