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

The session owns every peer connection it makes (:mod:`e2ee.client.peers`): it closes a
stream's connection when the stream ends (the application ends it, the server destroys
it, its connection fails: then it also tells the server), on :meth:`Session.disconnect`,
and when the WebSocket drops.  After an unexpected drop it reconnects on its own with
backoff (:mod:`e2ee.client.reconnect`), with the same token, keys and policy, publishes
the same tracks again and subscribes again to the streams that still exist; the
:class:`Publisher` and :class:`Subscriber` objects carry on with their new ids.

Cluster mode (docs/cluster.md): a node that does not own the session redirects the
client to the one that does; the session follows (event ``redirected``), at most
:data:`~e2ee.client.redirect.MAX_REDIRECTS` times in a row.  Reconnecting always starts
again from the entry URL(s), rotating through them when several are given, so that a
session whose node died is placed again on a live one (failover).

The router never sees a key: this client encrypts after its encoders and decrypts before
its decoders (:mod:`e2ee.transform.protect`); each stream's peer connection is negotiated
in :mod:`e2ee.client.negotiation`.

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
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from e2ee.client import negotiation
from e2ee.client.errors import E2eeRequired, Redirected, SessionError
from e2ee.client.link import Link
from e2ee.client.peers import PeerSet, Publisher, Subscriber
from e2ee.client.policy import E2eeParams, check_hello
from e2ee.client.reconnect import ReconnectPolicy
from e2ee.client.redirect import MAX_REDIRECTS, redirect_target
from e2ee.client.supervisor import Supervisor
from e2ee.crypto import normalize_secret
from e2ee.crypto.keyring import KeyRing
from e2ee.errors import EncryptionSecretMissing
from e2ee.rtc import compat, net
from e2ee.transform.protect import E2eeTransform
from e2ee.wire.params import SessionPolicy

__all__ = ["E2eeRequired", "Publisher", "ReconnectPolicy", "Session", "SessionError", "Subscriber"]

net.apply_environment()
log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]


