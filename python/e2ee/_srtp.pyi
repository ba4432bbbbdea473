# Hand-written stub of the Rust extension (rust/e2ee-srtp-py), checked by mypy.stubtest.
# The router's SRTP sender: its own extension, so that a process which only routes media
# never loads e2ee._core.  Reached only through e2ee.rtc.srtp.  Also RtpReader, the bench
# subscribers' native receive path (no keys; the router never uses it).
from collections.abc import Sequence
from typing import final

from typing_extensions import Buffer

__all__ = ["MAX_PACKET_LEN", "PROFILES", "Fanout", "RtpReader", "SrtpSender", "__version__"]

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

@final
class Fanout:
    """One frame to every subscriber of a published track in one call (the router's
    egress).  Each leg is one subscriber: its transport's :class:`SrtpSender` (shared
    with the transport's other tracks), its non-blocking UDP socket and remote address,
    its RTP header (``b0``, ``payload_type``, ``ssrc``; sequence numbers from
    ``first_seq``, modulo 2^16; the frame's timestamp plus ``timestamp_offset``; the
    header extension block ``extension``, whose 3 bytes at ``abs_send_time_at`` take
    each frame's abs-send-time) and the last ``history`` protected packets, for NACKs.
    :meth:`send` protects every leg's packets (sequence numbers are used whether or not
    the packets leave) and writes each direct leg's in ONE ``sendmmsg(2)``, with the GIL
    released; runs of equal-size packets go as one UDP GSO message (``UDP_SEGMENT``)
    where the socket has it (probed per leg; a refusal sends the same bytes again
    without GSO and stops it for that leg).  Never sends an unprotected packet."""

    def __new__(cls, history: int = 256) -> Fanout:
        """``history``: a power of two up to 4096 (``ValueError`` otherwise)."""
    gso: bool
    """Whether GSO is tried at all (on by default)."""
    @property
    def gso_sends(self) -> int:
        """GSO messages the kernel took, so far."""
    @property
    def syscalls(self) -> int:
        """``sendmmsg`` calls made, so far."""
    def add(
        self,
        sender: SrtpSender,
        fd: int,
        address: tuple[str, int] | tuple[str, int, int, int],
        b0: int,
        payload_type: int,
        ssrc: int,
        first_seq: int,
        timestamp_offset: int,
        extension: bytes,
        abs_send_time_at: int | None = None,
    ) -> int:
        """A new leg (header arguments as :meth:`SrtpSender.protect_frame`'s); its
        number.  The leg keeps a duplicate of ``fd`` (closed with the leg), so closing
        ``fd`` never makes it write to whatever reuses the number.  ``ValueError`` for a
        header that could not be built or an ``fd`` that is not a datagram socket."""
    def remove(self, leg: int) -> tuple[int, list[tuple[int, bytes]]]:
        """Removes ``leg``: its next sequence number and its history ``(seq, packet)``,
        oldest first."""
    def packet(self, leg: int, seq: int) -> bytes | None:
        """Packet ``seq`` of ``leg`` as protected and first sent, while the history
        holds it (a NACK's answer)."""
    def next_seq(self, leg: int) -> int: ...
    def uses_gso(self, leg: int) -> bool:
        """Whether ``leg``'s runs go as GSO messages now."""
    def __len__(self) -> int: ...
    def send(
        self,
        direct: Sequence[int],
        buffered: Sequence[int],
        payloads: Sequence[Buffer],
        timestamp: int,
        abs_send_time: int,
    ) -> list[tuple[int, list[bytes] | int | str]]:
        """One frame (its RTP payloads, the publisher's timestamp, a 24-bit
        abs-send-time) to the legs ``direct``, written now, and ``buffered``, built
        only.  Returns what did not all leave, per leg: the packets not taken, in order
        (every packet of a buffered leg; a direct leg's from the first the kernel did not
        take, its buffer full), for the caller to send after what it holds; an ``errno``
        when the kernel refused the leg's first packet for another reason (the packets
        are lost); a message when the leg's packets could not be protected (none left).
        ``ValueError`` (nothing sent) for an unknown or repeated leg, or a frame of no or
        more than ``history`` packets."""

