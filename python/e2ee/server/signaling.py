"""The signaling WebSocket's messages, once a client is in (the endpoint that lets it in:
:mod:`e2ee.server.ws_endpoint`).

Every message both ways, every error code and close code, and the rate limits are in
``docs/api.md`` (checked against this module by ``tests/unit/test_docs_api.py``); this
docstring only says how the module is built.

* One :class:`Session` per accepted connection; :data:`HANDLERS` maps a message type to
  its ``on_*`` method.  A client's messages are handled one after the other, in order,
  with a turn for the other clients between two of them, so a burst read in one TCP
  segment cannot starve the other connections' writers.
* Each message first takes from its type's token bucket (:mod:`e2ee.server.limits`);
  a client that keeps sending over its limits is closed with 4029.
* Before a close the server initiates (but 1009), the client gets ``{"type":
  "disconnected", "reason": ...}`` as its last message; its queue keeps room for it.
* Relayed sessions: signaling only; ``publish``/``subscribe`` answer
  ``not_implemented`` and ``signal`` carries the peers' own SDP.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from e2ee.server.connection import Connection, new_id
from e2ee.server.errors import (
    CLOSE_RATE_LIMITED,
    ApiError,
)
from e2ee.server.hub import Hub
from e2ee.server.media import media_error
from e2ee.server.rooms import (
    MAX_PENDING_SUBSCRIPTIONS,
    MAX_STREAMS_PER_CONNECTION,
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    Room,
    Stream,
    Subscription,
)
from e2ee.server.validate import (
    MAX_ID_CHARS,
    check_sdp,
    media_kinds,
    message_id,
    parse_message,
    required_str,
    session_description,
    str_field,
)

__all__ = ["HANDLERS", "SOFT_MESSAGE_CHARS", "Session"]

log = logging.getLogger(__name__)

#: Messages longer than this (characters) get a ``message_too_large`` error.
SOFT_MESSAGE_CHARS = 256 * 1024
MAX_SIGNAL_DATA_BYTES = 8 * 1024
MAX_SIGNAL_KIND_CHARS = 128
MAX_STREAM_NAME_CHARS = 256

Handler = Callable[["Session", dict[str, Any]], Awaitable[dict[str, Any] | None]]


# -- one client -------------------------------------------------------------------------


class Session:
    """The server side of one client's WebSocket."""

    def __init__(self, hub: Hub, room: Room, conn: Connection) -> None:
        self.hub = hub
        self.room = room
        self.conn = conn
        self.limiter = room.budget(conn.jti)

    @property
    def e2ee(self) -> bool:
        return self.room.record.e2ee

    def _require_media(self, action: str) -> None:
        if self.room.record.media_mode == "relayed":
            raise ApiError(
                "not_implemented",
                f"{action} through the server is not built for relayed sessions yet: "
                "in a relayed session peers connect directly (use 'signal' to exchange "
                "their SDP)",
                501,
            )

    def _require_moderator(self, action: str) -> None:
        if self.conn.role != "moderator":
            raise ApiError("forbidden", f"only a moderator may {action}", 403)

    # -- handlers -------------------------------------------------------------------------

    async def on_publish(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        if self.conn.role == "subscriber":
            raise ApiError("forbidden", "a subscriber token cannot publish", 403)
        self._require_media("publishing")
        sdp = required_str(msg, "sdp", max_len=SOFT_MESSAGE_CHARS)
        if msg.get("sdp_type", "offer") != "offer":
            raise ApiError("bad_request", "'sdp_type' must be 'offer'")
        check_sdp(sdp)
        name = str_field(msg, "name", max_len=MAX_STREAM_NAME_CHARS, required=False) or ""
        if len(self.conn.streams) >= MAX_STREAMS_PER_CONNECTION:
            raise ApiError(
                "limit_exceeded",
                f"a connection may publish at most {MAX_STREAMS_PER_CONNECTION} streams",
            )
        has_audio, has_video = media_kinds(sdp)
        if not (has_audio or has_video):
            raise ApiError("bad_request", "the offer has no audio or video section")
        offer = session_description(sdp, "offer")
        router = self.room.router()
        stream_id = new_id()
        try:
            answer = await router.publish(stream_id, offer)
        except ApiError:
            raise
        except Exception as exc:
            raise media_error(exc, "publish") from None
        if not self.conn.alive or self.conn.id not in self.room.connections:
            await _discard(router.unpublish(stream_id))
            return None
        stream = Stream(stream_id, self.conn.id, name, has_audio, has_video)
        reply = {
            "type": "answer",
            "id": msg.get("id"),
            "stream_id": stream_id,
            "sdp": answer.sdp,
            "sdp_type": "answer",
        }
        self.conn.send(reply)  # the answer before the stream_created broadcast
        self.room.add_stream(self.conn, stream)
        return None

    async def on_unpublish(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        stream_id = required_str(msg, "stream_id")
        stream = self.room.streams.get(stream_id)
        if stream is None:
            raise ApiError("unknown_stream", "no such stream in this session")
        if stream.connection_id != self.conn.id:
            raise ApiError("forbidden", "this stream is another connection's", 403)
        await self.room.remove_stream(stream_id, "unpublished")
        return {}

    async def on_subscribe(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        self._require_media("subscribing")
        stream_id = required_str(msg, "stream_id")
        if stream_id not in self.room.streams:
            raise ApiError("unknown_stream", "no such stream in this session")
        if len(self.conn.subscriptions) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
            raise ApiError("limit_exceeded", "too many subscriptions on this connection")
        if self.room.pending_subscriptions(self.conn) >= MAX_PENDING_SUBSCRIPTIONS:
            raise ApiError(
                "limit_exceeded",
                f"at most {MAX_PENDING_SUBSCRIPTIONS} subscriptions may wait for an answer",
            )
        # Also across the token's connections, counting those being set up (the other
        # connections' messages run while this one awaits the router).
        per_token, jti = self.hub.limits.max_pending_subscriptions_per_token, self.conn.jti
        if self.room.pending_subscriptions_of_token(jti) >= per_token:
            raise ApiError(
                "limit_exceeded",
                f"at most {per_token} subscriptions of one token may wait for an answer",
            )
        router = self.room.router()
        sub_id = new_id()
        subscribing = self.room.subscribing
        subscribing[jti] = subscribing.get(jti, 0) + 1
        try:
            offer = await router.subscribe(sub_id, stream_id)
        except ApiError:
            raise
        except Exception as exc:
            raise media_error(exc, "subscribe") from None
        finally:
            if (left := subscribing.pop(jti, 1) - 1) > 0:
                subscribing[jti] = left
        gone = not self.conn.alive or self.conn.id not in self.room.connections
        if gone or stream_id not in self.room.streams:
            await _discard(router.unsubscribe(sub_id))
            if gone:
                return None
            raise ApiError("unknown_stream", "the stream ended while subscribing")
        self.room.add_subscription(self.conn, Subscription(sub_id, stream_id, self.conn.id))
        return {
            "type": "offer",
            "subscription_id": sub_id,
            "stream_id": stream_id,
            "sdp": offer.sdp,
            "sdp_type": "offer",
        }

    async def on_answer(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        sub_id = required_str(msg, "subscription_id")
        sdp = required_str(msg, "sdp", max_len=SOFT_MESSAGE_CHARS)
        if msg.get("sdp_type", "answer") != "answer":
            raise ApiError("bad_request", "'sdp_type' must be 'answer'")
        sub = self.room.subscriptions.get(sub_id)
        if sub is None or sub.connection_id != self.conn.id:
            raise ApiError("unknown_subscription", "no such subscription on this connection")
        if sub.answered:
            raise ApiError("bad_request", "this subscription was already answered")
        check_sdp(sdp)
        answer = session_description(sdp, "answer")
        router = self.room.router()
        sub.settle()  # no expiry while the router takes the answer
        try:
            await router.accept_answer(sub_id, answer)
        except Exception as exc:
            if self.room.subscriptions.get(sub_id) is sub:
                self.room.arm_expiry(sub)
            raise media_error(exc, "answer") from None
        if self.room.subscriptions.get(sub_id) is not sub:
            raise ApiError("unknown_subscription", "the subscription ended while answering")
        sub.answered = True
        return {}

    async def on_unsubscribe(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        await self.room.remove_subscription(self.conn, required_str(msg, "subscription_id"))
        return {}

    async def on_signal(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        to = str_field(msg, "to", max_len=MAX_ID_CHARS, required=False)
        kind = required_str(msg, "kind", max_len=MAX_SIGNAL_KIND_CHARS)
        data = str_field(msg, "data", max_len=MAX_SIGNAL_DATA_BYTES, required=False)
        if data is None:
            if "data" in msg:
                raise ApiError("bad_request", "'data' must be a string")
            data = ""
        if len(data.encode("utf-8", "surrogatepass")) > MAX_SIGNAL_DATA_BYTES:
            raise ApiError("bad_request", f"'data' is over {MAX_SIGNAL_DATA_BYTES} bytes")
        event = {"type": "signal", "from": self.conn.id, "kind": kind, "data": data}
        if not self.limiter.deliver(1 if to is not None else len(self.room.connections) - 1):
            raise ApiError("rate_limited", "too many signal deliveries: slow down", 429)
        if to is not None:
            target = self.room.connections.get(to)
            if target is None:
                raise ApiError("unknown_connection", "no such connection in this session")
            target.send(event)
        else:
            self.room.broadcast(event, exclude=self.conn.id)
        return {}

    async def on_force_disconnect(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        self._require_moderator("force a disconnect")
        cid = required_str(msg, "connection_id")
        await self.room.force_disconnect(cid)
        return {}

    async def on_force_unpublish(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        self._require_moderator("force an unpublish")
        await self.room.remove_stream(required_str(msg, "stream_id"), "force_unpublished")
        return {}

    async def on_disconnect(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        self.conn.send({"type": "ok", "id": msg.get("id")})
        await self.room.remove_connection(self.conn, "disconnected")
        self.conn.close(1000, "bye")
        return None

    async def on_ping(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        return {"type": "pong"}

    # -- dispatch -------------------------------------------------------------------------

    async def _over_limit(self, kind: str, msg_id: object = None) -> bool:
        """Whether a message of type ``kind`` is over this connection's rate limit (then
        refused with ``rate_limited``, and a client that keeps flooding is closed)."""
        if self.limiter.allow(kind):
            return False
        self.conn.send(
            ApiError(
                "rate_limited", f"too many {kind[:40]!r} messages: slow down and retry", 429
            ).body(msg_id, with_id=True)
        )
        if not self.limiter.strike():
            log.warning("connection %s keeps flooding; closing it", self.conn.id)
            await self.room.remove_connection(
                self.conn, "rate_limited", close=(CLOSE_RATE_LIMITED, "sending too fast")
            )
        return True

    async def handle_binary(self) -> None:
        if not await self._over_limit("*"):
            self.conn.send(ApiError("bad_request", "binary messages are not accepted").body())

    async def handle_text(self, text: str) -> None:
        msg_id: object = None
        kind = "*"  # the rate-limit bucket of messages without a usable type
        msg: dict[str, Any] | None = None
        refusal: ApiError | None = None
        try:
            msg = parse_message(text, max_chars=SOFT_MESSAGE_CHARS)
            msg_id = message_id(msg)
        except ApiError as err:
            refusal = err
        if msg is not None and isinstance(msg.get("type"), str):
            kind = msg["type"]
        if await self._over_limit(kind, msg_id):
            return
        try:
            if refusal is not None:
                raise refusal
            assert msg is not None
            if not isinstance(msg.get("type"), str):
                raise ApiError("bad_request", "'type' must be a string")
            handler = HANDLERS.get(kind)
            if handler is None:
                raise ApiError("unknown_type", f"unknown message type {kind[:40]!r}")
            reply = await handler(self, msg)
            if reply is not None:
                self.conn.send({"type": "ok", **reply, "id": msg_id})
        except ApiError as err:
            self.conn.send(err.body(msg_id, with_id=True))
        except Exception:
            log.exception("signaling handler failed on connection %s", self.conn.id)
            self.conn.send(
                ApiError("internal_error", "the server failed to handle the message", 500).body(
                    msg_id, with_id=True
                )
            )


HANDLERS: dict[str, Handler] = {
    "publish": Session.on_publish,
    "unpublish": Session.on_unpublish,
    "subscribe": Session.on_subscribe,
    "answer": Session.on_answer,
    "unsubscribe": Session.on_unsubscribe,
    "signal": Session.on_signal,
    "force_disconnect": Session.on_force_disconnect,
    "force_unpublish": Session.on_force_unpublish,
    "disconnect": Session.on_disconnect,
    "ping": Session.on_ping,
}


async def _discard(aw: Awaitable[Any]) -> None:
    try:
        await aw
    except Exception as exc:
        log.debug("router clean-up failed: %r", exc)
