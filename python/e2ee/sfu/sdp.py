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

Media SSRC
    PLIs to a publisher name the publisher's media SSRC from its offer
    (:func:`media_ssrc`): the first SSRC of the FID group, else the first ``a=ssrc``,
    as aiortc does for its receive parameters (rtcpeerconnection.py:1253-1269).
"""

from __future__ import annotations

from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from e2ee.sfu.errors import CodecNotAllowed
from e2ee.wire.extmap import MEDIA_DERIVED_EXTENSIONS, strip_media_derived_extensions

__all__ = [
    "ALLOWED_CODECS",
    "MEDIA_DERIVED_EXTENSIONS",
    "check_codecs",
    "codec_preferences",
    "media_ssrc",
    "strip_media_derived_extensions",
    "without_media_derived_extensions",
]

#: The one media codec the router forwards per m-line kind (lower-case MIME type).
ALLOWED_CODECS = {"video": "video/vp8", "audio": "audio/opus"}


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
