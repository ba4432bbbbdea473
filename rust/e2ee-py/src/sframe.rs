//! `Encryptor`, `Decryptor` and the header and key-schedule functions.

use e2ee_crypto::sframe::{self as core, layout};
use e2ee_crypto::{CipherSuite, Error, Header};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buf::{Buf, new_bytes_placed, read_opt, slice_opt};
use crate::error::{CoreError, CoreResult};
use crate::shared::Shared;

/// Below this many bytes the work is shorter than releasing and retaking the GIL.
const DETACH_THRESHOLD: usize = 4096;

/// Runs `f` without the GIL when the input is large, so other threads run meanwhile.
pub(crate) fn run<T: Send>(py: Python<'_>, len: usize, f: impl FnOnce() -> T + Send) -> T {
    if len >= DETACH_THRESHOLD {
        py.detach(f)
    } else {
        f()
    }
}

pub(crate) fn suite_of(suite: i64) -> CoreResult<CipherSuite> {
    let id = u16::try_from(suite).map_err(|_| Error::UnsupportedSuite(suite))?;
    Ok(CipherSuite::try_from(id)?)
}

/// The SFrame header for (kid, ctr), RFC 9605 §4.3.
#[pyfunction]
pub(crate) fn encode_header<'py>(py: Python<'py>, kid: u64, ctr: u64) -> Bound<'py, PyBytes> {
    let (buf, n) = Header::new(kid, ctr).encode();
    PyBytes::new(py, buf.get(..n).unwrap_or_default())
}

/// Parses the header at the start of `data`: `(kid, ctr, header_length)`.
#[pyfunction]
pub(crate) fn decode_header(data: &Bound<'_, PyAny>) -> PyResult<(u64, u64, usize)> {
    let data = Buf::read(data)?;
    let (h, n) = Header::decode(data.as_slice()).map_err(CoreError)?;
    Ok((h.kid, h.ctr, n))
}

/// `(sframe_key, sframe_salt)` for a KID, RFC 9605 §4.4.2.
#[pyfunction]
pub(crate) fn derive_key_salt<'py>(
    py: Python<'py>,
    suite: i64,
    base_key: &Bound<'py, PyAny>,
    kid: u64,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let suite = suite_of(suite)?;
    let base_key = Buf::read(base_key)?;
    let (key, salt) = core::derive_key_salt(suite, base_key.as_slice(), kid).map_err(CoreError)?;
    Ok((PyBytes::new(py, &key), PyBytes::new(py, &salt)))
}

/// The suite's bare AEAD (RFC 9605 §4.5): `ct || tag`.  For interoperability checks.
#[pyfunction]
pub(crate) fn aead_encrypt<'py>(
    py: Python<'py>,
    suite: i64,
    key: &Bound<'py, PyAny>,
    nonce: [u8; 12],
    aad: &Bound<'py, PyAny>,
    plaintext: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let suite = suite_of(suite)?;
    let (key, aad, pt) = (Buf::read(key)?, Buf::read(aad)?, Buf::read(plaintext)?);
    let out = core::aead_encrypt(suite, key.as_slice(), &nonce, aad.as_slice(), pt.as_slice())
        .map_err(CoreError)?;
    Ok(PyBytes::new(py, &out))
}

/// The inverse of `aead_encrypt`.
#[pyfunction]
pub(crate) fn aead_decrypt<'py>(
    py: Python<'py>,
    suite: i64,
    key: &Bound<'py, PyAny>,
    nonce: [u8; 12],
    aad: &Bound<'py, PyAny>,
    ciphertext: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let suite = suite_of(suite)?;
    let (key, aad, ct) = (Buf::read(key)?, Buf::read(aad)?, Buf::read(ciphertext)?);
    let out = core::aead_decrypt(suite, key.as_slice(), &nonce, aad.as_slice(), ct.as_slice())
        .map_err(CoreError)?;
    Ok(PyBytes::new(py, &out))
}

/// `(Nk, Nn, Nt, Nh, name)` of a suite.
#[pyfunction]
pub(crate) fn suite_params(suite: i64) -> CoreResult<(usize, usize, usize, usize, &'static str)> {
    let s = suite_of(suite)?;
    Ok((s.nk(), s.nn(), s.nt(), s.nh(), s.name()))
}

/// Encrypts frames for one KID (RFC 9605 §4.4.3).  Safe to share between threads:
/// each frame takes the next CTR.
#[pyclass(module = "e2ee._core", frozen)]
pub(crate) struct Encryptor {
    inner: Shared<core::Encryptor>,
    suite: u16,
    kid: u64,
}

#[pymethods]
impl Encryptor {
    #[new]
    #[pyo3(signature = (suite, base_key, kid, counter = 0))]
    fn new(suite: i64, base_key: &Bound<'_, PyAny>, kid: u64, counter: u64) -> PyResult<Self> {
        let base_key = Buf::read(base_key)?;
        let inner = core::Encryptor::new(suite_of(suite)?, base_key.as_slice(), kid, counter)
            .map_err(CoreError)?;
        let (suite, kid) = (inner.suite().id(), inner.kid());
        Ok(Encryptor {
            inner: Shared::new(inner),
            suite,
            kid,
        })
    }

    #[getter]
    fn suite(&self) -> u16 {
        self.suite
    }

    #[getter]
    fn kid(&self) -> u64 {
        self.kid
    }

    /// The CTR of the next frame; 2**64 once every value is used.
    #[getter]
    fn counter(&self, py: Python<'_>) -> u128 {
        self.inner
            .lock(py)
            .counter()
            .map_or(1u128 << 64, u128::from)
    }