@final
class RtpReader:
    """The native receive path of ``e2ee bench router``'s light subscribers (never used
    by the router): one ``epoll`` over many non-blocking UDP sockets (the caller's; it
    sets ``SO_TIMESTAMPNS`` and calls :meth:`remove_socket` before closing one), each
    ready socket drained with ``recvmmsg(2)``.  Per datagram, as the Python path
    (``router_worker/light.py``): RTP (RFC 7983 §7: first byte 128..191, longer than 12
    bytes) goes by SSRC to its track, learnt from the payload type of its first packet
    (unknown payload types, e.g. RTX, are counted); RTCP (second byte 192..223, RFC 5761
    §4) is counted and dropped; anything else (STUN, DTLS) is handed back whole.  Each
    track finds its frames from the RTP headers alone (a new timestamp starts one, the
    marker ends it, a missing packet withholds it) and keeps the packets of the frames
    to be decrypted: the next one after :meth:`set_probe`, and video frames that follow
    missing packets.  Counters are per track and per subscription.  A datagram with a
    ``UDP_GRO`` segment size (udp(7)) is cut into packets of that size first."""

    def __new__(cls) -> RtpReader: ...
    def fileno(self) -> int:
        """The ``epoll`` descriptor: readable when a socket is (for ``loop.add_reader``)."""
    def add_subscription(self) -> int:
        """A new subscription's number."""
    def add_track(self, subscription: int, payload_types: Sequence[int], video: bool) -> int:
        """A new track of ``subscription`` (its RTP payload types; ``video``: VP8 frames
        of many packets, else Opus, a packet a frame), with its number; it keeps the
        packets of its first frame."""
    def add_socket(self, fd: int, subscription: int) -> None:
        """Read the UDP socket ``fd`` for ``subscription`` (``OSError`` from ``epoll_ctl``)."""
    def remove_socket(self, fd: int) -> None:
        """Stop reading ``fd`` (do this before closing it); unknown ones are ignored."""
    def set_probe(self, track: int, on: bool) -> None:
        """Keep the packets of ``track``'s next frame (``True``; once: the next frame
        kept uses the request up) or only of uncertain video frames (``False``)."""
    def take_counters(self, track: int) -> tuple[int, int, int, int, int]:
        """``(packets, bytes, seq_gaps, incomplete, late)`` of ``track`` since the last
        call; they restart from zero."""
    def subscription_counters(self, subscription: int) -> tuple[int, int]:
        """``(rtcp, other)``: RTCP packets dropped and RTP packets of no track, so far."""
    @property
    def truncated(self) -> int:
        """Datagrams dropped for not fitting the buffer (none: it holds 64 KiB)."""
    @property
    def coalesced(self) -> int:
        """Datagrams that held several packets (``UDP_GRO`` on the socket: the sender's
        GSO sends arrive whole), each handled packet by packet."""
    def drain(
        self, rounds: int = 16
    ) -> tuple[
        list[tuple[int, int, int, list[bytes] | None, bool]],
        list[tuple[int, bytes, tuple[str, int] | tuple[str, int, int, int]]],
        list[tuple[int, int]],
        int,
    ]:
        """Up to ``rounds`` times: every ready socket, up to 256 datagrams each, without
        blocking.  Returns ``(frames, passed, errors, packets)``: per complete frame
        ``(track, rtp timestamp, arrival ns, its packets or None, uncertain)``, arrival
        being the kernel's receive time of its last packet moved to CLOCK_MONOTONIC (the
        time of reading where the kernel gave none); per datagram that is not RTP or RTCP
        ``(fd, data, source address)`` as asyncio gives it; per socket that failed
        ``(fd, errno)``; and how many packets were read (GRO datagrams count each
        packet)."""
