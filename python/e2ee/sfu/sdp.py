"""What the router reads from and pins in SDP: VP8 (+RTX) and Opus only, and the
publisher's media SSRC.

Codecs
    The router forwards frames byte for byte and never transcodes, so every audio/video
    m-line must offer Opus / VP8: :func:`check_codecs` raises :class:`CodecNotAllowed`
    otherwise.  :func:`codec_preferences` is what the router passes to
    ``setCodecPreferences`` on each of its transceivers, so its answers (to publishers)
    and offers (to subscribers) negotiate only VP8 (+RTX) or Opus.

Media-derived header extensions
    In an E2EE session the router never negotiates the RTP header extensions whose values
    are computed from the media (:data:`~e2ee.wire.extmap.MEDIA_DERIVED_EXTENSIONS`: the
    RFC 6464 / RFC 6465 audio levels, which would show it who speaks when): it strips them
    from publishers' offers before applying them, so its answers leave them out, and from
    its own offers to subscribers (:func:`without_media_derived_extensions`).

Validation
    :func:`parse_checked` checks what aiortc's parser assumes before handing the text to
    it (every audio/video m-line has formats, a DTLS fingerprint and ICE credentials at
    session or media level) and turns any parse failure (aiortc asserts on some) into
    :class:`InvalidSdp`, a ``ValueError`` the server answers with ``bad_request``.

Off the event loop
    Parsing a big description costs tens of milliseconds of pure Python (a 64 KiB offer
    with 16 m-sections, ~25 ms), time the event loop that forwards media would stall.
    :func:`check_off_loop` does everything above (strip, validate, parse, codec check)
    on the worker thread of a pool shared by the process (:data:`PARSE_WORKERS`: many
    parses queue rather than take threads); the caller gets the parsed description back
    on its loop.  Holding the GIL, the parsing thread still hands it to the loop every
    switch interval (5 ms by default).  aiortc's ``setRemoteDescription`` parses the
    text once more, on the loop (no public way to hand it the parsed description).

Media SSRC
    PLIs to a publisher name the publisher's media SSRC from its offer
    (:func:`media_ssrc`): the first SSRC of the FID group, else the first ``a=ssrc``,
    as aiortc does for its receive parameters (rtcpeerconnection.py:1253-1269).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from e2ee.sfu.errors import CodecNotAllowed
from e2ee.wire.extmap import (
    ABS_SEND_TIME,
    MEDIA_DERIVED_EXTENSIONS,
    strip_extensions,
    strip_media_derived_extensions,
)

__all__ = [
    "ALLOWED_CODECS",
    "MEDIA_DERIVED_EXTENSIONS",
    "PARSE_WORKERS",
    "InvalidSdp",
    "check_codecs",
    "check_off_loop",
    "codec_preferences",
    "media_ssrc",
    "parse_checked",
    "strip_media_derived_extensions",
    "subscriber_offer",
    "validate_sdp",
    "without_media_derived_extensions",
]

#: The one media codec the router forwards per m-line kind (lower-case MIME type).
ALLOWED_CODECS = {"video": "video/vp8", "audio": "audio/opus"}


class InvalidSdp(ValueError):
    """A session description the router cannot use (malformed or incomplete)."""


#: The longest SDP the router parses (characters).
MAX_SDP_CHARS = 64 * 1024


def validate_sdp(text: str, what: str) -> None:
    """Raise :class:`InvalidSdp` unless ``text`` is SDP whose every m-line has a port,
    a protocol and (audio/video) formats, and whose every m-line has a DTLS fingerprint
    and ICE ufrag/pwd, at session or media level."""
    if len(text) > MAX_SDP_CHARS:
        raise InvalidSdp(f"{what}: the SDP is over {MAX_SDP_CHARS} characters")
    session: set[str] = set()
    sections: list[tuple[str, set[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            fields = line[2:].split()
            kind = fields[0] if fields else ""
            if len(fields) < 3 or (kind in ALLOWED_CODECS and len(fields) < 4):
                raise InvalidSdp(f"{what}: an m-line without formats ({line[:60]!r})")
            sections.append((kind, set()))
        elif line.startswith("a="):
            name = line[2:].split(":", 1)[0]
            (sections[-1][1] if sections else session).add(name)
    if not sections:
        raise InvalidSdp(f"{what}: no m-lines")
    for kind, attrs in sections:
        have = attrs | session
        for needed, label in (
            ("fingerprint", "a DTLS fingerprint"),
            ("ice-ufrag", "an ICE ufrag"),
            ("ice-pwd", "an ICE password"),
        ):
            if needed not in have:
                raise InvalidSdp(f"{what}: the {kind or '?'} m-line has no {label}")


def parse_checked(text: str, what: str) -> aiortc_sdp.SessionDescription:
    """:func:`validate_sdp`, then aiortc's parser; any failure is :class:`InvalidSdp`."""
    validate_sdp(text, what)
    try:
        return aiortc_sdp.SessionDescription.parse(text)
    except (AssertionError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise InvalidSdp(f"{what}: malformed SDP") from exc


#: Worker threads of the process-wide SDP parsing pool (further parses wait their turn).
#: One: parsing is pure Python and holds the GIL, so a second thread would add no
#: throughput, only a second contender for the GIL against the event loop.
PARSE_WORKERS = 1
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _parse_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(PARSE_WORKERS, thread_name_prefix="e2ee-sdp")
        return _pool


def _check(text: str, what: str, e2ee: bool) -> tuple[str, aiortc_sdp.SessionDescription]:
    if e2ee:
        text = strip_media_derived_extensions(text)
    description = parse_checked(text, what)
    check_codecs(description, what, e2ee)
    return text, description


async def check_off_loop(
    text: str, what: str, *, e2ee: bool
) -> tuple[str, aiortc_sdp.SessionDescription]:
    """On the shared parsing pool: ``text`` without media-derived extensions if ``e2ee``
    (:func:`strip_media_derived_extensions`), :func:`parse_checked` and
    :func:`check_codecs`.  Returns the text to apply and its parsed description;
    raises :class:`InvalidSdp` or :class:`CodecNotAllowed`."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_parse_pool(), _check, text, what, e2ee)


def codec_preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities for ``kind``, reduced to VP8 + RTX (video) or Opus (audio)."""
    wanted = {ALLOWED_CODECS[kind], "video/rtx"} if kind == "video" else {ALLOWED_CODECS[kind]}
    caps = RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in caps if c.mimeType.lower() in wanted]


