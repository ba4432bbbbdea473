"""What a session does when its WebSocket ends: stay closed, or reconnect and restore.

When the link drops, the server ends every stream and subscription of that connection
(its router keeps nothing of a connection that is gone), so the client closes all its
peer connections at once rather than keep media going that nobody routes.  Unless the
end was deliberate (:func:`~e2ee.client.reconnect.is_terminal`) or reconnecting is off,
it then reconnects with the :class:`~e2ee.client.reconnect.ReconnectPolicy`, with the
same token, and checks the new hello against the same policy: the E2EE parameters must
be the ones its keys were derived for, so the key ring (and any planned secret change)
carries on.  Then it publishes every stream again with the same tracks (new stream ids)
and subscribes again to the streams that still exist (new subscription ids).  Each
attempt starts at an entry URL and follows redirects (cluster mode): when the node that
owned the session died, the next join places it on a live node, and the media resumes
there under the same keys (failover, docs/cluster.md).  Each new
peer connection is protected before its first description, like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aiohttp
from aiortc import MediaStreamTrack, RTCPeerConnection

from e2ee.client.errors import SessionError
from e2ee.client.link import Link
from e2ee.client.peers import LINK_DOWN, PeerSet, Publisher, Subscriber
from e2ee.client.reconnect import ReconnectPolicy, is_terminal, is_terminal_error
from e2ee.errors import E2eeError
from e2ee.transform.protect import E2eeTransform

__all__ = ["REFUSED_BY_CLIENT", "Supervised", "Supervisor"]

log = logging.getLogger(__name__)

#: Codes of a reconnection the client itself refuses: the server's new hello is not the
#: session it joined (no E2EE, weaker or changed parameters, garbled).
REFUSED_BY_CLIENT = frozenset({"e2ee_required", "session_changed", "protocol_error"})


class Supervised(Protocol):
    """What the supervisor needs of its :class:`~e2ee.client.session.Session`."""

    reconnect_policy: ReconnectPolicy | None
    peers: PeerSet
    connection: dict[str, Any]
    connections: dict[str, dict[str, Any]]
    streams: dict[str, dict[str, Any]]
    closed: asyncio.Event
    _link: Link | None
    _leaving: bool
    _generation: int

    def _emit(self, event: str, message: dict[str, Any]) -> None: ...
    async def _open_link(self, attempt: int) -> tuple[Link, dict[str, Any]]: ...
    def _check_rejoin(self, first: dict[str, Any]) -> None: ...
    def _install(self, link: Link, first: dict[str, Any]) -> None: ...
    async def _tell(self, message: dict[str, Any]) -> None: ...

    async def _negotiate_publish(
        self, audio: MediaStreamTrack | None, video: MediaStreamTrack | None, name: str | None
    ) -> tuple[str, RTCPeerConnection, E2eeTransform | None]: ...

    async def _negotiate_subscribe(self, stream_id: str, sub: Subscriber | None) -> Subscriber: ...


async def _close(link: Link | None) -> None:
    if link is not None:
        await link.close()


class Supervisor:
    """Watches a session's link from :meth:`start` to :meth:`stop`."""

    def __init__(self, session: Supervised) -> None:
        self._s = session
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        s = self._s
        while True:
            link = s._link
            assert link is not None
            await link.ended.wait()
            if s._leaving:
                return
            policy = s.reconnect_policy
            retry = policy is not None and not is_terminal(link.reason, link.close_code)
            log.info(
                "signaling connection lost (close %s, reason %s)%s",
                link.close_code,
                link.reason,
                "; reconnecting" if retry else "",
            )
            await link.close()
            await s.peers.close_all()
            s._emit(
                "connection_lost",
                {"close_code": link.close_code, "reason": link.reason, "reconnecting": retry},
            )
            if policy is None or not retry:
                await self._give_up(link.reason or "connection_lost")
                return
            if not await self._reconnect(policy):
                return

    async def _give_up(self, reason: str) -> None:
        await self._s.peers.end_all(reason)
        self._s.closed.set()

    async def _reconnect(self, policy: ReconnectPolicy) -> bool:
        s = self._s
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts, error = 0, "no attempt was allowed"
        for attempt, delay in policy.schedule(lambda: loop.time() - started):
            attempts = attempt
            s._emit("reconnecting", {"attempt": attempt, "delay": delay})
            await asyncio.sleep(delay)
            link: Link | None = None
            try:
                link, first = await asyncio.wait_for(s._open_link(attempt), policy.connect_timeout)
                s._check_rejoin(first)
            except SessionError as exc:
                await _close(link)
                error = str(exc)
                if is_terminal_error(exc.code) or exc.code in REFUSED_BY_CLIENT:
                    break
                continue
            except E2eeError as exc:  # the client's policy refuses the new hello
                await _close(link)
                error = f"{type(exc).__name__}: {exc}"
                break
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
                await _close(link)
                error = f"{type(exc).__name__}: {exc}"
                continue
            assert link is not None
            before = (s.connection.get("id"), s.connections, s.streams)
            s._install(link, first)
            self._catch_up(*before)
            await self._restore(attempt)
            return True
        log.warning("giving up reconnecting after %d attempts: %s", attempts, error)
        s._emit("reconnect_failed", {"attempts": attempts, "error": error})
        await self._give_up("reconnect_failed")
        return False

    def _catch_up(self, me: object, connections: dict[str, Any], streams: dict[str, Any]) -> None:
        """The events missed while disconnected, from the difference between what the
        session knew and the new hello (marked ``"missed": true``), so that an
        application that follows events alone stays right."""
        s = self._s
        mine = {me, s.connection.get("id")}
        for kind, old, new in (
            ("connection", connections, s.connections),
            ("stream", streams, s.streams),
        ):
            for ident in old.keys() - new.keys() - mine:
                s._emit(f"{kind}_destroyed", {kind: old[ident], "reason": "", "missed": True})
            for ident in new.keys() - old.keys() - mine:
                s._emit(f"{kind}_created", {kind: new[ident], "missed": True})

    async def _restore(self, attempt: int) -> None:
        """Publishes and subscribes again; returns early if the link drops meanwhile
        (the next round restores what is left)."""
        s = self._s
        publishers, subscribers = s.peers.stale()
        for pub in publishers:
            if pub.ended is None and not await self._republish(pub):
                return
        for sub in subscribers:
            if sub.ended is None and not await self._resubscribe(sub):
                return
        s._emit("reconnected", {"attempt": attempt})

    async def _republish(self, pub: Publisher) -> bool:
        s = self._s
        old = pub.stream_id
        try:
            stream_id, pc, transform = await s._negotiate_publish(pub.audio, pub.video, pub.name)
        except SessionError as exc:
            if exc.code in LINK_DOWN:
                return False
            s.peers.end_publisher(pub, "republish_failed", failed=True)
            return True
        except Exception:
            log.exception("publishing stream %s again failed", old)
            s.peers.end_publisher(pub, "republish_failed", failed=True)
            return True
        if pub.ended is not None:  # unpublished by the application meanwhile
            await s.peers.close(pc)
            await s._tell({"type": "unpublish", "stream_id": stream_id})
            return True
        pub.replace(stream_id, pc, transform, s._generation)
        s.peers.readopt_publisher(pub)
        s._emit("republished", {"publisher": pub, "old_stream_id": old, "stream_id": stream_id})
        return True

    async def _resubscribe(self, sub: Subscriber) -> bool:
        s = self._s
        old = sub.subscription_id
        if sub.stream_id not in s.streams:
            s.peers.end_subscriber(sub, "stream_gone")
            return True
        try:
            await s._negotiate_subscribe(sub.stream_id, sub)
        except SessionError as exc:
            if exc.code in LINK_DOWN:
                return False
            gone = exc.code == "unknown_stream"
            s.peers.end_subscriber(
                sub, "stream_gone" if gone else "resubscribe_failed", failed=not gone
            )
            return True
        except Exception:
            log.exception("subscribing to stream %s again failed", sub.stream_id)
            s.peers.end_subscriber(sub, "resubscribe_failed", failed=True)
            return True
        if sub.ended is not None:  # unsubscribed by the application meanwhile
            await s.peers.close(sub.pc)
            await s._tell({"type": "unsubscribe", "subscription_id": sub.subscription_id})
            return True
        s.peers.readopt_subscriber(sub)
        s._emit(
            "resubscribed",
            {"subscriber": sub, "old_subscription_id": old, "subscription_id": sub.subscription_id},
        )
        return True
