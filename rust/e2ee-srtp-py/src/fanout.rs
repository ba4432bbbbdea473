//! `Fanout`: one frame to every subscriber of a published track in one call.  Per
//! subscriber (a "leg") it holds what `RelayTrack` held in Python for the per-packet work:
//! the RTP header fields (RFC 3550 §5.1: SSRC, payload type, next sequence number,
//! timestamp offset; the one-byte header extension block of RFC 8285 §4.2 with the
//! place of abs-send-time), the transport's `SrtpSender` (shared with the transport's
//! other tracks), a descriptor of its own for its socket (so a number its owner closed
//! and the system reused is never written to) and the remote address, and a ring of the
//! last protected packets for NACKs (RFC 4585 §6.2.1).
//!
//! `send` builds and protects every leg's packets into its ring, then, with the GIL
//! released, writes each leg's packets in one `sendmmsg(2)`: the sockets differ per
//! subscriber (one ICE pair each), so one syscall per subscriber is the floor without
//! io_uring.  Runs of equal-size packets go as one UDP GSO message (`UDP_SEGMENT`,
//! `e2ee_srtp::gso`) where the kernel has it: the stack is walked once per run instead of
//! once per packet.  A GSO message the kernel refuses (`EIO`: no checksum offload on
//! the route; `EMSGSIZE`, `EINVAL`: a segment over the path MTU, which plain datagrams
//! may still cross, fragmented) is sent again without GSO and the leg
//! stops using it; nothing was sent of a refused message, and the bytes sent again are
//! the same protected packets, never protected twice.
//!
//! What a leg's socket does not take now (a full buffer) comes back as bytes, in order,
//! for asyncio to buffer; the caller decides, per leg, whether writing directly is
//! allowed at all (asyncio must hold nothing for that socket, or it would be overtaken).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use e2ee_srtp::FrameHeader;
use e2ee_srtp::gso;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::buf::Buf;
use crate::mmsg::{self, RawAddr, dup_datagram_socket, gso_refused, gso_supported, send_runs};
use crate::{SrtpSender, uint};

/// The largest NACK history per leg, in packets.
const MAX_HISTORY: usize = 4096;

/// One protected packet kept for NACKs: its sequence number while it holds one.
struct Slot {
    seq: Option<u16>,
    packet: Vec<u8>,
}

/// One subscriber of the track.
struct Leg {
    sender: Py<SrtpSender>,
    /// The leg's own descriptor of the subscriber's socket (see `dup_datagram_socket`).
    fd: OwnedFd,
    to: SocketAddr,
    b0: u8,
    payload_type: u8,
    ssrc: u32,
    ts_offset: u32,
    seq: u16,
    extension: Vec<u8>,
    /// Where the 24-bit abs-send-time value sits in `extension`, if it is there.
    abs_send_time_at: Option<usize>,
    history: Vec<Slot>,
    /// Whether this leg's socket takes `UDP_SEGMENT` (probed once, cleared on refusal).
    gso: bool,
}

/// What one leg's write came to.
enum Sent {
    /// Packets the kernel took, from the first (the rest go asyncio's way).
    Taken(usize),
    /// The first datagram was refused for another reason than a full buffer.
    Failed(io::Error),
}

/// Packet `seq` of a history ring, if the ring still holds it.
fn ring_packet(history: &[Slot], seq: u16) -> Option<&[u8]> {
    let slot = history.get(usize::from(seq) % history.len().max(1))?;
    (slot.seq == Some(seq)).then_some(slot.packet.as_slice())
}

impl Leg {
    fn slot(&mut self, seq: u16) -> Option<&mut Slot> {
        let len = self.history.len().max(1);
        self.history.get_mut(usize::from(seq) % len)
    }

    fn packet(&self, seq: u16) -> Option<&[u8]> {
        ring_packet(&self.history, seq)
    }

