//! `FrameSender` and `FrameReceiver`: one call into Rust per media frame.

use std::time::Duration;

use e2ee_crypto::media as core;
use e2ee_crypto::{Codec, Error, SecretKey};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buf::{Buf, new_bytes_placed};
use crate::error::{CoreError, CoreResult};
use crate::sframe::{run, suite_of};
use crate::shared::Shared;

fn secret_key(buf: &Bound<'_, PyAny>) -> PyResult<SecretKey> {
    let b = Buf::read(buf)?;
    let bytes: [u8; 32] = b.as_slice().try_into().map_err(|_| {
        CoreError(Error::InvalidLength(format!(
            "a secret key is 32 bytes, not {}",
            b.len()
        )))
    })?;
    Ok(SecretKey::from_bytes(bytes))
}

/// Encrypts one outgoing track's frames, codec header in clear but authenticated.
/// Safe to share between threads.
#[pyclass(module = "e2ee._core", frozen)]
pub(crate) struct FrameSender {
    inner: Shared<core::FrameSender>,
    codec: &'static str,
}

#[pymethods]
impl FrameSender {
    #[new]
    fn new(suite: i64, codec: &str) -> CoreResult<Self> {
        let codec = Codec::parse(codec)?;
        Ok(FrameSender {
            inner: Shared::new(core::FrameSender::new(suite_of(suite)?, codec)),
            codec: codec.name(),
        })
    }

    #[getter]
    fn codec(&self) -> &'static str {
        self.codec
    }

    #[getter]
    fn kid(&self, py: Python<'_>) -> Option<u64> {
        self.inner.lock(py).kid()
    }

    /// Encrypt from now on under `secret_key` (32 bytes) with the fresh KID `kid`.
    fn set_key(&self, py: Python<'_>, secret_key: &Bound<'_, PyAny>, kid: u64) -> PyResult<()> {
        let key = self::secret_key(secret_key)?;
        Ok(self.inner.lock(py).set_key(&key, kid).map_err(CoreError)?)
    }

    /// Refuse every frame from now on (`EncryptionSecretMissing`).
    fn clear_key(&self, py: Python<'_>) {
        self.inner.lock(py).clear_key();
    }

    /// `clear || header || ciphertext || tag` for one codec frame.
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let frame = Buf::read(frame)?;
        let frame = frame.as_slice();
        // Held from sizing to sealing: the header length depends on the KID and CTR.
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        let (n, hlen) = inner.layout(frame).map_err(CoreError)?;
        let total = inner.output_len(frame.len()).map_err(CoreError)?;
        let (clear, payload) = frame.split_at_checked(n).ok_or_else(|| {
            CoreError(Error::InvalidLength(
                "frame shorter than its clear bytes".to_string(),
            ))
        })?;
        let payload_at = n
            .checked_add(hlen)
            .ok_or_else(|| CoreError(Error::InvalidLength("frame too long".to_string())))?;
        // The clear bytes and the payload are copied once, to their places in the new
        // bytes object, and sealed there.
        new_bytes_placed(py, total, &[(0, clear), (payload_at, payload)], |out| {
            run(py, frame.len(), || {
                inner.encrypt_in_place(out, n, payload.len())
            })
            .map(drop)
            .map_err(|e| CoreError(e).into())
        })
    }

    /// Writes the wire frame into the writable buffer `out`; returns its length.
    fn encrypt_into(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let frame = Buf::read(frame)?;
        let mut out = Buf::write(out)?;
        out.check_disjoint(&[&frame])?;
        let (frame, out) = (frame.as_slice(), out.as_mut_slice());
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        Ok(run(py, frame.len(), || inner.encrypt_into(frame, out)).map_err(CoreError)?)
    }
}

/// Decrypts one incoming track: held secrets, lazily derived KID keys, replay windows.
/// Safe to share between threads.
#[pyclass(module = "e2ee._core", frozen)]
pub(crate) struct FrameReceiver {
    inner: Shared<core::FrameReceiver>,
    codec: &'static str,
}

#[pymethods]
impl FrameReceiver {
    #[new]
    #[pyo3(signature = (suite, codec, *, replay_window = 128))]
    fn new(suite: i64, codec: &str, replay_window: u32) -> CoreResult<Self> {
        let codec = Codec::parse(codec)?;
        let inner = core::FrameReceiver::new(suite_of(suite)?, codec, replay_window)?;
        Ok(FrameReceiver {
            inner: Shared::new(inner),
            codec: codec.name(),
        })
    }

    #[getter]
    fn codec(&self) -> &'static str {
        self.codec
    }

    /// The KID of the last frame that authenticated (`None` before the first); failed
    /// frames leave it unchanged.
    #[getter]
    fn last_kid(&self, py: Python<'_>) -> Option<u64> {
        self.inner.lock(py).last_kid()
    }

    /// The CTR of the last frame that authenticated, with `last_kid`.
    #[getter]
    fn last_ctr(&self, py: Python<'_>) -> Option<u64> {
        self.inner.lock(py).last_ctr()
    }

    /// Replaces the held secrets: `(secret_key, seconds_left)` pairs, `None` for a
    /// secret held until replaced.
    fn set_secrets(
        &self,
        py: Python<'_>,
        secrets: Vec<(Bound<'_, PyAny>, Option<f64>)>,
    ) -> PyResult<()> {
        let mut held = Vec::with_capacity(secrets.len());
        for (key, ttl) in &secrets {
            let ttl = ttl.map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX));
            held.push((secret_key(key)?, ttl));
        }
        self.inner.lock(py).set_secrets(held);
        Ok(())
    }

    /// The codec frame inside `wire`.
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        wire: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let wire = Buf::read(wire)?;
        let wire = wire.as_slice();
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        // A frame too malformed to size fails (and is counted) in decrypt_into below.
        let n = inner.plaintext_len(wire).unwrap_or(0);
        PyBytes::new_with(py, n, |out| {
            run(py, wire.len(), || inner.decrypt_into(wire, out))
                .map(drop)
                .map_err(|e| CoreError(e).into())
        })
    }

    /// Writes the codec frame into the writable buffer `out`; returns its length.
    fn decrypt_into(
        &self,
        py: Python<'_>,
        wire: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let wire = Buf::read(wire)?;
        let mut out = Buf::write(out)?;
        out.check_disjoint(&[&wire])?;
        let (wire, out) = (wire.as_slice(), out.as_mut_slice());
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        Ok(run(py, wire.len(), || inner.decrypt_into(wire, out)).map_err(CoreError)?)
    }

    /// `(ok, mismatched, failed, replayed, missing)` frame counts.
    fn stats(&self, py: Python<'_>) -> (u64, u64, u64, u64, u64) {
        let s = self.inner.lock(py).stats();
        (s.ok, s.mismatched, s.failed, s.replayed, s.missing)
    }

    /// KIDs with cached keys, oldest first.
    fn kids(&self, py: Python<'_>) -> Vec<u64> {
        self.inner.lock(py).kids().collect()
    }
}
