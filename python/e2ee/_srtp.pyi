# Hand-written stub of the Rust extension (rust/e2ee-srtp-py), checked by mypy.stubtest.
# The router's SRTP sender: its own extension, so that a process which only routes media
# never loads e2ee._core.  Reached only through e2ee.rtc.srtp.
from collections.abc import Sequence
from typing import final

from typing_extensions import Buffer

__all__ = ["MAX_PACKET_LEN", "PROFILES", "SrtpSender", "__version__"]

#: The protection profiles implemented, as DTLS-SRTP names them (RFC 5764, RFC 7714).
PROFILES: tuple[str, ...]
#: The largest protected packet (one IPv4 UDP datagram).
MAX_PACKET_LEN: int
__version__: str

@final
class SrtpSender:
    """The sending half of one SRTP session (RFC 3711, RFC 7714): one master key and
    salt, any number of SSRCs, each with its own rollover counter.  A packet index is
    used once per SSRC: a packet whose index is not above the last one protected for its
    SSRC is refused (a repeat would reuse the keystream or the GCM nonce).  Every error
    on bad input is ``ValueError`` (``TypeError`` for arguments of the wrong type)."""

    def __new__(cls, profile: str, master_key: Buffer, master_salt: Buffer) -> SrtpSender: ...
    @property
    def profile(self) -> str: ...
    @property
    def tag_len(self) -> int:
        """Bytes the protection adds to each packet (16 for GCM, 10 for AES-CM)."""
    def protect(self, packet: Buffer) -> bytes:
        """One whole RTP packet, protected."""
    def protect_frame(
        self,
        b0: int,
        payload_type: int,
        first_seq: int,
        timestamp: int,
        ssrc: int,
        extension: bytes,
        payloads: Sequence[Buffer],
    ) -> list[bytes]:
        """The packets of one frame, built and protected: per payload, the header ``b0``
        (V=2, no padding or CSRC; X set exactly when ``extension`` is not empty),
        ``payload_type`` with the marker bit on the last packet, sequence numbers from
        ``first_seq`` (modulo 2^16), ``timestamp``, ``ssrc``; then ``extension`` (a whole
        header extension block, e.g. ``0xBEDE``, length, elements, padding) and the
        payload."""
    def send_frame(
        self,
        fd: int,
        address: tuple[str, int] | tuple[str, int, int, int],
        b0: int,
        payload_type: int,
        first_seq: int,
        timestamp: int,
        ssrc: int,
        extension: bytes,
        payloads: Sequence[Buffer],
    ) -> tuple[list[bytes], int]:
        """The packets of :meth:`protect_frame`, then written in ONE ``sendmmsg(2)`` to
        ``address`` (numeric IPv4 ``(host, port)`` or IPv6 ``(host, port[, flowinfo,
        scope_id])``) on the non-blocking UDP socket ``fd``, with ``MSG_DONTWAIT`` and
        the GIL released: the packets and how many of them, from the first, the kernel
        took.  A full socket buffer (``EAGAIN``, ``ENOBUFS``) takes fewer, or none; any
        other error of the first datagram is ``OSError`` with its errno (the packets'
        SRTP indices are used all the same)."""
