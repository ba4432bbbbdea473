//! `RtpReader`: the native receive path of `e2ee bench router`'s light subscribers
//! (`python/e2ee/tools/bench/router_worker/sockets.py`).  One `epoll` of its own over
//! many UDP sockets; each ready socket drained with `recvmmsg(2)` (`MSG_DONTWAIT`), each
//! datagram with its kernel receive time (`SO_TIMESTAMPNS`, socket(7)); RTP goes through
//! `e2ee_srtp::track::FrameTracker` here, so Python sees frames, not packets; RTCP is
//! counted and dropped; STUN and DTLS are handed back whole, with their source address,
//! for aioice.  A socket with `UDP_GRO` on (udp(7)) gets the router's GSO runs as one
//! datagram each, cut here into its packets: one trip through the kernel per run.  The
//! sockets stay the caller's: it sets the socket options, and unregisters a socket
//! before closing it.
//!
//! Straight `libc`, in small `unsafe` blocks: `epoll_create1`, `epoll_ctl`,
//! `epoll_wait`, `recvmmsg`, and `clock_gettime` in `msghdr.rs`, which reads control
//! messages and addresses from plain byte buffers, without pointer casts.

mod msghdr;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use e2ee_srtp::track::{Datagram, FrameTracker, classify};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use self::msghdr::{address, clock_ns, control_messages};
use crate::os_error;

/// The largest UDP datagram: a GRO datagram (udp(7) `UDP_GRO`: the datagrams of one GSO
/// send, as the router's fan-out writes runs of a frame's packets) may be that large.
const MAX_DATAGRAM: usize = 65_536;
/// Room for an `SCM_TIMESTAMPNS` (a `cmsghdr` and a `timespec`: 32 bytes) and a
/// `UDP_GRO` (a `cmsghdr` and an int, aligned: 24 bytes).
const CONTROL_LEN: usize = 64;
/// Room for a `sockaddr_in6`.
const NAME_LEN: usize = 32;
/// Datagrams per `recvmmsg(2)`.
const BATCH: usize = 32;
/// `recvmmsg(2)` calls per socket and round at most, so one busy socket cannot hold
/// the others back.
const CALLS_PER_SOCKET: usize = 8;
/// Ready sockets per `epoll_wait(2)`.
const EVENTS: usize = 256;

/// A subscription: its sockets' datagrams go to its tracks by SSRC, learnt from the
/// payload type of the first packet of each SSRC.
#[derive(Default)]
struct Subscription {
    by_payload_type: HashMap<u8, usize>,
    by_ssrc: HashMap<u32, usize>,
    rtcp: u64,
    other: u64,
}

/// One frame for Python.
struct Out {
    track: usize,
    frame: e2ee_srtp::track::Frame,
}

/// A datagram for aioice: socket, bytes, source address.
struct Passed {
    fd: RawFd,
    data: Vec<u8>,
    name: [u8; NAME_LEN],
    name_len: usize,
}

/// The native receive path (see `python/e2ee/_srtp.pyi`).
#[pyclass(module = "e2ee._srtp", name = "RtpReader", unsendable)]
pub(crate) struct RtpReader {
    epoll: OwnedFd,
    sockets: HashMap<RawFd, usize>,
    subscriptions: Vec<Subscription>,
    tracks: Vec<FrameTracker>,
    buffers: Vec<u8>,
    controls: Vec<u8>,
    names: Vec<[u8; NAME_LEN]>,
    truncated: u64,
    coalesced: u64,
}

#[pymethods]
impl RtpReader {
    #[new]
    fn new() -> PyResult<Self> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(os_error(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RtpReader {
            epoll,
            sockets: HashMap::new(),
            subscriptions: Vec::new(),
            tracks: Vec::new(),
            buffers: vec![0; BATCH * MAX_DATAGRAM],
            controls: vec![0; BATCH * CONTROL_LEN],
            names: vec![[0; NAME_LEN]; BATCH],
            truncated: 0,
            coalesced: 0,
        })
    }

