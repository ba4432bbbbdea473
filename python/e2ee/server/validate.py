"""Checks of the fields of a signaling message, and the little the server reads of SDP.

Every failure is an :class:`~e2ee.server.errors.ApiError` ``bad_request`` that the client
sees as the reply to its message; the connection stays open.
"""

from __future__ import annotations

import json
import re
from typing import Any

from e2ee.server.errors import ApiError

__all__ = [
    "MAX_ID_CHARS",
    "MAX_SDP_BYTES",
    "MAX_SDP_MEDIA_SECTIONS",
    "check_sdp",
    "media_kinds",
    "message_id",
    "parse_message",
    "required_str",
    "session_description",
    "str_field",
]

#: Identifiers (stream, subscription, connection, message ``id``) are at most this long.
MAX_ID_CHARS = 64
#: An SDP offer or answer is refused (``bad_request``) above this size, before parsing.
MAX_SDP_BYTES = 64 * 1024
#: ... and above this many media (``m=``) sections.  A stream has one audio and one video
#: section; aiortc's set-up costs ~30 ms of the event loop per section, so the cap bounds
#: what one hostile offer can stall media forwarding for.
MAX_SDP_MEDIA_SECTIONS = 4


def parse_message(text: str, *, max_chars: int) -> dict[str, Any]:
    """A client message: a JSON object, at most ``max_chars`` characters long."""
    if len(text) > max_chars:
        raise ApiError("message_too_large", f"messages are limited to {max_chars} bytes")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise ApiError("bad_json", "the message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ApiError("bad_request", "a message must be a JSON object")
    return msg


def message_id(msg: dict[str, Any]) -> object:
    """The ``id`` to echo in the reply to ``msg``: ``None``, a string of at most
    :data:`MAX_ID_CHARS` characters or an integer."""
    msg_id = msg.get("id")
    if msg_id is not None and not (
        (isinstance(msg_id, str) and len(msg_id) <= MAX_ID_CHARS)
        or (isinstance(msg_id, int) and not isinstance(msg_id, bool))
    ):
        raise ApiError("bad_request", "'id' must be a short string or an integer")
    return msg_id


def str_field(msg: dict[str, Any], name: str, *, max_len: int, required: bool = True) -> str | None:
    """``msg[name]``: a string of at most ``max_len`` characters, or ``None`` if absent
    and not ``required`` (a ``required`` one must also be non-empty)."""
    value = msg.get(name)
    if value is None:
        if required:
            raise ApiError("bad_request", f"{name!r} is required")
        return None
    if not isinstance(value, str):
        raise ApiError("bad_request", f"{name!r} must be a string")
    if required and not value:
        raise ApiError("bad_request", f"{name!r} must not be empty")
    if len(value) > max_len:
        raise ApiError("bad_request", f"{name!r} is too long (at most {max_len})")
    return value


def required_str(msg: dict[str, Any], name: str, *, max_len: int = MAX_ID_CHARS) -> str:
    """``msg[name]``: a non-empty string of at most ``max_len`` characters."""
    value = str_field(msg, name, max_len=max_len)
    assert value is not None
    return value


def check_sdp(sdp: str) -> None:
    """Refuses an SDP too big to parse cheaply: over :data:`MAX_SDP_BYTES` or with more
    than :data:`MAX_SDP_MEDIA_SECTIONS` media sections."""
    if len(sdp) > MAX_SDP_BYTES or len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise ApiError("bad_request", f"the SDP is over {MAX_SDP_BYTES} bytes")
    sections = sdp.count("\nm=") + sdp.startswith("m=")
    if sections > MAX_SDP_MEDIA_SECTIONS:
        raise ApiError(
            "bad_request", f"the SDP has over {MAX_SDP_MEDIA_SECTIONS} media sections ({sections})"
        )


_M_LINE = re.compile(r"^m=(audio|video)\s+(\d+)", re.MULTILINE)


def media_kinds(sdp: str) -> tuple[bool, bool]:
    """(has_audio, has_video) of an SDP offer: its active ``m=`` sections."""
    kinds = {m.group(1) for m in _M_LINE.finditer(sdp) if m.group(2) != "0"}
    return "audio" in kinds, "video" in kinds


def session_description(sdp: str, kind: str) -> Any:
    """An aiortc ``RTCSessionDescription`` (aiortc imported only now); ``not_implemented``
    if aiortc is not installed."""
    try:
        from aiortc import RTCSessionDescription
    except ImportError:
        raise ApiError("not_implemented", "media is not available on this server") from None
    return RTCSessionDescription(sdp=sdp, type=kind)
