//! One `sendmmsg(2)` of a frame's protected packets to one UDP address, each packet a
//! message or (for the fan-out, `fanout.rs`) runs of equal-size packets as one UDP GSO
//! message each.  The socket is
//! the caller's non-blocking one; with `MSG_DONTWAIT` the kernel takes what fits now and
//! says how many: the caller sends the rest its own way (asyncio buffers them, in order).
//!
//! Straight `libc`, with one `unsafe` call: `nix`'s safe `sendmmsg` reports the count
//! only through an iterator that reads address slots a send never writes
//! (`MaybeUninit::assume_init`), and allocates three vectors per call.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;

use e2ee_srtp::gso::Run;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Messages one `sendmmsg(2)` takes at most (Linux `UIO_MAXIOV`); the kernel caps `vlen`
/// there anyway, the rest go the caller's way.
const MAX_BATCH: usize = 1024;

/// A Python socket address, as asyncio passes it to `sendto`: `(host, port)` for IPv4,
/// `(host, port[, flowinfo[, scope_id]])` for IPv6; the host a numeric address (no DNS).
pub(crate) fn socket_addr(address: &Bound<'_, PyAny>) -> PyResult<SocketAddr> {
    let bad =
        || PyValueError::new_err("address must be (numeric host, port[, flowinfo, scope_id])");
    let tuple = address.cast::<PyTuple>().map_err(|_| bad())?;
    if !(2..=4).contains(&tuple.len()) {
        return Err(bad());
    }
    let host: String = tuple.get_item(0)?.extract().map_err(|_| bad())?;
    let port: u16 = tuple.get_item(1)?.extract().map_err(|_| bad())?;
    // Python may write a link-local scope into the host too ("fe80::1%eth0"): the
    // number in the tuple is the one the kernel gets.
    let ip: IpAddr = host
        .split('%')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| bad())?;
    let field = |i: usize| -> PyResult<u32> {
        match tuple.get_item(i) {
            Ok(v) => v.extract().map_err(|_| bad()),
            Err(_) => Ok(0),
        }
    };
    Ok(match ip {
        IpAddr::V4(_) => SocketAddr::new(ip, port),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, field(2)?, field(3)?)),
    })
}