    /// The frame's packets, built and protected into the history ring; the sequence
    /// numbers are used whether or not the packets leave.
    fn build(
        &mut self,
        py: Python<'_>,
        payloads: &[&[u8]],
        timestamp: u32,
        abs_send_time: u32,
    ) -> Result<(), String> {
        let sender = self.sender.clone_ref(py);
        let mut sender = sender
            .bind(py)
            .try_borrow_mut()
            .map_err(|_| "the SRTP sender is in use".to_owned())?;
        if let Some(at) = self.abs_send_time_at {
            let [_, a, b, c] = abs_send_time.to_be_bytes();
            if let Some(dst) = self.extension.get_mut(at..at + 3) {
                dst.copy_from_slice(&[a, b, c]);
            }
        }
        let ts = timestamp.wrapping_add(self.ts_offset);
        let extension = std::mem::take(&mut self.extension);
        let result = (|| {
            let header = FrameHeader::new(self.b0, self.payload_type, ts, self.ssrc, &extension)
                .map_err(|e| e.to_string())?;
            let last = payloads.len().saturating_sub(1);
            for (i, payload) in payloads.iter().enumerate() {
                let seq = self.seq;
                let len = sender.inner.protected_len(header.len() + payload.len());
                let slot = self.slot(seq).ok_or("empty history")?;
                slot.seq = None;
                slot.packet.resize(len, 0);
                // RFC 3550 §5.1: consecutive sequence numbers, modulo 2^16; a packet's
                // index is used once protected, so the next one moves on even if a later
                // packet of the frame fails.
                sender
                    .inner
                    .protect_packet(&header, seq, i == last, payload, &mut slot.packet)
                    .map_err(|e| e.to_string())?;
                slot.seq = Some(seq);
                self.seq = seq.wrapping_add(1);
            }
            Ok(())
        })();
        self.extension = extension;
        result
    }

    /// Writes the last `n` packets built (GIL released): one `sendmmsg(2)` while the
    /// kernel takes everything, GSO runs where allowed.  Also: syscalls made and GSO
    /// messages the kernel took.
    fn write(&mut self, n: u16, gso_allowed: bool) -> (Sent, u64, u64) {
        let first = self.seq.wrapping_sub(n);
        let mut to = RawAddr::new(self.to);
        let (mut taken, mut calls, mut gso_sent) = (0usize, 0u64, 0u64);
        let total = usize::from(n);
        loop {
            let rest: Vec<&[u8]> = (taken..total)
                .filter_map(|i| {
                    ring_packet(&self.history, first.wrapping_add(u16::try_from(i).ok()?))
                })
                .collect();
            if rest.is_empty() {
                return (Sent::Taken(taken), calls, gso_sent);
            }
            let gso = gso_allowed && self.gso;
            let lens: Vec<usize> = rest.iter().map(|p| p.len()).collect();
            let max_segments = if gso { gso::MAX_SEGMENTS } else { 1 };
            let runs = gso::runs(&lens, max_segments, gso::MAX_BYTES);
            calls += 1;
            match send_runs(self.fd.as_raw_fd(), &mut to, &rest, &runs) {
                Ok(0) => return (Sent::Taken(taken), calls, gso_sent),
                Ok(messages) => {
                    let done = runs.get(..messages).unwrap_or(&runs);
                    taken += done.last().map_or(0, |r| r.end);
                    gso_sent += done.iter().filter(|r| r.segment > 0).count() as u64;
                    // Fewer messages than given: the next one was refused; the next call
                    // says why (or takes it after all).
                }
                Err(e) if gso && runs.first().is_some_and(|r| r.segment > 0) && gso_refused(&e) => {
                    self.gso = false;
                }
                Err(e) if taken == 0 => return (Sent::Failed(e), calls, gso_sent),
                Err(_) => return (Sent::Taken(taken), calls, gso_sent),
            }
        }
    }
}

/// A frame's payloads, borrowed for the call.
enum Payload<'py> {
    Bytes(Bound<'py, PyBytes>),
    Buffer(Buf),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Bytes(b) => b.as_bytes(),
            Payload::Buffer(b) => b.as_slice(),
        }
    }
}

/// A leg's history as `remove` returns it: `(seq, packet)`, oldest first.
type History<'py> = Vec<(u16, Bound<'py, PyBytes>)>;

/// Every subscriber of one track (see `python/e2ee/_srtp.pyi`).
#[pyclass(module = "e2ee._srtp", name = "Fanout")]
pub(crate) struct Fanout {
    legs: Vec<Option<Leg>>,
    history: usize,
    /// Whether GSO is tried at all (tests turn it off to compare).
    #[pyo3(get, set)]
    gso: bool,
    /// Messages sent with `UDP_SEGMENT`, and `sendmmsg` calls made.
    #[pyo3(get)]
    gso_sends: u64,
    #[pyo3(get)]
    syscalls: u64,
}