    fn fileno(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn add_subscription(&mut self) -> usize {
        self.subscriptions.push(Subscription::default());
        self.subscriptions.len() - 1
    }

    fn add_track(
        &mut self,
        subscription: usize,
        payload_types: Vec<u8>,
        video: bool,
    ) -> PyResult<usize> {
        let track = self.tracks.len();
        let sub = self
            .subscriptions
            .get_mut(subscription)
            .ok_or_else(|| PyValueError::new_err("no such subscription"))?;
        for pt in payload_types {
            if pt > 0x7f {
                return Err(PyValueError::new_err("payload types are 0 to 127"));
            }
            sub.by_payload_type.insert(pt, track);
        }
        self.tracks.push(FrameTracker::new(video));
        Ok(track)
    }

    fn add_socket(&mut self, fd: RawFd, subscription: usize) -> PyResult<()> {
        if subscription >= self.subscriptions.len() {
            return Err(PyValueError::new_err("no such subscription"));
        }
        if fd < 0 || self.sockets.contains_key(&fd) {
            return Err(PyValueError::new_err(
                "a socket already read here, or no socket",
            ));
        }
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(fd.unsigned_abs()),
        };
        // SAFETY: `event` is a valid epoll_event the kernel only reads; a bad `fd` is an
        // error the call reports.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(os_error(io::Error::last_os_error()));
        }
        self.sockets.insert(fd, subscription);
        Ok(())
    }

    fn remove_socket(&mut self, fd: RawFd) {
        if self.sockets.remove(&fd).is_some() {
            // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since
            // Linux 2.6.9); an error (the socket already closed) changes nothing here.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    ptr::null_mut(),
                )
            };
        }
    }

    fn set_probe(&mut self, track: usize, on: bool) -> PyResult<()> {
        self.tracks
            .get_mut(track)
            .ok_or_else(|| PyValueError::new_err("no such track"))?
            .set_want_probe(on);
        Ok(())
    }

    fn take_counters(&mut self, track: usize) -> PyResult<(u64, u64, u64, u64, u64)> {
        let c = self
            .tracks
            .get_mut(track)
            .ok_or_else(|| PyValueError::new_err("no such track"))?
            .take_counters();
        Ok((c.packets, c.bytes, c.seq_gaps, c.incomplete, c.late))
    }

    fn subscription_counters(&self, subscription: usize) -> PyResult<(u64, u64)> {
        let s = self
            .subscriptions
            .get(subscription)
            .ok_or_else(|| PyValueError::new_err("no such subscription"))?;
        Ok((s.rtcp, s.other))
    }

    #[getter]
    fn truncated(&self) -> u64 {
        self.truncated
    }

    #[getter]
    fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// Read what the ready sockets hold (see the stub).
    #[pyo3(signature = (rounds = 16))]
    fn drain<'py>(&mut self, py: Python<'py>, rounds: usize) -> PyResult<Bound<'py, PyTuple>> {
        let mut frames = Vec::new();
        let mut passed = Vec::new();
        let mut errors = Vec::new();
        let mut count = 0usize;
        let offset = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC);
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        for _ in 0..rounds {
            // SAFETY: `events` holds EVENTS writable entries; timeout 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(os_error(err));
            }
            if n == 0 {
                break;
            }
            let ready: Vec<RawFd> = events
                .iter()
                .take(usize::try_from(n).unwrap_or(0))
                .filter_map(|e| RawFd::try_from(e.u64).ok())
                .collect();
            for fd in ready {
                let Some(&sub) = self.sockets.get(&fd) else {
                    continue;
                };
                for _ in 0..CALLS_PER_SOCKET {
                    match self.read_batch(fd, sub, offset, &mut frames, &mut passed) {
                        Ok((got, packets)) => {
                            count += packets;
                            if got < BATCH {
                                break;
                            }
                        }
                        Err(e) => {
                            errors.push((fd, e.raw_os_error().unwrap_or(0)));
                            break;
                        }
                    }
                }
            }
        }
        let frames = PyList::new(
            py,
            frames.into_iter().map(|Out { track, frame }| {
                let packets = frame
                    .packets
                    .map(|ps| ps.iter().map(|p| PyBytes::new(py, p)).collect::<Vec<_>>());
                (
                    track,
                    frame.timestamp,
                    frame.arrival_ns,
                    packets,
                    frame.uncertain,
                )
            }),
        )?;
        let passed = PyList::new(
            py,
            // A UDP socket of ours only ever has IP peers: anything else is dropped
            // rather than losing the frames read with it.
            passed.into_iter().filter_map(|p| {
                let name = p.name.get(..p.name_len).unwrap_or(&[]);
                let addr = address(py, name).ok()?;
                Some((p.fd, PyBytes::new(py, &p.data), addr))
            }),
        )?;
        PyTuple::new(
            py,
            [
                frames.into_any(),
                passed.into_any(),
                PyList::new(py, errors)?.into_any(),
                count.into_pyobject(py)?.into_any(),
            ],
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "RtpReader(sockets={}, tracks={})",
            self.sockets.len(),
            self.tracks.len()
        )
    }
}