def check_codecs(description: aiortc_sdp.SessionDescription, what: str, e2ee: bool) -> None:
    """Raise :class:`CodecNotAllowed` unless every audio/video m-line offers Opus/VP8."""
    for media in description.media:
        if media.kind not in ALLOWED_CODECS:
            continue
        offered = [c.mimeType for c in media.rtp.codecs]
        if not any(m.lower() == ALLOWED_CODECS[media.kind] for m in offered):
            reason = (
                "an end-to-end encrypted session allows only VP8 video and Opus audio"
                if e2ee
                else "this router forwards only VP8 video and Opus audio (it never transcodes)"
            )
            raise CodecNotAllowed(
                f"{what}: {media.kind} m-line (mid {media.rtp.muxId!r}) offers "
                f"{', '.join(offered) or 'no codecs'}; {reason}"
            )


def media_ssrc(media: aiortc_sdp.MediaDescription) -> int | None:
    """The sender's media SSRC announced in an m-line, ``None`` if it has no ``a=ssrc``."""
    for group in media.ssrc_group:
        if group.semantic == "FID" and group.items:
            return int(group.items[0])
    if media.ssrc:
        return int(media.ssrc[0].ssrc)
    return None


def without_media_derived_extensions(description: RTCSessionDescription) -> RTCSessionDescription:
    """``description`` without the ``a=extmap`` lines of media-derived header extensions
    (:func:`~e2ee.wire.extmap.strip_media_derived_extensions`), same type."""
    return RTCSessionDescription(
        sdp=strip_media_derived_extensions(description.sdp), type=description.type
    )


#: What the router never offers a subscriber: abs-send-time, which only feeds the
#: subscriber's bandwidth estimate back as REMB (one RTCP packet per few media packets
#: from aiortc receivers), and the router adapts no bitrate.
_NOT_OFFERED_TO_SUBSCRIBERS = frozenset({ABS_SEND_TIME})


def subscriber_offer(description: RTCSessionDescription, *, e2ee: bool) -> RTCSessionDescription:
    """The router's offer to a subscriber as sent: without abs-send-time and, in an E2EE
    router, without media-derived header extensions; same type."""
    uris = _NOT_OFFERED_TO_SUBSCRIBERS | (MEDIA_DERIVED_EXTENSIONS if e2ee else frozenset())
    return RTCSessionDescription(sdp=strip_extensions(description.sdp, uris), type=description.type)