impl Fanout {
    fn leg(&self, id: usize) -> PyResult<&Leg> {
        self.legs
            .get(id)
            .and_then(Option::as_ref)
            .ok_or_else(|| PyValueError::new_err(format!("no leg {id}")))
    }
}

#[pymethods]
impl Fanout {
    #[new]
    #[pyo3(signature = (history = 256))]
    fn new(history: usize) -> PyResult<Self> {
        // A power of two up to 2^12 divides 2^16: the ring index of a sequence number
        // stays consistent across its wrap.
        if !history.is_power_of_two() || history > MAX_HISTORY {
            return Err(PyValueError::new_err(format!(
                "history must be a power of two up to {MAX_HISTORY}"
            )));
        }
        Ok(Fanout {
            legs: Vec::new(),
            history,
            gso: true,
            gso_sends: 0,
            syscalls: 0,
        })
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (sender, fd, address, b0, payload_type, ssrc, first_seq, timestamp_offset, extension, abs_send_time_at = None))]
    fn add(
        &mut self,
        sender: Py<SrtpSender>,
        fd: &Bound<'_, PyAny>,
        address: &Bound<'_, PyAny>,
        b0: &Bound<'_, PyAny>,
        payload_type: &Bound<'_, PyAny>,
        ssrc: &Bound<'_, PyAny>,
        first_seq: &Bound<'_, PyAny>,
        timestamp_offset: &Bound<'_, PyAny>,
        extension: Vec<u8>,
        abs_send_time_at: Option<usize>,
    ) -> PyResult<usize> {
        let fd = i32::try_from(uint(fd, "fd", i32::MAX as u64)?).unwrap_or(-1);
        let fd = dup_datagram_socket(fd).map_err(|e| {
            PyValueError::new_err(format!("fd {fd} is not a usable datagram socket: {e}"))
        })?;
        let to: SocketAddr = mmsg::socket_addr(address)?;
        let b0 = u8::try_from(uint(b0, "b0", 0xff)?).unwrap_or(0);
        let payload_type = u8::try_from(uint(payload_type, "payload_type", 0x7f)?).unwrap_or(0);
        let ssrc = u32::try_from(uint(ssrc, "ssrc", 0xffff_ffff)?).unwrap_or(0);
        let seq = u16::try_from(uint(first_seq, "first_seq", 0xffff)?).unwrap_or(0);
        let ts_offset =
            u32::try_from(uint(timestamp_offset, "timestamp_offset", 0xffff_ffff)?).unwrap_or(0);
        // Checked once here: every frame of the leg uses this header.
        FrameHeader::new(b0, payload_type, 0, ssrc, &extension)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if let Some(at) = abs_send_time_at {
            if at < 4 || at + 3 > extension.len() {
                return Err(PyValueError::new_err(
                    "abs_send_time_at must point at 3 bytes inside the extension's elements",
                ));
            }
        }
        let leg = Leg {
            sender,
            gso: gso_supported(fd.as_raw_fd()),
            fd,
            to,
            b0,
            payload_type,
            ssrc,
            ts_offset,
            seq,
            extension,
            abs_send_time_at,
            history: (0..self.history)
                .map(|_| Slot {
                    seq: None,
                    packet: Vec::new(),
                })
                .collect(),
        };
        let id = match self.legs.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.legs.push(None);
                self.legs.len() - 1
            }
        };
        if let Some(place) = self.legs.get_mut(id) {
            *place = Some(leg);
        }
        Ok(id)
    }

    /// Removes a leg: its next sequence number and its history, oldest first.
    fn remove<'py>(&mut self, py: Python<'py>, leg: usize) -> PyResult<(u16, History<'py>)> {
        self.leg(leg)?;
        let Some(removed) = self.legs.get_mut(leg).and_then(Option::take) else {
            return Err(PyValueError::new_err(format!("no leg {leg}")));
        };
        let mut history: History<'py> = Vec::new();
        let len = u16::try_from(removed.history.len()).unwrap_or(u16::MAX);
        for back in (1..=len).rev() {
            let seq = removed.seq.wrapping_sub(back);
            if let Some(packet) = removed.packet(seq) {
                history.push((seq, PyBytes::new(py, packet)));
            }
        }
        while matches!(self.legs.last(), Some(None)) {
            self.legs.pop();
        }
        Ok((removed.seq, history))
    }

    /// The protected packet `seq` of `leg` as first sent, if the history still holds it.
    fn packet<'py>(
        &self,
        py: Python<'py>,
        leg: usize,
        seq: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let seq = u16::try_from(uint(seq, "seq", 0xffff)?).unwrap_or(0);
        Ok(self.leg(leg)?.packet(seq).map(|p| PyBytes::new(py, p)))
    }

    fn next_seq(&self, leg: usize) -> PyResult<u16> {
        Ok(self.leg(leg)?.seq)
    }

    fn uses_gso(&self, leg: usize) -> PyResult<bool> {
        Ok(self.gso && self.leg(leg)?.gso)
    }

    fn __len__(&self) -> usize {
        self.legs.iter().flatten().count()
    }

    /// One frame to the legs `direct` (written now) and `buffered` (built only: asyncio
    /// must send them after what it holds): what did not all leave, per leg.
    fn send<'py>(
        &mut self,
        py: Python<'py>,
        direct: Vec<usize>,
        buffered: Vec<usize>,
        payloads: &Bound<'py, PyAny>,
        timestamp: &Bound<'py, PyAny>,
        abs_send_time: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let timestamp = u32::try_from(uint(timestamp, "timestamp", 0xffff_ffff)?).unwrap_or(0);
        let ast = u32::try_from(uint(abs_send_time, "abs_send_time", 0xff_ffff)?).unwrap_or(0);
        let mut views: Vec<Payload<'py>> = Vec::new();
        for payload in payloads.try_iter()? {
            let payload = payload?;
            views.push(match payload.cast_into::<PyBytes>() {
                Ok(b) => Payload::Bytes(b),
                Err(e) => Payload::Buffer(Buf::read(&e.into_inner())?),
            });
        }
        let slices: Vec<&[u8]> = views.iter().map(Payload::as_slice).collect();
        if slices.is_empty() || slices.len() > self.history {
            return Err(PyValueError::new_err(format!(
                "a frame has 1 to {} packets",
                self.history
            )));
        }
        let n = u16::try_from(slices.len()).unwrap_or(0);
        let mut seen = vec![false; self.legs.len()];
        for &id in direct.iter().chain(&buffered) {
            self.leg(id)?;
            match seen.get_mut(id) {
                Some(s) if !*s => *s = true,
                _ => return Err(PyValueError::new_err(format!("leg {id} given twice"))),
            }
        }
        let out = PyList::empty(py);
        let mut writes: Vec<usize> = Vec::with_capacity(direct.len());
        for (&id, is_direct) in direct
            .iter()
            .map(|id| (id, true))
            .chain(buffered.iter().map(|id| (id, false)))
        {
            let Some(leg) = self.legs.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            match leg.build(py, &slices, timestamp, ast) {
                Ok(()) if is_direct => writes.push(id),
                Ok(()) => out.append((id, unsent(py, leg, n, 0)?))?,
                Err(e) => out.append((id, e))?,
            }
        }
        let gso = self.gso;
        let legs = &mut self.legs;
        // The packets are in the legs' rings, which only this call touches: the GIL is
        // not needed for the syscalls (a few microseconds per leg).
        let results: Vec<(usize, (Sent, u64, u64))> = py.detach(|| {
            writes
                .iter()
                .filter_map(|&id| Some((id, legs.get_mut(id)?.as_mut()?.write(n, gso))))
                .collect()
        });
        for (id, (sent, calls, gso_sent)) in results {
            self.syscalls += calls;
            self.gso_sends += gso_sent;
            let Some(leg) = self.legs.get(id).and_then(Option::as_ref) else {
                continue;
            };
            match sent {
                Sent::Taken(k) if k == usize::from(n) => {}
                Sent::Taken(k) => out.append((id, unsent(py, leg, n, k)?))?,
                Sent::Failed(e) => out.append((id, e.raw_os_error().unwrap_or(libc::EIO)))?,
            }
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("Fanout({} legs)", self.__len__())
    }
}

/// The last `n` packets built for `leg` from the `taken`-th on, as bytes, in order.
fn unsent<'py>(py: Python<'py>, leg: &Leg, n: u16, taken: usize) -> PyResult<Bound<'py, PyList>> {
    let first = leg.seq.wrapping_sub(n);
    let packets: Vec<Bound<'py, PyBytes>> = (taken..usize::from(n))
        .filter_map(|i| leg.packet(first.wrapping_add(u16::try_from(i).ok()?)))
        .map(|p| PyBytes::new(py, p))
        .collect();
    PyList::new(py, packets)
}
