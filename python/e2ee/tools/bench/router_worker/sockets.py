"""One reader for the ICE sockets of every light subscription in a process, with the
kernel's receive time of each datagram.

asyncio wakes once per ready socket and datagram (a handle, a callback and a
``recvfrom`` each); at hundreds of subscriptions that is most of a subscriber's cost.
Here the sockets are taken from asyncio (``pause_reading()`` on the transport, the socket
read through a duplicate descriptor) and registered with one ``epoll`` of our own, which
is itself one reader of the event loop (``loop.add_reader``).  Once traffic flows the
reader leaves the loop's selector and reads every ``coalesce`` seconds on a timer
instead (no ``epoll_ctl`` per wake-up), so that one wake-up reads what dozens of sockets
received meanwhile, until none is ready; after a few empty reads it waits on the
selector again.

Two readers do that.  :class:`NativeReader` (the default, ``--receiver native``) leaves
the reading to :class:`e2ee._srtp.RtpReader` (Rust): each ready socket drained with
``recvmmsg(2)``, RTP followed to whole frames there (the per-packet half of
:meth:`~e2ee.tools.bench.router_worker.light.LightTrack.packet`), so Python handles
frames, not packets; with ``UDP_GRO`` on its sockets (udp(7), Linux 5.0), the router's
GSO sends (a run of a frame's packets in one send) arrive as one datagram each, cut into
packets there.  :class:`SocketReader` (``--receiver python``, kept to compare)
reads one datagram per ready socket and round with ``recvmsg`` and hands each to its
socket's handler.  Either way RTP is consumed, RTCP counted and dropped, and everything
else (STUN, DTLS) goes to the aioice protocol, as asyncio would have (a few milliseconds
later).

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
from typing import Any, Protocol

__all__ = ["COALESCE_S", "RECEIVERS", "NativeReader", "SocketReader", "new_reader"]

log = logging.getLogger("e2ee.tools.bench.router_worker")

#: ``handler(data, addr, arrival_ns)``, arrival on CLOCK_MONOTONIC.
Handler = Callable[[bytes, Any, int], None]
#: Larger than any datagram aiortc sends (RTP at most ~1300 bytes, DTLS flights < 1500).
_MAX_DATAGRAM = 8192
#: Linux, asm-generic/socket.h: SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), a struct timespec.
_SO_TIMESTAMPNS = 35
#: Linux, include/uapi/linux/udp.h: UDP_GRO (level SOL_UDP = IPPROTO_UDP).
_UDP_GRO = 104
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
#: Seconds the reader rests after a wake-up (datagrams wait in the kernel meanwhile).
COALESCE_S = 0.005
#: Rounds over the ready sockets per wake-up at most (the loop's other work must run).
_ROUNDS = 16
#: Empty timed reads in a row after which the reader waits on the loop's selector again.
_IDLE_READS = 4
#: The receive paths, the default first.
RECEIVERS = ("native", "python")


class FrameTarget(Protocol):
    """What :class:`NativeReader` hands a complete frame to (a ``LightTrack``)."""

    def frame(self, ts: int, arrival: int, parts: list[bytes] | None, uncertain: bool) -> None:
        """One frame, complete by its RTP headers; ``parts``: its packets, to decrypt."""


class _Reader:
    """The part both readers share: sockets taken from asyncio, the wake-up and rest
    cycle on the loop, and the counters (``datagrams``, ``wakeups``, ``cpu_s``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fileno: int, coalesce: float) -> None:
        self._loop = loop
        self._fileno = fileno
        self._coalesce = coalesce
        self._socks: dict[int, socket.socket] = {}
        self._timer: asyncio.TimerHandle | None = None  # the next timed read
        self._idle = 0  # empty timed reads in a row
        self._closed = False
        self.datagrams = 0
        self.wakeups = 0
        self.cpu_s = 0.0  # CPU time spent reading and handling datagrams
        self.gro_datagrams = 0  # datagrams that held several packets (a GSO send, whole)
        self.kernel_timestamps = True
        loop.add_reader(fileno, self._ready)

    def _own(self, protocol: Any) -> socket.socket:
        """``protocol``'s socket, duplicated, with kernel timestamps; asyncio stops
        reading it."""
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
        return own

    def _read(self) -> int:
        """Read and handle what is ready: how many datagrams."""
        raise NotImplementedError

    def _ready(self) -> None:
        """A socket is readable (the loop's selector says so)."""
        if self._coalesce > 0:
            self._loop.remove_reader(self._fileno)  # timed reads from now on
            self._idle = 0
        self._tick()

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        cpu0 = time.thread_time()
        count = self._read()
        self.wakeups += count > 0  # reads that found something: the coalescing figure
        self.datagrams += count
        self.cpu_s += time.thread_time() - cpu0
        if self._coalesce <= 0 or self._closed:
            return
        self._idle = 0 if count else self._idle + 1
        if self._idle < _IDLE_READS:
            self._timer = self._loop.call_later(self._coalesce, self._tick)
        else:
            self._loop.add_reader(self._fileno, self._ready)

    def _forget(self, fd: int) -> None:
        """Stop reading ``fd`` (before it is closed)."""
        raise NotImplementedError

    def _drop(self, fd: int) -> None:
        sock = self._socks.pop(fd, None)
        if sock is not None:
            self._forget(fd)
            sock.close()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for fd in list(self._socks):
            self._drop(fd)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fileno)


