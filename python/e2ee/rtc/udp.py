"""asyncio's UDP reader, reading whole bursts: the ONE module that names asyncio's private
names (as :mod:`e2ee.rtc.compat` is for aiortc's).

asyncio's selector loop reads one datagram per socket per loop iteration
(``_SelectorDatagramTransport._read_ready``); :func:`drain_transport` swaps that reader
for one that reads up to :data:`DRAIN_BATCH`, each datagram handled exactly as asyncio
handles it.  Why this matters for ICE consent: :mod:`e2ee.rtc.compat`, "draining ICE
sockets".

The router writes a frame's packets to a subscriber's socket itself, in one
``sendmmsg(2)`` (:meth:`e2ee._srtp.SrtpSender.send_frame`), but only while asyncio's
user-space send buffer of that socket is empty, so that no datagram overtakes one
asyncio still holds: :func:`datagram_fd` and :func:`direct_send_ok` tell, without the
per-call cost of ``get_write_buffer_size()`` (a generator over the buffer from 3.12).
"""

from __future__ import annotations

import asyncio
import weakref
from asyncio import selector_events
from typing import Any

__all__ = [
    "DRAIN_BATCH",
    "buffered_bytes",
    "datagram_fd",
    "direct_send_ok",
    "drain_transport",
]

#: Datagrams read per readiness event of an ICE socket (asyncio's own reader reads one):
#: enough for a 100 ms loop turn to read 160 packets a second from one socket, while one
#: turn still reads a bounded amount from each (the rest waits in the kernel).
DRAIN_BATCH = 16

_DRAINED: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
# asyncio's datagram transport of the selector loops (not in typeshed).
_SELECTOR_DATAGRAM: Any = selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]


def drain_transport(transport: Any, batch: int) -> bool:
    """Replace the loop's reader of a selector datagram transport by one that reads up
    to ``batch`` datagrams (the same handling per datagram as asyncio's)."""
    if transport in _DRAINED:
        return True
    if not isinstance(transport, _SELECTOR_DATAGRAM):
        return False  # another loop (uvloop reads in batches already)
    if transport.is_closing():
        return False
    sock, loop, protocol = transport._sock, transport._loop, transport.get_protocol()

    def read_ready() -> None:
        for _ in range(batch):
            if transport._conn_lost:
                return
            try:
                data, addr = sock.recvfrom(transport.max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                transport._fatal_error(exc, "Fatal read error on datagram transport")
                return
            protocol.datagram_received(data, addr)

    loop._remove_reader(transport._sock_fd)
    loop._add_reader(transport._sock_fd, read_ready)
    _DRAINED.add(transport)
    return True


def datagram_fd(transport: Any) -> int | None:
    """The socket's file descriptor of an open selector datagram transport, for writing
    to it directly while :func:`direct_send_ok`; ``None`` for any other transport."""
    if not isinstance(transport, _SELECTOR_DATAGRAM) or transport.is_closing():
        return None
    fd: int = transport._sock_fd
    return fd


def direct_send_ok(transport: Any) -> bool:
    """Whether a datagram may be written to the socket of :func:`datagram_fd` now: the
    transport is not closing (so the fd is still its socket: asyncio closes the socket
    only after ``_closing`` is set) and its send buffer is empty (so nothing is
    overtaken).  Only for a transport :func:`datagram_fd` accepted."""
    return not transport._buffer and not transport._closing


def buffered_bytes(transport: Any) -> int:
    """Bytes in a selector datagram transport's send buffer, 0 at no cost when empty."""
    return int(transport.get_write_buffer_size()) if transport._buffer else 0