impl RtpReader {
    /// One `recvmmsg(2)` on `fd`: how many datagrams it read (whole, before GRO: a full
    /// batch is `BATCH`) and how many packets they held (GRO segments), each handled.
    /// Nothing to read (`EAGAIN`) or a signal is (0, 0); any other error is returned.
    fn read_batch(
        &mut self,
        fd: RawFd,
        sub: usize,
        offset: i64,
        frames: &mut Vec<Out>,
        passed: &mut Vec<Passed>,
    ) -> io::Result<(usize, usize)> {
        let mut iovs: Vec<libc::iovec> = self
            .buffers
            .chunks_exact_mut(MAX_DATAGRAM)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(self.controls.chunks_exact_mut(CONTROL_LEN))
            .zip(self.names.iter_mut())
            .map(|((iov, control), name)| libc::mmsghdr {
                msg_hdr: libc::msghdr {
                    msg_name: name.as_mut_ptr().cast(),
                    msg_namelen: NAME_LEN as libc::socklen_t,
                    msg_iov: ptr::from_mut(iov),
                    msg_iovlen: 1,
                    msg_control: control.as_mut_ptr().cast(),
                    msg_controllen: CONTROL_LEN,
                    msg_flags: 0,
                },
                msg_len: 0,
            })
            .collect();
        let vlen = libc::c_uint::try_from(msgs.len()).unwrap_or(0);
        // SAFETY: `msgs` holds `vlen` headers, each pointing at its own iovec (one
        // MAX_DATAGRAM-byte slice of `self.buffers`), CONTROL_LEN bytes of
        // `self.controls` and NAME_LEN bytes of `self.names`, with those lengths; all
        // of them are live, writable and disjoint for the whole call.  No timeout.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok((0, 0)),
                _ => Err(err),
            };
        }
        let got = usize::try_from(rc).unwrap_or(0);
        let mut packets = 0;
        let now = clock_ns(libc::CLOCK_MONOTONIC);
        let lens: Vec<(usize, usize, usize, bool)> = msgs
            .iter()
            .take(got)
            .map(|m| {
                (
                    m.msg_len as usize,
                    m.msg_hdr.msg_controllen,
                    m.msg_hdr.msg_namelen as usize,
                    m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                )
            })
            .collect();
        drop(msgs);
        drop(iovs);
        for (i, (len, control_len, name_len, truncated)) in lens.into_iter().enumerate() {
            if truncated {
                self.truncated += 1;
                continue;
            }
            let start = i * MAX_DATAGRAM;
            let data = self
                .buffers
                .get(start..start + len.min(MAX_DATAGRAM))
                .unwrap_or(&[]);
            let control = self
                .controls
                .get(i * CONTROL_LEN..i * CONTROL_LEN + control_len.min(CONTROL_LEN))
                .unwrap_or(&[]);
            let (stamp, segment) = control_messages(control);
            let arrival = stamp.map_or(now, |t| t - offset);
            let Some(subscription) = self.subscriptions.get_mut(sub) else {
                continue;
            };
            let name = self.names.get(i).copied().unwrap_or([0; NAME_LEN]);
            // A GRO datagram (udp(7) UDP_GRO) is the sender's datagrams of one GSO send,
            // back to back, each `segment` bytes but the last.
            let segment = segment.filter(|&n| n > 0).unwrap_or(data.len().max(1));
            if data.len() > segment {
                self.coalesced += 1;
            }
            for datagram in data.chunks(segment) {
                packets += 1;
                let target = Target {
                    subscription: &mut *subscription,
                    tracks: &mut self.tracks,
                    frames: &mut *frames,
                    passed: &mut *passed,
                };
                target.datagram(datagram, arrival, fd, name, name_len.min(NAME_LEN));
            }
        }
        Ok((got, packets))
    }
}

/// Where one datagram's contents go.
struct Target<'a> {
    subscription: &'a mut Subscription,
    tracks: &'a mut [FrameTracker],
    frames: &'a mut Vec<Out>,
    passed: &'a mut Vec<Passed>,
}

impl Target<'_> {
    /// As the Python path (`LightSubscription.wrap`): RTP to its track, RTCP counted,
    /// the rest passed on.
    fn datagram(self, data: &[u8], arrival: i64, fd: RawFd, name: [u8; NAME_LEN], name_len: usize) {
        let sub = self.subscription;
        match classify(data) {
            Datagram::Rtcp => sub.rtcp += 1,
            Datagram::Rtp { payload_type, ssrc } => {
                let track = match sub.by_ssrc.get(&ssrc) {
                    Some(&t) => Some(t),
                    None => {
                        let t = sub.by_payload_type.get(&payload_type).copied();
                        match t {
                            Some(t) => {
                                sub.by_ssrc.insert(ssrc, t);
                            }
                            None => sub.other += 1, // RTX or unknown
                        }
                        t
                    }
                };
                let frame = track.and_then(|t| {
                    let tracker = self.tracks.get_mut(t)?;
                    Some((t, tracker.packet(data, arrival)?))
                });
                if let Some((track, frame)) = frame {
                    self.frames.push(Out { track, frame });
                }
            }
            Datagram::Other => self.passed.push(Passed {
                fd,
                data: data.to_vec(),
                name,
                name_len,
            }),
        }
    }
}
