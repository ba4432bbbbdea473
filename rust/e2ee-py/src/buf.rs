//! Zero-copy access to any object with the buffer protocol (bytes, bytearray,
//! memoryview, numpy arrays, mmap, ...), in the manner of pyca/cryptography's `buf.rs`.
//! A `str` has no buffer, so it is refused with Python's own `TypeError`.

use std::mem::MaybeUninit;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;

/// A held buffer view; released when dropped.
pub(crate) struct Buf {
    // Boxed: the exporter may keep a pointer to the view until it is released.
    view: Box<ffi::Py_buffer>,
}

// SAFETY: the view is only read through the slices below, which borrow `self`; the
// exporter keeps the memory alive (and, for bytearray, unresizable) until release.
unsafe impl Send for Buf {}

impl Buf {
    fn get(obj: &Bound<'_, PyAny>, flags: std::os::raw::c_int) -> PyResult<Self> {
        let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::zeroed());
        // SAFETY: `view` is writable memory of the right size; on success CPython fills it
        // and we release it exactly once in `Drop`.  PyBUF_SIMPLE / PyBUF_WRITABLE ask
        // for one contiguous run of bytes, so `buf` and `len` describe the whole data.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: PyObject_GetBuffer succeeded, so the view is initialised.
        let view = unsafe { Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()) };
        Ok(Buf { view })
    }

    /// A read-only view of `obj`.
    pub(crate) fn read(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::get(obj, ffi::PyBUF_SIMPLE)
    }

    /// A writable view of `obj` (`TypeError`/`BufferError` for read-only objects).
    pub(crate) fn write(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::get(obj, ffi::PyBUF_WRITABLE)
    }

    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.view.len).unwrap_or(0)
    }

    fn range(&self) -> (usize, usize) {
        let start = self.view.buf as usize;
        (start, start + self.len())
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: a contiguous buffer of `len` bytes at `buf`, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), self.len()) }
    }

    /// The bytes, writable.  Only for views taken with [`Buf::write`].
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len() == 0 || self.view.readonly != 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and the exporter granted write access; `&mut self`
        // makes this the only slice of this view.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf.cast::<u8>(), self.len()) }
    }

    /// Refuses an output buffer that shares memory with an input: the Rust side holds
    /// both a shared and a mutable slice, which must never alias.
    pub(crate) fn check_disjoint(&self, inputs: &[&Buf]) -> PyResult<()> {
        let (a0, a1) = self.range();
        for other in inputs {
            let (b0, b1) = other.range();
            if a0 < b1 && b0 < a1 {
                return Err(PyValueError::new_err(
                    "the output buffer must not overlap an input buffer",
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer and is released once, with
        // the GIL held (attach is a no-op when the thread already holds it).
        Python::attach(|_| unsafe { ffi::PyBuffer_Release(&mut *self.view) });
    }
}

/// A read-only view of an optional argument; `None` is the empty buffer.
pub(crate) fn read_opt(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Buf>> {
    obj.map(Buf::read).transpose()
}

/// The bytes of an optional view.
pub(crate) fn slice_opt(b: &Option<Buf>) -> &[u8] {
    b.as_ref().map_or(&[], Buf::as_slice)
}
