//! Zero-copy, read-only access to any object with the buffer protocol (bytes, bytearray,
//! memoryview, ...), as in `rust/e2ee-py/src/buf.rs` (the pyca/cryptography pattern).
//! A `str` has no buffer, so it is refused with Python's own `TypeError`.

use std::mem::MaybeUninit;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A held read-only buffer view; released when dropped.
pub(crate) struct Buf {
    // Boxed: the exporter may keep a pointer to the view until it is released.
    view: Box<ffi::Py_buffer>,
}

impl Buf {
    pub(crate) fn read(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::zeroed());
        // SAFETY: `view` is writable memory of the right size; on success CPython fills it
        // and we release it exactly once in `Drop`.  PyBUF_SIMPLE asks for one contiguous
        // run of bytes, so `buf` and `len` describe the whole data.
        let rc =
            unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: PyObject_GetBuffer succeeded, so the view is initialised.
        let view = unsafe { Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()) };
        Ok(Buf { view })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if len == 0 {
            return &[];
        }
        // SAFETY: a contiguous buffer of `len` bytes at `buf`, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer and is released once, with
        // the GIL held (attach is a no-op when the thread already holds it).
        Python::attach(|_| unsafe { ffi::PyBuffer_Release(&mut *self.view) });
    }
}

/// The bytes of `obj`: borrowed directly from a `bytes` (the router's case, no buffer
/// request at all), else through the buffer protocol; `f` sees them.
pub(crate) fn with_bytes<T>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> PyResult<T>,
) -> PyResult<T> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return f(b.as_bytes());
    }
    let buf = Buf::read(obj)?;
    f(buf.as_slice())
}
