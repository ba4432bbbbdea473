"""Which SSRC a remote sender uses for a transceiver's media, read from the remote SDP."""

from __future__ import annotations

from aiortc import sdp

__all__ = ["remote_media_ssrcs"]


def remote_media_ssrcs(description_sdp: str, mid: str) -> list[int]:
    """The remote sender's media SSRC for the m-section ``mid``, as aiortc itself finds
    it: the first SSRC of the ``FID`` group (or the first ``a=ssrc``) of that m-section.
    Empty if the section has none or the SDP does not parse."""
    try:
        parsed = sdp.SessionDescription.parse(description_sdp)
        for media in parsed.media:
            if media.rtp.muxId == mid and media.ssrc:
                fid = [g for g in media.ssrc_group if g.semantic == "FID"]
                return [int(fid[0].items[0]) if fid else media.ssrc[0].ssrc]
    except Exception:  # pragma: no cover - the description was already applied
        return []
    return []