    /// Bytes `encrypt` returns for a plaintext of `n` bytes; `InvalidLength` for a
    /// plaintext longer than an SFrame can carry.
    fn output_length(&self, py: Python<'_>, n: usize) -> CoreResult<usize> {
        Ok(self.inner.lock(py).output_len(n)?)
    }

    /// Writes `header || ciphertext || tag` into the writable buffer `out`; returns the
    /// number of bytes written.
    #[pyo3(signature = (plaintext, out, metadata = None))]
    fn encrypt_into(
        &self,
        py: Python<'_>,
        plaintext: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let pt = Buf::read(plaintext)?;
        let md = read_opt(metadata)?;
        let mut out = Buf::write(out)?;
        let inputs: Vec<&Buf> = std::iter::once(&pt).chain(md.as_ref()).collect();
        out.check_disjoint(&inputs)?;
        let (pt, md, out) = (pt.as_slice(), slice_opt(&md), out.as_mut_slice());
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        Ok(run(py, pt.len(), || inner.encrypt_into(pt, md, out)).map_err(CoreError)?)
    }

    /// `header || ciphertext || tag`, as new bytes.
    #[pyo3(signature = (plaintext, metadata = None))]
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        plaintext: &Bound<'py, PyAny>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let pt = Buf::read(plaintext)?;
        let md = read_opt(metadata)?;
        let (pt, md) = (pt.as_slice(), slice_opt(&md));
        // Held from sizing to sealing: the header length depends on the CTR.
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        let n = inner.output_len(pt.len()).map_err(CoreError)?;
        let hlen = inner.header_len();
        // The plaintext is copied once, into its place in the new bytes object, and
        // encrypted there.
        new_bytes_placed(py, n, &[(hlen, pt)], |out| {
            run(py, pt.len(), || inner.encrypt_in_place(out, pt.len(), md))
                .map(drop)
                .map_err(|e| CoreError(e).into())
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Encryptor(suite={}, kid={:#x}, counter={})",
            self.suite,
            self.kid,
            self.counter(py)
        )
    }
}

/// Decrypts frames of the registered KIDs, with a replay window per KID.  Safe to
/// share between threads: a (KID, CTR) is accepted at most once whichever thread
/// decrypts it.
#[pyclass(module = "e2ee._core", frozen)]
pub(crate) struct Decryptor {
    inner: Shared<core::Decryptor>,
    suite: CipherSuite,
    replay_window: u32,
}

#[pymethods]
impl Decryptor {
    #[new]
    #[pyo3(signature = (suite, *, replay_window = 128))]
    fn new(suite: i64, replay_window: u32) -> CoreResult<Self> {
        let suite = suite_of(suite)?;
        Ok(Decryptor {
            inner: Shared::new(core::Decryptor::new(suite, replay_window)?),
            suite,
            replay_window,
        })
    }

    #[getter]
    fn suite(&self) -> u16 {
        self.suite.id()
    }

    #[getter]
    fn replay_window(&self) -> u32 {
        self.replay_window
    }

    /// Registers `base_key` for `kid` (a KID keeps its replay window across re-adds).
    fn add_key(&self, py: Python<'_>, kid: u64, base_key: &Bound<'_, PyAny>) -> PyResult<()> {
        let base_key = Buf::read(base_key)?;
        Ok(self
            .inner
            .lock(py)
            .add_key(kid, base_key.as_slice())
            .map_err(CoreError)?)
    }

    /// Forgets `kid`; `UnknownKeyId` if it was not registered.
    fn remove_key(&self, py: Python<'_>, kid: u64) -> CoreResult<()> {
        if self.inner.lock(py).remove_key(kid) {
            Ok(())
        } else {
            Err(Error::UnknownKeyId(kid).into())
        }
    }

    fn has_key(&self, py: Python<'_>, kid: u64) -> bool {
        self.inner.lock(py).has_key(kid)
    }

    fn __contains__(&self, py: Python<'_>, kid: u64) -> bool {
        self.inner.lock(py).has_key(kid)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.inner.lock(py).len()
    }

    /// The registered KIDs, sorted.
    fn kids(&self, py: Python<'_>) -> Vec<u64> {
        let mut kids: Vec<u64> = self.inner.lock(py).kids().collect();
        kids.sort_unstable();
        kids
    }

    /// Authenticates and decrypts into the writable buffer `out`; returns the plaintext
    /// length.  On failure `out` holds no plaintext.
    #[pyo3(signature = (data, out, metadata = None))]
    fn decrypt_into(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let data = Buf::read(data)?;
        let md = read_opt(metadata)?;
        let mut out = Buf::write(out)?;
        let inputs: Vec<&Buf> = std::iter::once(&data).chain(md.as_ref()).collect();
        out.check_disjoint(&inputs)?;
        let (data, md, out) = (data.as_slice(), slice_opt(&md), out.as_mut_slice());
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        Ok(run(py, data.len(), || inner.decrypt_into(data, md, out)).map_err(CoreError)?)
    }

    /// The plaintext of `data`, as new bytes.
    #[pyo3(signature = (data, metadata = None))]
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = Buf::read(data)?;
        let md = read_opt(metadata)?;
        let (data, md) = (data.as_slice(), slice_opt(&md));
        let n = layout(self.suite, data).map_err(CoreError)?.ciphertext_len;
        let mut guard = self.inner.lock(py);
        let inner = &mut *guard;
        PyBytes::new_with(py, n, |out| {
            run(py, data.len(), || inner.decrypt_into(data, md, out))
                .map(drop)
                .map_err(|e| CoreError(e).into())
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Decryptor(suite={}, kids={})",
            self.suite.id(),
            self.__len__(py)
        )
    }
}
