//! Zero-copy access to any object with the buffer protocol (bytes, bytearray,
//! memoryview, numpy arrays, mmap, ...), in the manner of pyca/cryptography's `buf.rs`.
//! A `str` has no buffer, so it is refused with Python's own `TypeError`.

use std::mem::MaybeUninit;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

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

/// A new `bytes` of `len` bytes, built without PyO3's zero-fill: each `(offset, data)`
/// part is copied to its place, only the gaps are zeroed, and then `fill` finishes the
/// object in place.  For large frames this saves a full pass over the output.  If
/// `fill` fails the object is dropped unseen.
pub(crate) fn new_bytes_placed<'py>(
    py: Python<'py>,
    len: usize,
    parts: &[(usize, &[u8])],
    fill: impl FnOnce(&mut [u8]) -> PyResult<()>,
) -> PyResult<Bound<'py, PyBytes>> {
    let size =
        ffi::Py_ssize_t::try_from(len).map_err(|_| PyValueError::new_err("output too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `size`
    // bytes; we own the only reference.
    let obj = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
    // SAFETY: a new reference or NULL with an exception set, as from_owned_ptr expects.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, obj)? };
    // SAFETY: the object is a bytes object we just created.
    let bytes = unsafe { obj.cast_into_unchecked::<PyBytes>() };
    // SAFETY: PyBytes_AsString of a bytes object is its buffer of `len` bytes (+ NUL).
    let base = unsafe { ffi::PyBytes_AsString(bytes.as_ptr()) }.cast::<u8>();
    let mut at = 0usize;
    for &(offset, data) in parts {
        let end = offset
            .checked_add(data.len())
            .filter(|&e| offset >= at && e <= len);
        let Some(end) = end else {
            return Err(PyValueError::new_err(
                "internal error: misplaced output part",
            ));
        };
        // SAFETY: `at <= offset <= end <= len`: both writes stay inside the buffer, and
        // `data` (a caller's input) cannot overlap an object nobody else has seen.
        unsafe {
            std::ptr::write_bytes(base.add(at), 0, offset - at);
            std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(offset), data.len());
        }
        at = end;
    }
    // SAFETY: `at <= len`; after this every byte of the buffer is initialised.
    unsafe { std::ptr::write_bytes(base.add(at), 0, len - at) };
    // SAFETY: initialised, `len` bytes, and this is the only reference to it.
    let out = unsafe { std::slice::from_raw_parts_mut(base, len) };
    fill(out)?;
    Ok(bytes)
}
