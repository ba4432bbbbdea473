//! `e2ee._srtp`: the thin PyO3 binding of `e2ee-srtp`, the media router's SRTP sender.
//! Its own extension module, so that the router process never loads `e2ee._core` (the
//! E2EE crypto); Python code reaches it only through `e2ee.rtc.srtp`.  Every error of
//! the crate becomes `ValueError`, here and only here.  `SrtpSender.send_frame` also
//! writes a frame's packets in one `sendmmsg(2)` (`mmsg.rs`): the only I/O, kept out of
//! the pure crate.

mod buf;
mod fanout;
mod mmsg;
mod recv;

use e2ee_srtp::{FrameHeader, Profile};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyTuple};

use crate::buf::with_bytes;

fn value_error(e: e2ee_srtp::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// An `OSError` with its errno (so Python picks the subclass, e.g. `ConnectionRefusedError`).
fn os_error(e: std::io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(n) => PyOSError::new_err((n, e.to_string())),
        None => PyOSError::new_err(e.to_string()),
    }
}

/// An int argument in `0..=max`: out of range (negative, too large) is `ValueError`,
/// not an int at all stays `TypeError`.
fn uint(obj: &Bound<'_, PyAny>, name: &str, max: u64) -> PyResult<u64> {
    match obj.extract::<u64>() {
        Ok(v) if v <= max => Ok(v),
        Err(e) if !obj.is_instance_of::<PyInt>() => Err(e),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be an int from 0 to {max}"
        ))),
    }
}

/// The sending half of one SRTP session (see `python/e2ee/_srtp.pyi`).
#[pyclass(module = "e2ee._srtp", name = "SrtpSender")]
struct SrtpSender {
    inner: e2ee_srtp::SrtpSender,
}

#[pymethods]
impl SrtpSender {
    #[new]
    fn new(
        profile: &str,
        master_key: &Bound<'_, PyAny>,
        master_salt: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let profile = Profile::from_name(profile).map_err(value_error)?;
        let inner = with_bytes(master_key, |key| {
            with_bytes(master_salt, |salt| {
                e2ee_srtp::SrtpSender::new(profile, key, salt).map_err(value_error)
            })
        })?;
        Ok(SrtpSender { inner })
    }

    #[getter]
    fn profile(&self) -> &'static str {
        self.inner.profile().name()
    }

    #[getter]
    fn tag_len(&self) -> usize {
        self.inner.profile().tag_len()
    }

    fn protect<'py>(
        &mut self,
        py: Python<'py>,
        packet: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        with_bytes(packet, |packet| {
            let len = self.inner.protected_len(packet.len());
            PyBytes::new_with(py, len, |out| {
                out.get_mut(..packet.len())
                    .ok_or_else(|| PyValueError::new_err("packet too large"))?
                    .copy_from_slice(packet);
                self.inner.protect_in_place(out).map_err(value_error)
            })
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn protect_frame<'py>(
        &mut self,
        py: Python<'py>,
        b0: &Bound<'py, PyAny>,
        payload_type: &Bound<'py, PyAny>,
        first_seq: &Bound<'py, PyAny>,
        timestamp: &Bound<'py, PyAny>,
        ssrc: &Bound<'py, PyAny>,
        extension: &Bound<'py, PyAny>,
        payloads: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let packets = self.build_frame(
            py,
            b0,
            payload_type,
            first_seq,
            timestamp,
            ssrc,
            extension,
            payloads,
        )?;
        PyList::new(py, packets)
    }

    /// `protect_frame`, then one `sendmmsg(2)` of the packets on the non-blocking UDP
    /// socket `fd` to `address`: the packets and how many the kernel took.
    #[allow(clippy::too_many_arguments)]
    fn send_frame<'py>(
        &mut self,
        py: Python<'py>,
        fd: &Bound<'py, PyAny>,
        address: &Bound<'py, PyAny>,
        b0: &Bound<'py, PyAny>,
        payload_type: &Bound<'py, PyAny>,
        first_seq: &Bound<'py, PyAny>,
        timestamp: &Bound<'py, PyAny>,
        ssrc: &Bound<'py, PyAny>,
        extension: &Bound<'py, PyAny>,
        payloads: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, usize)> {
        let fd = i32::try_from(uint(fd, "fd", i32::MAX as u64)?).unwrap_or(-1);
        let to = mmsg::socket_addr(address)?;
        let packets = self.build_frame(
            py,
            b0,
            payload_type,
            first_seq,
            timestamp,
            ssrc,
            extension,
            payloads,
        )?;
        let sent = {
            let slices: Vec<&[u8]> = packets.iter().map(|p| p.as_bytes()).collect();
            // The bytes are immutable and held by `packets`: the GIL is not needed for
            // the syscall (a few microseconds for a frame), so other threads may run.
            py.detach(|| mmsg::send_all(fd, to, &slices))
                .map_err(os_error)?
        };
        Ok((PyList::new(py, packets)?, sent))
    }

    fn __repr__(&self) -> String {
        format!("SrtpSender({:?})", self.inner.profile().name())
    }
}

impl SrtpSender {
    /// The packets of one frame, built and protected (see `protect_frame` in the stub).
    #[allow(clippy::too_many_arguments)]
    fn build_frame<'py>(
        &mut self,
        py: Python<'py>,
        b0: &Bound<'py, PyAny>,
        payload_type: &Bound<'py, PyAny>,
        first_seq: &Bound<'py, PyAny>,
        timestamp: &Bound<'py, PyAny>,
        ssrc: &Bound<'py, PyAny>,
        extension: &Bound<'py, PyAny>,
        payloads: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let b0 = u8::try_from(uint(b0, "b0", 0xff)?).unwrap_or(0);
        let pt = u8::try_from(uint(payload_type, "payload_type", 0x7f)?).unwrap_or(0);
        let first = uint(first_seq, "first_seq", 0xffff)?;
        let ts = u32::try_from(uint(timestamp, "timestamp", 0xffff_ffff)?).unwrap_or(0);
        let ssrc = u32::try_from(uint(ssrc, "ssrc", 0xffff_ffff)?).unwrap_or(0);
        let payloads: Vec<Bound<'py, PyAny>> = payloads.try_iter()?.collect::<PyResult<_>>()?;
        let mut out = Vec::with_capacity(payloads.len());
        with_bytes(extension, |extension| {
            let header = FrameHeader::new(b0, pt, ts, ssrc, extension).map_err(value_error)?;
            let last = payloads.len().saturating_sub(1);
            for (i, payload) in payloads.iter().enumerate() {
                // RFC 3550 §5.1: consecutive sequence numbers, modulo 2^16.
                let seq = u16::try_from((first + i as u64) & 0xffff).unwrap_or(0);
                let packet = with_bytes(payload, |payload| {
                    let len = self.inner.protected_len(header.len() + payload.len());
                    PyBytes::new_with(py, len, |buf| {
                        self.inner
                            .protect_packet(&header, seq, i == last, payload, buf)
                            .map_err(value_error)
                    })
                })?;
                out.push(packet);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

#[pymodule]
fn _srtp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let names: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
    m.add("PROFILES", PyTuple::new(m.py(), names)?)?;
    m.add("MAX_PACKET_LEN", e2ee_srtp::MAX_PACKET_LEN)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<SrtpSender>()?;
    m.add_class::<fanout::Fanout>()?;
    m.add_class::<recv::RtpReader>()?;
    Ok(())
}
