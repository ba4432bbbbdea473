//! What the kernel hands back with each datagram `recvmmsg(2)` reads, as plain bytes:
//! the control messages (cmsg(3): `SCM_TIMESTAMPNS`, socket(7); `UDP_GRO`, udp(7)) and
//! the source address (`sockaddr_in`, `sockaddr_in6`, ip(7), ipv6(7)), parsed without
//! pointer casts; and the clocks the receive times are moved between.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// The time on `clock`, in ns.
pub(super) fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on Linux, so the
    // call cannot fail (were it to, `ts` stays zero).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// From the control messages: the `SCM_TIMESTAMPNS` time (CLOCK_REALTIME, ns) and the
/// `UDP_GRO` segment size, each if present.
pub(super) fn control_messages(control: &[u8]) -> (Option<i64>, Option<usize>) {
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then the data,
    // each message aligned to size_t (CMSG_ALIGN).
    const HEAD: usize = size_of::<libc::cmsghdr>();
    const WORD: usize = size_of::<usize>();
    let word = |b: &[u8], at: usize| -> Option<[u8; 8]> { b.get(at..at + 8)?.try_into().ok() };
    let int = |b: &[u8], at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let (mut stamp, mut segment) = (None, None);
    let mut rest = control;
    while let Some(head) = rest.get(..HEAD) {
        let (Some(len), Some(level), Some(kind)) = (
            head.get(..WORD)
                .and_then(|b| b.try_into().ok())
                .map(usize::from_ne_bytes),
            int(head, WORD),
            int(head, WORD + 4),
        ) else {
            break;
        };
        if len < HEAD {
            break;
        }
        let data = rest.get(HEAD..len.min(rest.len())).unwrap_or(&[]);
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
            if let (Some(sec), Some(nsec)) = (word(data, 0), word(data, 8)) {
                let (sec, nsec) = (i64::from_ne_bytes(sec), i64::from_ne_bytes(nsec));
                stamp = Some(sec * 1_000_000_000 + nsec);
            }
        } else if level == libc::SOL_UDP && kind == libc::UDP_GRO {
            segment = int(data, 0).and_then(|n| usize::try_from(n).ok());
        }
        match rest.get(len.next_multiple_of(WORD)..) {
            Some(next) => rest = next,
            None => break,
        }
    }
    (stamp, segment)
}

/// A source address as asyncio gives it: `(host, port)` for IPv4, `(host, port,
/// flowinfo, scope_id)` for IPv6 (the host without a `%scope` suffix); an error for
/// another family.
pub(super) fn address<'py>(py: Python<'py>, name: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let u16_at = |i: usize| name.get(i..i + 2).and_then(|b| <[u8; 2]>::try_from(b).ok());
    let family = u16_at(0).map(u16::from_ne_bytes).map(i32::from);
    let port = u16_at(2).map(u16::from_be_bytes).unwrap_or(0);
    match family {
        Some(libc::AF_INET) => {
            let ip: [u8; 4] = name
                .get(4..8)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]);
            PyTuple::new(
                py,
                [
                    Ipv4Addr::from(ip).to_string().into_pyobject(py)?.into_any(),
                    port.into_pyobject(py)?.into_any(),
                ],
            )
        }
        Some(libc::AF_INET6) => {
            let word = |i: usize| {
                name.get(i..i + 4)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 4])
            };
            let ip: [u8; 16] = name
                .get(8..24)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 16]);
            let flowinfo = u32::from_be_bytes(word(4));
            let scope = u32::from_ne_bytes(word(24));
            PyTuple::new(
                py,
                [
                    Ipv6Addr::from(ip).to_string().into_pyobject(py)?.into_any(),
                    port.into_pyobject(py)?.into_any(),
                    flowinfo.into_pyobject(py)?.into_any(),
                    scope.into_pyobject(py)?.into_any(),
                ],
            )
        }
        _ => Err(PyValueError::new_err(
            "a datagram from an address family other than IP",
        )),
    }
}