class SocketReader(_Reader):
    """Reads many UDP sockets from one ``epoll`` on the running loop, one ``recvmsg`` per
    datagram (see the module docs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce: float = COALESCE_S) -> None:
        self._epoll = select.epoll()
        # fd -> (the socket's bound recvmsg, its handler): one lookup per datagram.
        self._handlers: dict[int, tuple[Callable[..., Any], Handler]] = {}
        super().__init__(loop, self._epoll.fileno(), coalesce)

    def take(self, protocol: Any, handler: Handler) -> None:
        """Read ``protocol``'s socket here from now on; each datagram goes to
        ``handler(data, addr, arrival_ns)``."""
        own = self._own(protocol)
        self._handlers[own.fileno()] = (own.recvmsg, handler)
        self._epoll.register(own.fileno(), select.EPOLLIN)

    def _read(self) -> int:
        count = 0
        read = self._handlers
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
        return count

    def _forget(self, fd: int) -> None:
        self._handlers.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def close(self) -> None:
        super().close()
        self._epoll.close()


class NativeReader(_Reader):
    """Reads many UDP sockets with :class:`e2ee._srtp.RtpReader`: frames, not packets,
    reach Python (see the module docs).  ``RuntimeError`` without ``e2ee._srtp``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce: float = COALESCE_S) -> None:
        from e2ee.rtc.srtp import rtp_reader

        self.rtp = rtp_reader()
        self._targets: list[FrameTarget] = []
        # fd -> the aioice protocol's datagram_received (STUN, DTLS).
        self._passed: dict[int, Callable[[bytes, Any], None]] = {}
        self.gro = True  # every socket takes GSO runs whole (UDP_GRO)
        self._coalesced = 0  # self.rtp.coalesced at the last read
        super().__init__(loop, self.rtp.fileno(), coalesce)

    def subscription(self) -> int:
        """A new subscription's number (its sockets and tracks share the SSRC map)."""
        return self.rtp.add_subscription()

    def track(
        self, subscription: int, payload_types: list[int], video: bool, target: FrameTarget
    ) -> int:
        """A track of ``subscription``; its frames go to ``target.frame``."""
        number = self.rtp.add_track(subscription, payload_types, video)
        self._targets.append(target)
        return number

    def take(self, protocol: Any, subscription: int) -> None:
        """Read ``protocol``'s socket here from now on, for ``subscription``; what is not
        RTP or RTCP goes to ``protocol.datagram_received``."""
        own = self._own(protocol)
        try:
            own.setsockopt(socket.IPPROTO_UDP, _UDP_GRO, 1)
        except OSError:  # before Linux 5.0: the kernel cuts GSO runs itself
            self.gro = False
        self._passed[own.fileno()] = protocol.datagram_received
        self.rtp.add_socket(own.fileno(), subscription)

    def _read(self) -> int:
        frames, passed, errors, count = self.rtp.drain(_ROUNDS)
        coalesced = self.rtp.coalesced
        self.gro_datagrams += coalesced - self._coalesced
        self._coalesced = coalesced
        targets = self._targets
        for track, ts, arrival, parts, uncertain in frames:
            try:
                targets[track].frame(ts, arrival, parts, uncertain)
            except Exception:  # one bad frame must not stop the others
                log.exception("socket reader: frame handling failed")
        for fd, data, addr in passed:
            handler = self._passed.get(fd)
            if handler is not None:
                try:
                    handler(data, addr)
                except Exception:
                    log.exception("socket reader: handler failed")
        for fd, errno in errors:
            log.warning("socket reader: %s; dropping the socket", os.strerror(errno))
            self._drop(fd)
        return count

    def _forget(self, fd: int) -> None:
        self._passed.pop(fd, None)
        self.rtp.remove_socket(fd)


def new_reader(
    receiver: str, loop: asyncio.AbstractEventLoop, coalesce: float = COALESCE_S
) -> NativeReader | SocketReader:
    """The reader of ``receiver`` (one of :data:`RECEIVERS`)."""
    if receiver == "native":
        return NativeReader(loop, coalesce)
    if receiver == "python":
        return SocketReader(loop, coalesce)
    raise ValueError(f"unknown receiver {receiver!r} (one of {', '.join(RECEIVERS)})")
