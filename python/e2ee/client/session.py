"""A Python participant in an e2ee session: signaling, publishing and subscribing with
aiortc, and end-to-end encryption of every track when the session has ``e2ee`` on.

    session = Session("http://127.0.0.1:8080", session_id, token, encryption_secret=secret)
    await session.connect()
    publisher = await session.publish(video=my_video_track, audio=my_audio_track)
    session.on("stream_created", lambda event: ...)
    subscriber = await session.subscribe(stream_id)
    frame = await subscriber.video.recv()          # decrypted and decoded
    await session.set_encryption_secret("a new shared secret")
    await session.disconnect()

The router never sees a key: this client encrypts after its encoders and decrypts before
its decoders (:mod:`e2ee.transform.protect`).

The client is the trust anchor, not the server (docs/protocol.md §1).  Given an
encryption secret, it requires end-to-end encryption: a server hello without it is
refused at connect (:class:`E2eeRequired`), and the hello's cipher suite and PBKDF2
iteration count must pass the application's :class:`~e2ee.wire.params.SessionPolicy`
(default ``SessionPolicy()``: suites 5 and 6, at least 100,000 iterations;
:class:`~e2ee.errors.WeakSessionParameters` otherwise), all before any key is derived
or any media leaves.  In an E2EE session every peer connection is protected, and every
description it applies or sends is stripped of media-derived RTP header extensions
(:func:`~e2ee.wire.extmap.strip_media_derived_extensions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from e2ee.client.errors import E2eeRequired, SessionError
from e2ee.client.policy import E2eeParams, check_hello
from e2ee.crypto import normalize_secret
from e2ee.crypto.keyring import KeyRing
from e2ee.errors import EncryptionSecretMissing
from e2ee.rtc import net
from e2ee.transform.protect import E2eeEvent, E2eeTransform, protect
from e2ee.wire.extmap import strip_media_derived_extensions
from e2ee.wire.params import SessionPolicy

__all__ = ["E2eeRequired", "Publisher", "Session", "SessionError", "Subscriber"]

net.apply_environment()
log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]


@dataclass
class Publisher:
    """A stream this client publishes."""

    stream_id: str
    pc: RTCPeerConnection
    transform: E2eeTransform | None

    def stats(self) -> list[dict[str, Any]]:
        return self.transform.stats() if self.transform else []


@dataclass
class Subscriber:
    """A stream this client receives; ``audio``/``video`` are the decoded tracks."""

    stream_id: str
    subscription_id: str
    pc: RTCPeerConnection
    transform: E2eeTransform | None
    audio: MediaStreamTrack | None = None
    video: MediaStreamTrack | None = None
    events: list[E2eeEvent] = field(default_factory=list)

    def stats(self) -> list[dict[str, Any]]:
        return self.transform.stats() if self.transform else []


class Session:
    """One connection to one session on an e2ee server.

    ``encryption_secret``: given (here or with :meth:`set_encryption_secret` before
    :meth:`connect`), the session must be end-to-end encrypted, or :meth:`connect`
    refuses it.  ``policy`` is what the client accepts of the server's cipher suite and
    PBKDF2 iteration count (default ``SessionPolicy()``, :mod:`e2ee.wire.params`);
    to join a session with fewer iterations, lower the floor explicitly, e.g.
    ``SessionPolicy(min_iterations=1000)`` in tests, or pin the exact values with
    ``pin_suite`` and ``pin_iterations``.
    """

    def __init__(
        self,
        url: str,
        session_id: str,
        token: str,
        *,
        encryption_secret: str | None = None,
        policy: SessionPolicy | None = None,
        rtc_configuration: RTCConfiguration | None = None,
        grace_period: float = 10.0,
        request_timeout: float = 15.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.session_id = session_id
        self._token = token
        self._secret = encryption_secret
        self._accepted: list[str] = []  # accepted before connect, applied at connect
        self.policy = SessionPolicy() if policy is None else policy
        self._e2ee = False
        self._rtc = rtc_configuration or RTCConfiguration(iceServers=[])
        self._grace = grace_period
        self._timeout = request_timeout
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self.ring: KeyRing | None = None
        self.info: dict[str, Any] = {}
        self.connection: dict[str, Any] = {}
        self.connections: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, dict[str, Any]] = {}
        self.publishers: dict[str, Publisher] = {}
        self.subscribers: dict[str, Subscriber] = {}
        self.closed = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- events ----------------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> None:
        """Calls ``handler(message)`` for server events (``connection_created``,
        ``connection_destroyed``, ``stream_created``, ``stream_destroyed``,
        ``subscriber_count``, ``signal``, ``disconnected``) and for the E2EE states of
        subscribed streams (``encryption_secret_mismatch``, ``encryption_secret_match``,
        ``decryption_error``, with ``stream_id``)."""
        self._handlers.setdefault(event, []).append(handler)

    def _emit(self, event: str, message: dict[str, Any]) -> None:
        for handler in self._handlers.get(event, []):
            try:
                result = handler(message)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)  # keep a reference until it is done
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                log.exception("handler for %s failed", event)

    # -- connecting --------------------------------------------------------------------

    @property
    def e2ee(self) -> bool:
        """Whether this connection encrypts end to end.  Decided by the client at
        :meth:`connect`: true exactly when it was given a secret (the server's hello is
        checked against that, never followed)."""
        return self._e2ee

    async def connect(self) -> None:
        """Joins the session, after checking the server's hello against this client.

        With an encryption secret: :class:`E2eeRequired` if the server offers a session
        without end-to-end encryption, :class:`~e2ee.errors.WeakSessionParameters` if
        its suite or iteration count fails :attr:`policy`,
        :class:`~e2ee.errors.InvalidEncryptionSecret` for a secret that is not 8 to 256
        characters.  Without one: :class:`EncryptionSecretMissing` in an E2EE session.
        On any of these the connection is closed before anything is sent.
        """
        self._http = aiohttp.ClientSession()
        url = f"{self.url}/v1/sessions/{self.session_id}/ws"
        try:
            self._ws = await self._http.ws_connect(url, params={"token": self._token})
            first = await self._ws.receive_json(timeout=self._timeout)
            if not isinstance(first, dict):
                raise SessionError("protocol_error", "the server's hello is not an object")
            if first.get("type") == "error":
                raise SessionError(first.get("code", "error"), first.get("message", ""))
            session = first.get("session")
            if first.get("type") != "session" or not isinstance(session, dict):
                raise SessionError("protocol_error", "the server's hello has no session")
            params = check_hello(session, secret_given=self._wants_e2ee, policy=self.policy)
            if params is not None:
                await self._make_ring(params)
        except BaseException:
            await self._close_transport()
            raise
        self._e2ee = params is not None
        self.info = session
        self.connection = first.get("connection", {})
        self.connections = {c["id"]: c for c in first.get("connections", [])}
        self.streams = {s["id"]: s for s in first.get("streams", [])}
        self._reader = asyncio.create_task(self._read())

    @property
    def _wants_e2ee(self) -> bool:
        # The application gave a secret (to send under, or only to accept).
        return self._secret is not None or bool(self._accepted)

    async def _make_ring(self, params: E2eeParams) -> None:
        if self._secret is None:
            raise EncryptionSecretMissing(
                "this session is end-to-end encrypted: set an encryption secret to connect"
            )
        ring = KeyRing(
            self.session_id,
            suite=params.suite,
            kdf_iterations=params.kdf_iterations,
            grace_period=self._grace,
        )
        await ring.set_secret_async(self._secret)
        for secret in self._accepted:
            await ring.accept_secret_async(secret)
        self._accepted.clear()
        self.ring = ring

    async def set_encryption_secret(self, secret: str) -> None:
        """Sets or changes the secret, also while connected: every published track
        switches to it at its next frame (and sends a key frame); the previous secret
        is still accepted from others for the grace period.  A secret that was not
        accepted first (:meth:`accept_encryption_secret`) ends any planned change.

        Set before :meth:`connect`, it makes end-to-end encryption required."""
        if self.ring is not None:
            await self.ring.set_secret_async(secret)
        else:
            normalize_secret(secret)  # InvalidEncryptionSecret now, not at connect
        self._secret = secret

    async def accept_encryption_secret(self, secret: str) -> None:
        """Receives under ``secret`` too, without sending under it yet: the first step
        of a planned change (:meth:`~e2ee.crypto.keyring.KeyRing.accept_secret`).

        A planned change, so that no receiver ever sees a mismatch:

        1. The application delivers the new secret to every participant (its own
           channel, never the server's).
        2. Everyone calls ``accept_encryption_secret(new)`` and confirms.  Each now
           decrypts frames under the old and the new secret, and still sends under the
           old one.
        3. Once everyone has confirmed, everyone calls ``set_encryption_secret(new)``.
           Each track moves to a fresh KID under the new secret (with a key frame);
           every receiver already holds it.  The old secret stays accepted for the
           grace period, which must cover the time between the first and the last
           participant's step 3.

        A :meth:`set_encryption_secret` of another secret instead ends the plan (the
        accepted secret is then only held for the grace period).  Before :meth:`connect`
        the secret is validated and applied at connect, after the current one.
        Raises :class:`~e2ee.errors.InvalidEncryptionSecret` for a secret that is not 8
        to 256 characters.
        """
        if self.ring is not None:
            await self.ring.accept_secret_async(secret)
        else:
            normalize_secret(secret)
            self._accepted = [*self._accepted, secret][-2:]

    # -- requests ----------------------------------------------------------------------

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Sends one message and waits for its reply; errors raise :class:`SessionError`."""
        if self._ws is None or self._ws.closed:
            raise SessionError("not_connected", "the session is not connected")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._ws.send_str(json.dumps({**message, "id": rid}))
            reply = await asyncio.wait_for(fut, self._timeout)
        finally:
            self._pending.pop(rid, None)
        if reply.get("type") == "error":
            raise SessionError(reply.get("code", "error"), reply.get("message", ""))
        return reply

    async def signal(self, kind: str, data: str, *, to: str | None = None) -> None:
        msg: dict[str, Any] = {"type": "signal", "kind": kind, "data": data}
        if to is not None:
            msg["to"] = to
        await self.request(msg)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    log.warning("server sent invalid JSON")
                    continue
                self._dispatch(data)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(SessionError("disconnected", "the connection closed"))
            self.closed.set()

    def _dispatch(self, data: dict[str, Any]) -> None:
        rid = data.get("id")
        if rid is not None and rid in self._pending:
            self._pending[rid].set_result(data)
            return
        kind = data.get("type", "")
        if kind == "connection_created":
            self.connections[data["connection"]["id"]] = data["connection"]
        elif kind == "connection_destroyed":
            self.connections.pop(data["connection"]["id"], None)
        elif kind == "stream_created":
            self.streams[data["stream"]["id"]] = data["stream"]
        elif kind == "stream_destroyed":
            self.streams.pop(data["stream"]["id"], None)
            self.publishers.pop(data["stream"]["id"], None)
        self._emit(kind, data)

    # -- media -------------------------------------------------------------------------

    def _check_media(self, action: str) -> None:
        """Refuses ``action`` before any peer connection exists unless its media will be
        what the application asked for: end to end encrypted when it gave a secret."""
        if self._ws is None or self._ws.closed:
            raise SessionError("not_connected", "the session is not connected")
        if self._e2ee:
            if self.ring is None or not self.ring.has_secret:
                raise EncryptionSecretMissing(
                    f"{action} in an end-to-end encrypted session needs a secret"
                )
        elif self._wants_e2ee:
            raise E2eeRequired(
                f"{action} refused: this session is not end-to-end encrypted, and the "
                "application gave an encryption secret"
            )

    def _protect(self, pc: RTCPeerConnection) -> E2eeTransform | None:
        """The connection's E2EE transform; ``None`` only in a session without E2EE that
        the application joined without a secret."""
        if not self._e2ee:
            if self._wants_e2ee:
                raise E2eeRequired("this session is not end-to-end encrypted")
            return None
        if self.ring is None or not self.ring.has_secret:
            raise EncryptionSecretMissing("an end-to-end encrypted session needs a secret")
        return protect(pc, self.ring)

    def _sdp(self, sdp: object) -> str:
        """A description to apply or to send: in an E2EE session, without media-derived
        RTP header extensions (the audio level would show the router voice activity)."""
        if not isinstance(sdp, str):
            raise SessionError("protocol_error", "the server sent no SDP")
        return strip_media_derived_extensions(sdp) if self._e2ee else sdp

    async def publish(
        self,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        name: str | None = None,
    ) -> Publisher:
        """Publishes the given tracks as one stream, encrypted end to end in E2EE sessions."""
        if audio is None and video is None:
            raise ValueError("publish needs an audio or a video track")
        self._check_media("publishing")
        pc = RTCPeerConnection(self._rtc)
        try:
            transform = self._protect(pc)
            for track in (audio, video):
                if track is not None:
                    pc.addTrack(track)
            await pc.setLocalDescription(await pc.createOffer())
            msg: dict[str, Any] = {"type": "publish", "sdp": self._sdp(pc.localDescription.sdp)}
            if name is not None:
                msg["name"] = name
            reply = await self.request(msg)
            answer = self._sdp(reply.get("sdp"))
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        except BaseException:
            await pc.close()
            raise
        publisher = Publisher(reply["stream_id"], pc, transform)
        self.publishers[publisher.stream_id] = publisher
        return publisher

    async def unpublish(self, publisher: Publisher) -> None:
        self.publishers.pop(publisher.stream_id, None)
        with contextlib.suppress(SessionError):
            await self.request({"type": "unpublish", "stream_id": publisher.stream_id})
        await publisher.pc.close()

    async def subscribe(self, stream_id: str) -> Subscriber:
        """Receives a stream; in E2EE sessions its tracks are decrypted before decoding."""
        self._check_media("subscribing")
        reply = await self.request({"type": "subscribe", "stream_id": stream_id})
        offer = self._sdp(reply.get("sdp"))
        pc = RTCPeerConnection(self._rtc)
        try:
            transform = self._protect(pc)
        except BaseException:
            await pc.close()
            raise
        sub = Subscriber(stream_id, reply["subscription_id"], pc, transform)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                sub.audio = track
            else:
                sub.video = track

        if transform is not None:

            def on_event(event: E2eeEvent) -> None:
                sub.events.append(event)
                self._emit(event.type, {"type": event.type, "stream_id": stream_id, "event": event})

            transform.add_listener(on_event)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self.request(
                {
                    "type": "answer",
                    "subscription_id": sub.subscription_id,
                    "sdp": self._sdp(pc.localDescription.sdp),
                }
            )
        except BaseException:
            await pc.close()
            raise
        self.subscribers[sub.subscription_id] = sub
        return sub

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.pop(subscriber.subscription_id, None)
        with contextlib.suppress(SessionError):
            await self.request(
                {"type": "unsubscribe", "subscription_id": subscriber.subscription_id}
            )
        await subscriber.pc.close()

    # -- leaving -----------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Leaves the session and closes every peer connection."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.request({"type": "disconnect"}), 2.0)
        for p in list(self.publishers.values()):
            await p.pc.close()
        for s in list(self.subscribers.values()):
            await s.pc.close()
        self.publishers.clear()
        self.subscribers.clear()
        await self._close_transport()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _close_transport(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> Session:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()