class Session:
    """One connection to one session on an e2ee server.

    ``encryption_secret``: given (here or with :meth:`set_encryption_secret` before
    :meth:`connect`), the session must be end-to-end encrypted, or :meth:`connect`
    refuses it.  ``policy`` is what the client accepts of the server's cipher suite and
    PBKDF2 iteration count (default ``SessionPolicy()``, :mod:`e2ee.wire.params`);
    to join a session with fewer iterations, lower the floor explicitly, e.g.
    ``SessionPolicy(min_iterations=1000)`` in tests, or pin the exact values with
    ``pin_suite`` and ``pin_iterations``.

    ``reconnect``: after an unexpected drop of the WebSocket, reconnect with the default
    :class:`~e2ee.client.reconnect.ReconnectPolicy` (``True``), a given one, or not at
    all (``False``).  ``heartbeat``: seconds between WebSocket pings; without a pong
    within half of it the connection counts as dropped (``None``: no pings).

    ``url``: the server's base URL, or several (the entry nodes of a cluster, tried in
    turn when reconnecting).  :attr:`url` is then the node the session is on now.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        session_id: str,
        token: str,
        *,
        encryption_secret: str | None = None,
        policy: SessionPolicy | None = None,
        rtc_configuration: RTCConfiguration | None = None,
        grace_period: float = 10.0,
        request_timeout: float = 15.0,
        reconnect: bool | ReconnectPolicy = True,
        heartbeat: float | None = 10.0,
    ) -> None:
        entries = [url] if isinstance(url, str) else list(url)
        if not entries:
            raise ValueError("give the server's URL")
        #: Where (re)connecting starts: the entry nodes, in turn.
        self.entry_urls = [u.rstrip("/") for u in entries]
        self.url = self.entry_urls[0]
        self.session_id = session_id
        self._token = token
        self._secret = encryption_secret
        self._accepted: list[str] = []  # accepted before connect, applied at connect
        self.policy = SessionPolicy() if policy is None else policy
        self._e2ee = False
        self._params: E2eeParams | None = None
        self._rtc = rtc_configuration or RTCConfiguration(iceServers=[])
        self._grace = grace_period
        self._timeout = request_timeout
        self._heartbeat = heartbeat
        self.reconnect_policy: ReconnectPolicy | None = (
            ReconnectPolicy() if reconnect is True else reconnect or None
        )
        self._link: Link | None = None
        self._generation = 0  # one per link: ids the server gave belong to one link
        self._supervisor: Supervisor | None = None
        self._leaving = False
        self._handlers: dict[str, list[Handler]] = {}
        self.ring: KeyRing | None = None
        self.info: dict[str, Any] = {}
        self.connection: dict[str, Any] = {}
        self.connections: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, dict[str, Any]] = {}
        self.closed = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Every peer connection the session made and has not closed, with the
        #: publishers and subscribers they carry.
        self.peers = PeerSet(
            generation=lambda: self._generation,
            request=self.request,
            emit=self._emit,
            spawn=self._spawn,
        )
        self.publishers: dict[str, Publisher] = self.peers.publishers
        self.subscribers: dict[str, Subscriber] = self.peers.subscribers

    # -- events ----------------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> None:
        """Calls ``handler(message)`` for server events (``connection_created``,
        ``connection_destroyed``, ``stream_created``, ``stream_destroyed``,
        ``subscriber_count``, ``subscription_expired``, ``signal``, ``disconnected``),
        for the E2EE states of subscribed streams (``encryption_secret_mismatch``,
        ``encryption_secret_match``, ``decryption_error``, with ``stream_id``), and for
        the client's own:

        * ``publisher_ended`` / ``subscriber_ended`` {publisher | subscriber,
          stream_id, reason, failed}: the session closed it (the server's reason, e.g.
          ``force_unpublished``; ``subscription_expired``; ``stream_gone`` after a
          reconnect; or, with ``failed`` true, ``connection_failed``,
          ``connection_closed``, ``republish_failed``, ``resubscribe_failed``);
        * ``connection_lost`` {close_code, reason, reconnecting}: the WebSocket ended
          without :meth:`disconnect`;
        * ``redirected`` {from_url, url, node_id}: cluster mode, the node joined does
          not own the session and the session follows it to the one that does;
        * ``reconnecting`` {attempt, delay}, then ``republished`` {publisher,
          old_stream_id, stream_id} and ``resubscribed`` {subscriber,
          old_subscription_id, subscription_id} per stream, then ``reconnected``
          {attempt}; or ``reconnect_failed`` {attempts, error} when it gives up.
        """
        self._handlers.setdefault(event, []).append(handler)

    def _emit(self, event: str, message: dict[str, Any]) -> None:
        message = {"type": event, **message} if "type" not in message else message
        for handler in self._handlers.get(event, []):
            try:
                result = handler(message)
                if asyncio.iscoroutine(result):
                    self._spawn(result)
            except Exception:
                log.exception("handler for %s failed", event)

    def _spawn(self, aw: Any) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task failed", exc_info=task.exception())

    # -- connecting --------------------------------------------------------------------

    @property
    def e2ee(self) -> bool:
        """Whether this connection encrypts end to end.  Decided by the client at
        :meth:`connect`: true exactly when it was given a secret (the server's hello is
        checked against that, never followed)."""
        return self._e2ee

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is open now (false while reconnecting)."""
        return self._link is not None and self._link.open

    @property
    def peer_connections(self) -> list[RTCPeerConnection]:
        """Every peer connection the session made and has not closed yet."""
        return list(self.peers.pcs)

    async def connect(self) -> None:
        """Joins the session, after checking the server's hello against this client.

        With an encryption secret: :class:`E2eeRequired` if the server offers a session
        without end-to-end encryption, :class:`~e2ee.errors.WeakSessionParameters` if
        its suite or iteration count fails :attr:`policy`,
        :class:`~e2ee.errors.InvalidEncryptionSecret` for a secret that is not 8 to 256
        characters.  Without one: :class:`EncryptionSecretMissing` in an E2EE session.
        On any of these the connection is closed before anything is sent.  A refused
        first connection is not retried (reconnecting is for connections that dropped).
        """
        link, first = await self._open_link(1)
        try:
            params = check_hello(
                first["session"], secret_given=self._wants_e2ee, policy=self.policy
            )
            if params is not None:
                await self._make_ring(params)
        except BaseException:
            await link.close()
            raise
        self._e2ee = params is not None
        self._params = params
        self._install(link, first)
        self._supervisor = Supervisor(self)
        self._supervisor.start()

    async def _open_link(self, attempt: int) -> tuple[Link, dict[str, Any]]:
        """A connected link and the server's hello, from the entry URL for ``attempt``
        (from 1), following redirects (:class:`Redirected` past :data:`MAX_REDIRECTS`)."""
        base = self.entry_urls[(attempt - 1) % len(self.entry_urls)]
        for followed in range(MAX_REDIRECTS + 1):
            link = self._new_link(base)
            try:
                first = await link.connect()
            except Redirected as exc:
                if followed == MAX_REDIRECTS:  # not followed: no event for it
                    raise Redirected(exc.url, exc.node_id, "too_many_redirects") from None
                target = redirect_target(base, exc.url)
                self._emit("redirected", {"from_url": base, "url": target, "node_id": exc.node_id})
                base = target
                continue
            self.url = base
            return link, first
        raise AssertionError("unreachable: the last round returns or raises")

    def _new_link(self, base: str) -> Link:
        url = f"{base}/v1/sessions/{self.session_id}/ws"
        return Link(
            url,
            self._token,
            on_event=self._dispatch,
            timeout=self._timeout,
            heartbeat=self._heartbeat,
        )

    def _check_rejoin(self, first: dict[str, Any]) -> None:
        """The hello of a reconnection must be the session the keys were made for."""
        params = check_hello(first["session"], secret_given=self._wants_e2ee, policy=self.policy)
        if params != self._params:
            raise SessionError(
                "session_changed",
                f"the session's E2EE parameters changed across a reconnect ({self._params} "
                f"-> {params}); refusing it",
            )

    def _install(self, link: Link, first: dict[str, Any]) -> None:
        self._generation += 1
        self._link = link
        self.info = first["session"]
        self.connection = first.get("connection", {})
        self.connections = {c["id"]: c for c in first.get("connections", [])}
        self.streams = {s["id"]: s for s in first.get("streams", [])}
        link.start()

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
        """Sends one message and waits for its reply; errors raise :class:`SessionError`
        (``not_connected`` while disconnected or reconnecting)."""
        if self._link is None:
            raise SessionError("not_connected", "the session is not connected")
        return await self._link.request(message)

    async def signal(self, kind: str, data: str, *, to: str | None = None) -> None:
        msg: dict[str, Any] = {"type": "signal", "kind": kind, "data": data}
        if to is not None:
            msg["to"] = to
        await self.request(msg)

    async def _tell(self, message: dict[str, Any]) -> None:
        """A clean-up request whose failure changes nothing (the server may have ended
        the thing already, or the link is down and the server drops it anyway)."""
        with contextlib.suppress(SessionError, TimeoutError):
            await self.request(message)

    def _dispatch(self, data: dict[str, Any]) -> None:
        kind = data.get("type", "")
        if kind == "connection_created":
            self.connections[data["connection"]["id"]] = data["connection"]
        elif kind == "connection_destroyed":
            self.connections.pop(data["connection"]["id"], None)
        elif kind == "stream_created":
            self.streams[data["stream"]["id"]] = data["stream"]
        elif kind == "stream_destroyed":
            self.streams.pop(data["stream"]["id"], None)
            self.peers.stream_destroyed(data["stream"]["id"], str(data.get("reason", "")))
        elif kind == "subscription_expired":
            self.peers.subscription_expired(str(data.get("subscription_id")))
        self._emit(kind, data)

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(self._rtc)
        compat.drain_ice_reads(pc)  # whole bursts per loop turn (e2ee.rtc.compat)
        compat.compact_estimators(pc)  # no 1,000-object counter per video receiver
        return self.peers.add(pc)

    # -- media -------------------------------------------------------------------------

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
        negotiation.check_media(self, "publishing")
        stream_id, pc, transform = await negotiation.publish(self, audio, video, name)
        pub = Publisher(
            stream_id,
            pc,
            transform,
            audio=audio,
            video=video,
            name=name,
            generation=self._generation,
        )
        self.peers.adopt_publisher(pub)
        return pub

    async def unpublish(self, publisher: Publisher) -> None:
        """Ends a published stream (also while reconnecting: it is not published again)."""
        self.peers.forget_publisher(publisher, "unpublished")
        if publisher.generation == self._generation:
            await self._tell({"type": "unpublish", "stream_id": publisher.stream_id})
        await self.peers.close(publisher.pc)

    async def subscribe(self, stream_id: str) -> Subscriber:
        """Receives a stream; in E2EE sessions its tracks are decrypted before decoding.

        Any failure after the server made the subscription (a refused offer, a failed
        negotiation, a cancellation) ends it on the server too (``unsubscribe``)."""
        negotiation.check_media(self, "subscribing")
        sub = await negotiation.subscribe(self, stream_id, None)
        self.peers.adopt_subscriber(sub)
        return sub

    # The supervisor's way in (e2ee.client.supervisor.Supervised), to publish and
    # subscribe again after a reconnect.
    async def _negotiate_publish(
        self, audio: MediaStreamTrack | None, video: MediaStreamTrack | None, name: str | None
    ) -> tuple[str, RTCPeerConnection, E2eeTransform | None]:
        return await negotiation.publish(self, audio, video, name)

    async def _negotiate_subscribe(self, stream_id: str, sub: Subscriber | None) -> Subscriber:
        return await negotiation.subscribe(self, stream_id, sub)

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        """Ends a subscription (also while reconnecting: it is not made again)."""
        self.peers.forget_subscriber(subscriber, "unsubscribed")
        if subscriber.generation == self._generation:
            await self._tell({"type": "unsubscribe", "subscription_id": subscriber.subscription_id})
        await self.peers.close(subscriber.pc)

    # -- leaving -----------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Leaves the session, stops reconnecting, and closes every peer connection."""
        self._leaving = True
        if self._supervisor is not None:
            await self._supervisor.stop()
        link = self._link
        if link is not None and link.open:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.request({"type": "disconnect"}), 2.0)
        await self.peers.end_all("disconnected")
        if link is not None:
            await link.close()
        self.closed.set()

    async def __aenter__(self) -> Session:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()