/// The kernel's form of a socket address.
pub(crate) enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    pub(crate) fn new(to: SocketAddr) -> Self {
        match to {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    pub(crate) fn name(&mut self) -> (*mut libc::c_void, libc::socklen_t) {
        match self {
            RawAddr::V4(a) => (
                ptr::from_mut(a).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(a) => (
                ptr::from_mut(a).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// Send `packets` to `to` on `fd` in one `sendmmsg(2)`, without blocking: how many the
/// kernel took, from the first.  A full socket buffer (`EAGAIN`, `ENOBUFS`) or a signal
/// (`EINTR`) before the first datagram is 0 taken; any other error is returned.  (Past
/// the first datagram the kernel reports an error by returning the count so far.)
pub(crate) fn send_all(fd: RawFd, to: SocketAddr, packets: &[&[u8]]) -> io::Result<usize> {
    let packets = packets.get(..packets.len().min(MAX_BATCH)).unwrap_or(&[]);
    if packets.is_empty() {
        return Ok(0);
    }
    let mut addr = RawAddr::new(to);
    let (name, namelen) = addr.name();
    let mut iovs: Vec<libc::iovec> = packets
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast(),
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: name,
                msg_namelen: namelen,
                msg_iov: ptr::from_mut(iov),
                msg_iovlen: 1,
                msg_control: ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        })
        .collect();
    let vlen = libc::c_uint::try_from(msgs.len()).unwrap_or(0);
    // SAFETY: `msgs` holds `vlen` initialised headers; each points at one `iovec` of
    // `iovs` (which describes a live, immutable packet slice: the kernel only reads it)
    // and at `addr` with its exact length, and all of them outlive the call.  No
    // control data.  The kernel writes only each header's `msg_len`.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT) };
    messages_taken(rc)
}

/// What a `sendmmsg(2)` with `MSG_DONTWAIT` returned, as the number of messages the kernel
/// took: a full buffer or a signal before the first message is 0; any other error is
/// returned.
fn messages_taken(rc: libc::c_int) -> io::Result<usize> {
    if rc >= 0 {
        return Ok(usize::try_from(rc).unwrap_or(0));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(0),
        _ => Err(err),
    }
}

// -- GSO runs (the fan-out) ---------------------------------------------------------

/// Errors of a GSO send that the same packets without GSO may not meet (then nothing
/// of the message was sent: `udp_send_skb` checks before the skb leaves).
pub(crate) fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

/// The control message of a GSO send: `UDP_SEGMENT` with the segment size (a `u16`).
#[repr(C)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    size: u16,
}

/// One `sendmmsg(2)` of `packets`, one message per run (a run of several packets with
/// the `UDP_SEGMENT` option): how many messages the kernel took, from the first.  A full
/// buffer or a signal before the first message is 0; any other error is returned.
pub(crate) fn send_runs(
    fd: RawFd,
    to: &mut RawAddr,
    packets: &[&[u8]],
    runs: &[Run],
) -> io::Result<usize> {
    let (name, namelen) = to.name();
    let mut iovs: Vec<libc::iovec> = packets
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast(),
            iov_len: p.len(),
        })
        .collect();
    let mut cmsgs: Vec<SegmentCmsg> = Vec::with_capacity(runs.len());
    for run in runs.iter().filter(|r| r.segment > 0) {
        // SAFETY: `cmsghdr` is a plain C struct (integers and, on some libcs, padding):
        // all zero bytes are a valid value of it.
        let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
        // CMSG_LEN(sizeof(u16)): the header is already aligned, the data follows it.
        hdr.cmsg_len = (size_of::<libc::cmsghdr>() + size_of::<u16>()) as _;
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = libc::UDP_SEGMENT;
        cmsgs.push(SegmentCmsg {
            hdr,
            size: u16::try_from(run.segment).unwrap_or(0),
        });
    }
    let mut next_cmsg = cmsgs.iter_mut();
    let iov_base = iovs.as_mut_ptr();
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(runs.len());
    for run in runs.iter().take(1024) {
        let (control, controllen) = if run.segment > 0 {
            match next_cmsg.next() {
                Some(c) => (ptr::from_mut(c).cast(), size_of::<SegmentCmsg>()),
                None => break,
            }
        } else {
            (ptr::null_mut(), 0)
        };
        if run.end > iovs.len() || run.start >= run.end {
            break;
        }
        msgs.push(libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: name,
                msg_namelen: namelen,
                // SAFETY (pointer arithmetic only): `run.start < run.end <= iovs.len()`,
                // checked above, so this points into `iovs`.
                msg_iov: unsafe { iov_base.add(run.start) },
                msg_iovlen: run.end - run.start,
                msg_control: control,
                msg_controllen: controllen,
                msg_flags: 0,
            },
            msg_len: 0,
        });
    }
    if msgs.is_empty() {
        return Ok(0);
    }
    let vlen = libc::c_uint::try_from(msgs.len()).unwrap_or(0);
    // SAFETY: `msgs` holds `vlen` initialised headers; each points at a range of `iovs`
    // (live, immutable packet slices: the kernel only reads them), at `to` with its
    // exact length, and at no control data or at one whole `SegmentCmsg` of `cmsgs`; all
    // of them outlive the call and none is moved while it runs.  The kernel writes only
    // each header's `msg_len`.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT) };
    messages_taken(rc)
}

/// Whether the kernel knows `UDP_SEGMENT` on this socket (Linux 4.18 and later): an
/// older one would ignore the option and send the run as ONE datagram, so ask first.
pub(crate) fn gso_supported(fd: RawFd) -> bool {
    int_option(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok()
}

/// An integer socket option of `fd` (`getsockopt(2)`).
fn int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes given; the kernel writes at
    // most `len` bytes into `value`.  Reading an option changes nothing.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, ptr::from_mut(&mut value).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A descriptor of its own for the UDP socket `fd`, closed when dropped: a fan-out leg
/// writes to the socket it was given even after its owner closed `fd` and the number was
/// reused (asyncio closes a transport's socket one loop turn after `close()`).  Refused
/// (`EINVAL`) unless `fd` is a datagram socket.
pub(crate) fn dup_datagram_socket(fd: RawFd) -> io::Result<OwnedFd> {
    let kind = int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    if kind != libc::SOCK_DGRAM {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; it returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just returned by fcntl, is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
