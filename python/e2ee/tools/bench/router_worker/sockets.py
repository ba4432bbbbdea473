"""One reader for the ICE sockets of every light subscription in a process, with the
kernel's receive time of each datagram.

asyncio wakes once per ready socket and datagram (a handle, a callback and a
``recvfrom`` each); at hundreds of subscriptions that is most of a subscriber's cost.
Here the sockets are taken from asyncio (``pause_reading()`` on the transport, the socket
read through a duplicate descriptor) and registered with one ``epoll`` of our own, which
is itself one reader of the event loop (``loop.add_reader``).  After each wake-up the
reader stays away for ``coalesce`` seconds, so that one wake-up reads what dozens of
sockets received meanwhile: every ready socket, one datagram each, until none is ready.
Each datagram goes to its socket's handler with its arrival time, which consumes RTP and
hands everything else (STUN, DTLS, RTCP) to the aioice protocol, as asyncio would have
(a few milliseconds later).

The arrival time is the kernel's (``SO_TIMESTAMPNS``, socket(7): CLOCK_REALTIME when the
datagram reached the socket), moved to CLOCK_MONOTONIC with the offset between the two
clocks read at each wake-up, so neither the coalescing nor this process's own scheduling
delays count in the latencies the bench measures.  Where the kernel gives no timestamp,
the time of reading is used (``kernel_timestamps`` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

__all__ = ["COALESCE_S", "SocketReader"]

log = logging.getLogger("e2ee.tools.bench.router_worker")

#: ``handler(data, addr, arrival_ns)``, arrival on CLOCK_MONOTONIC.
Handler = Callable[[bytes, Any, int], None]
#: Larger than any datagram aiortc sends (RTP at most ~1300 bytes, DTLS flights < 1500).
_MAX_DATAGRAM = 8192
#: Linux, asm-generic/socket.h: SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), a struct timespec.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
#: Seconds the reader rests after a wake-up (datagrams wait in the kernel meanwhile).
COALESCE_S = 0.005
#: Rounds over the ready sockets per wake-up at most (the loop's other work must run).
_ROUNDS = 16


class SocketReader:
    """Reads many UDP sockets from one ``epoll`` on the running loop (see the module
    docs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce: float = COALESCE_S) -> None:
        self._loop = loop
        self._coalesce = coalesce
        self._epoll = select.epoll()
        self._socks: dict[int, socket.socket] = {}
        # fd -> (the socket's bound recvmsg, its handler): one lookup per datagram.
        self._read: dict[int, tuple[Callable[..., Any], Handler]] = {}
        self._resting = False
        self._closed = False
        self.datagrams = 0
        self.wakeups = 0
        self.cpu_s = 0.0  # CPU time spent reading and handling datagrams
        self.kernel_timestamps = True
        loop.add_reader(self._epoll.fileno(), self._ready)

    def take(self, protocol: Any, handler: Handler) -> None:
        """Read ``protocol``'s socket here from now on; each datagram goes to
        ``handler(data, addr, arrival_ns)``."""
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise RuntimeError("socket reader: the transport is closed")
        fd = transport.get_extra_info("socket").fileno()
        own = socket.socket(fileno=os.dup(fd))
        own.setblocking(False)
        try:
            own.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            self.kernel_timestamps = False
        transport.pause_reading()
        self._socks[own.fileno()] = own
        self._read[own.fileno()] = (own.recvmsg, handler)
        self._epoll.register(own.fileno(), select.EPOLLIN)

    def _ready(self) -> None:
        cpu0 = time.thread_time()
        self.wakeups += 1
        count = 0
        read = self._read
        poll = self._epoll.poll
        unpack = _TIMESPEC.unpack
        offset = time.time_ns() - time.monotonic_ns()  # CLOCK_REALTIME - CLOCK_MONOTONIC
        for _round in range(_ROUNDS):
            ready = poll(0)
            if not ready:
                break
            for fd, _events in ready:
                entry = read.get(fd)
                if entry is None:
                    continue
                recvmsg, handler = entry
                try:
                    data, anc, _flags, addr = recvmsg(_MAX_DATAGRAM, _ANCILLARY)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    log.warning("socket reader: %s; dropping the socket", exc)
                    self._drop(fd)
                    continue
                if anc:
                    sec, nsec = unpack(anc[0][2])
                    arrival = sec * 1_000_000_000 + nsec - offset
                else:
                    arrival = time.monotonic_ns()
                count += 1
                try:
                    handler(data, addr, arrival)
                except Exception:  # one bad datagram must not stop the others
                    log.exception("socket reader: handler failed")
        self.datagrams += count
        self.cpu_s += time.thread_time() - cpu0
        if self._coalesce > 0 and not self._closed:
            self._loop.remove_reader(self._epoll.fileno())
            self._resting = True
            self._loop.call_later(self._coalesce, self._wake)

    def _wake(self) -> None:
        if self._resting and not self._closed:
            self._resting = False
            self._loop.add_reader(self._epoll.fileno(), self._ready)

    def _drop(self, fd: int) -> None:
        self._read.pop(fd, None)
        sock = self._socks.pop(fd, None)
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
            sock.close()

    def close(self) -> None:
        self._closed = True
        for fd in list(self._socks):
            self._drop(fd)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
