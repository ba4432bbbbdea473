"""RTP header extensions that carry information derived from the media itself, and how an
end-to-end encrypted session keeps them from being negotiated.  Standard library only.

RTP header extensions travel outside SFrame, readable by the router.  The client-to-mixer
audio level (RFC 6464) is computed from the raw audio before encryption: with it the
router sees voice activity, frame by frame (RFC 6464 §5 warns about exactly that).  The
mixer-to-client form (RFC 6465) carries the same per contributing source.  In an E2EE
session neither is negotiated: clients strip them from every description they apply or
send, and the router strips them from the offers it receives and makes.
"""

from __future__ import annotations

__all__ = [
    "ABS_SEND_TIME",
    "MEDIA_DERIVED_EXTENSIONS",
    "extmap_uris",
    "strip_extensions",
    "strip_media_derived_extensions",
]

#: The sender's transmit time, for the receiver's bandwidth estimate (REMB); lower case.
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

#: Header extension URIs whose values are computed from the media (lower case).
MEDIA_DERIVED_EXTENSIONS: frozenset[str] = frozenset(
    {
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",  # RFC 6464
        "urn:ietf:params:rtp-hdrext:csrc-audio-level",  # RFC 6465
    }
)


def _extmap_uri(line: str) -> str | None:
    """The URI of an ``a=extmap:<id>[/<direction>] <uri> [<attributes>]`` line (RFC 8285
    §8), ``None`` for any other line (``a=extmap-allow-mixed`` included)."""
    if not line.startswith("a=extmap:"):
        return None
    parts = line.split()
    return parts[1] if len(parts) >= 2 else None


def extmap_uris(sdp: str) -> list[str]:
    """Every header extension URI an SDP's ``a=extmap`` lines name, in order."""
    return [uri for line in sdp.splitlines() if (uri := _extmap_uri(line)) is not None]


def strip_media_derived_extensions(sdp: str) -> str:
    """``sdp`` without the ``a=extmap`` lines of :data:`MEDIA_DERIVED_EXTENSIONS`.

    Pure text: every other line, and every line ending, is kept as is.  Apply it to a
    remote offer or answer before ``setRemoteDescription`` (aiortc then negotiates only
    the extensions both sides list) and to a local offer before sending it.  Idempotent.
    """
    return strip_extensions(sdp, MEDIA_DERIVED_EXTENSIONS)


def strip_extensions(sdp: str, uris: frozenset[str]) -> str:
    """``sdp`` without the ``a=extmap`` lines naming one of ``uris`` (lower case); pure
    text, as :func:`strip_media_derived_extensions`."""
    out = []
    for line in sdp.splitlines(keepends=True):
        uri = _extmap_uri(line)
        if uri is not None and uri.lower() in uris:
            continue
        out.append(line)
    return "".join(out)
