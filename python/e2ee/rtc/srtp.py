"""The router's SRTP sender in Rust, keyed for one DTLS transport's sending direction.

The router relays each publisher packet to each subscriber with a new RTP header and
protects it with the subscriber's hop-by-hop SRTP keys (RFC 3711 / RFC 7714, keyed by
DTLS-SRTP, RFC 5764 §4.2): :class:`e2ee._srtp.SrtpSender` does that per frame in one call,
with keys scheduled once (libsrtp, through ``pylibsrtp``, sets up its cipher per packet).
These are transport keys aiortc already holds; the router never holds an end-to-end key,
and :mod:`e2ee._srtp` is its own extension, so a routing process never loads
``e2ee._core``.

:func:`rust_sender` gives the sender for an ``RTCRtpSender``'s DTLS transport (one per
transport, shared by the senders bundled on it: each SSRC keeps its own rollover counter)
after a cheap check on the output: a probe packet protected by it and by aiortc's own
session must be byte-equal.  When there is none (``e2ee._srtp`` not built, a profile it
lacks, a probe that differs), it returns ``None`` and logs the reason once per transport
at INFO; the caller then protects with aiortc's session.  Before DTLS is connected it
returns ``None`` and decides nothing yet.
"""

from __future__ import annotations

import logging
import secrets
import struct
import weakref
from collections.abc import Callable

from aiortc import RTCDtlsTransport, RTCRtpSender

from e2ee.rtc import compat

try:
    from e2ee import _srtp
except ImportError:  # a source build with only e2ee._core: aiortc's libsrtp protects
    _srtp = None  # type: ignore[assignment]

__all__ = ["PROFILES", "new_fanout", "rtp_reader", "rust_sender", "sender_for_transport"]

log = logging.getLogger(__name__)

#: The profiles the Rust sender implements (empty without ``e2ee._srtp``).
PROFILES: frozenset[str] = frozenset(_srtp.PROFILES if _srtp is not None else ())


class _Unavailable(str):
    """Why a transport has no Rust sender."""


# Per DTLS transport: its sender, or why it has none (logged once).
_BY_TRANSPORT: weakref.WeakKeyDictionary[RTCDtlsTransport, _srtp.SrtpSender | _Unavailable] = (
    weakref.WeakKeyDictionary()
)


def sender_for_transport(
    dtls: RTCDtlsTransport, protect: Callable[[bytes], bytes]
) -> _srtp.SrtpSender | str:
    """A new Rust sender for the connected ``dtls``'s sending direction, or the reason
    there is none.  ``protect`` is aiortc's own session's (``_tx_srtp.protect``, from
    :func:`e2ee.rtc.compat.rtp_path`), for the probe."""
    if _srtp is None:
        return "e2ee._srtp is not built (a source install without it)"
    keying = compat.srtp_tx_keying(dtls)
    if keying is None:
        return "DTLS negotiated no SRTP profile aiortc knows"
    profile, key, salt = keying
    if profile not in PROFILES:
        return f"SRTP profile {profile} is not implemented in e2ee._srtp"
    # RFC 3550 §5.1 header, a random SSRC no stream uses, 32 payload bytes.  Neither
    # protected copy ever leaves this process, and the probe uses a sender of its own.
    probe = struct.pack("!BBHII", 0x80, 0, 0, 0, secrets.randbits(32)) + bytes(32)
    if _srtp.SrtpSender(profile, key, salt).protect(probe) != protect(probe):
        return f"the keys exported for {profile} do not match aiortc's SRTP session"
    return _srtp.SrtpSender(profile, key, salt)


def rust_sender(sender: RTCRtpSender, protect: Callable[[bytes], bytes]) -> _srtp.SrtpSender | None:
    """The Rust sender of ``sender``'s DTLS transport (see the module docs), or ``None``:
    the reason is logged once per transport.  Call it once DTLS is connected."""
    dtls = sender.transport
    if dtls is None or dtls.state != "connected":
        return None
    found = _BY_TRANSPORT.get(dtls)
    if found is None:
        try:
            made = sender_for_transport(dtls, protect)
        except Exception as exc:  # an aiortc or pyOpenSSL change: say so, use libsrtp
            made = f"{type(exc).__name__}: {exc}"
        found = _Unavailable(made) if isinstance(made, str) else made
        if isinstance(found, _Unavailable):
            log.info("router: SRTP by aiortc's libsrtp on this transport: %s", found)
        _BY_TRANSPORT[dtls] = found
    return None if isinstance(found, _Unavailable) else found


def new_fanout(history: int) -> _srtp.Fanout | None:
    """A new :class:`e2ee._srtp.Fanout` (one frame to every subscriber of a track in one
    call, each leg protected by its transport's :func:`rust_sender`) keeping ``history``
    packets per leg for NACKs; ``None`` without the extension."""
    return None if _srtp is None else _srtp.Fanout(history)


def rtp_reader() -> _srtp.RtpReader:
    """A new :class:`e2ee._srtp.RtpReader`: the native receive path of the bench's light
    subscribers (the router never reads with it).  ``RuntimeError`` without the
    extension."""
    if _srtp is None:
        raise RuntimeError("e2ee._srtp is not built: no native RTP reader")
    return _srtp.RtpReader()
