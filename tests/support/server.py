"""Helpers for the session server tests: the real server in a child process, a REST
client with project auth, a WebSocket client that pairs replies with requests, and a
fake media router for the signaling tests that do not need real media.

The ``server`` / ``fake_server`` / ``api`` fixtures in tests/conftest.py are built on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from e2ee.server.store import Credentials, SQLiteStore, db_path
from e2ee.server.tokens import mint_token, project_auth_token
from e2ee.tools.redis_proc import end_process
from support import REPO, TESTS

_LISTENING = re.compile(r"listening on (http://[^\s]+)")


class Served:
    """What the clients here read of a running server, in a child process
    (:class:`ServerProcess`) or in the test's own (:class:`support.app_server.AppServer`):
    its ``url`` and, from its ``data_dir``, the project's credentials."""

    data_dir: Path
    url: str

    def credentials(self) -> Credentials:
        """Read from the server's database, as an operator on this host would."""
        store = SQLiteStore(db_path(self.data_dir))
        try:
            return store.get_or_create_credentials_sync()
        finally:
            store.close_sync()

    @property
    def ws_base(self) -> str:
        return "ws" + self.url[len("http") :]


class ChildServer(Served):
    """A server command in a child process, for :class:`ServerProcess` and
    :class:`support.cluster.NodeProcess`: its stderr appended to :attr:`stderr_path`, its
    stdout read up to the ``listening on URL`` line (kept in :attr:`stdout_lines`, the
    rest drained by a thread), ready once ``/healthz`` answers 200.

    Starting and ending block (no event loop of their own): call them from a fixture, or
    through ``asyncio.to_thread`` inside an async test.
    """

    #: What the error messages call it.
    what = "server"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.stdout_lines: list[str] = []
        self._drain: threading.Thread | None = None

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / "stderr.txt"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _launch(self, argv: list[str], env: dict[str, str], timeout: float) -> str:
        """Runs ``argv`` and returns the URL it listens on, once it is healthy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=str(REPO)
        )
        stderr.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        url = ""
        while not url and time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            self.stdout_lines.append(line)
            m = _LISTENING.search(line)
            url = m.group(1) if m else ""
        if not url:
            self._end(signal.SIGTERM, 10.0)
            raise RuntimeError(
                f"{self.what} did not start: {''.join(self.stdout_lines)}\n"
                f"{self.stderr_path.read_text(errors='replace')[-3000:]}"
            )
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        self._wait_healthy(url, deadline)
        return url

    def _drain_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.append(raw.decode(errors="replace"))

    def _wait_healthy(self, url: str, deadline: float) -> None:
        # No proxies (as aiohttp, which ignores the environment's by default).
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            try:
                with opener.open(url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:  # refused, reset, timed out, or an HTTP error status
                pass
            if time.monotonic() > deadline:
                self._end(signal.SIGTERM, 10.0)
                raise RuntimeError(f"{self.what} never became healthy")
            time.sleep(0.05)

    def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        """Sends ``sig`` (SIGKILL after ``timeout``); the exit status, ``None`` if it was
        not started."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        rc = end_process(proc, sig, timeout)
        if self._drain is not None:
            self._drain.join(2)
        return rc


class ServerProcess(ChildServer):
    """``e2ee.server.app.run`` in a child process on a free loopback port.

    ``router="fake"`` injects :class:`FakeRouter` (signaling tests), ``"default"`` keeps
    the real :class:`e2ee.sfu.router.Router`.  stdout (the banner) is kept in
    :attr:`stdout_lines`, stderr (the logs) in ``data_dir/stderr.txt``.
    """

    def __init__(self, data_dir: Path, *, router: str = "default") -> None:
        super().__init__(data_dir)
        self.router = router

    def start(self, timeout: float = 15.0) -> ServerProcess:
        factory = "FakeRouter.factory" if self.router == "fake" else "None"
        code = (
            f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
            "from support.server import FakeRouter\n"
            "from e2ee.server.app import run\n"
            f"run(host='127.0.0.1', port=0, data_dir={str(self.data_dir)!r},"
            f" router_factory={factory})\n"
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.url = self._launch([sys.executable, "-c", code], env, timeout)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout``; the exit status."""
        return self._end(signal.SIGTERM, timeout)


class Api:
    """REST client with a fresh project auth token on every call.  Keeps the signaling
    clients that joined through it, for :meth:`close`."""

    def __init__(self, server: Served, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.creds = server.credentials()
        self.peers: list[Peer] = []

    async def close(self) -> None:
        """Close every signaling client that joined through this API (idempotent)."""
        for peer in self.peers:
            await peer.close()

    def auth(self) -> dict[str, str]:
        token = project_auth_token(self.creds.api_key, self.creds.api_secret)
        return {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = self.auth() if headers is None else headers
        kwargs: dict[str, Any] = {"headers": hdrs}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.server.url + path, **kwargs) as resp:
            text = await resp.text()
            try:
                data = await resp.json(content_type=None) if text else None
            except ValueError:
                data = text
            return resp.status, data

    async def create_session(self, **options: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/v1/sessions", options)
        assert status == 201, body
        return body

    async def token(self, session_id: str, role: str = "publisher", **extra: Any) -> str:
        status, body = await self.call(
            "POST", f"/v1/sessions/{session_id}/tokens", {"role": role, **extra}
        )
        assert status == 201, body
        return body["token"]

    def mint(self, session_id: str, role: str = "publisher", **kw: Any) -> str:
        return mint_token(self.creds.api_key, self.creds.api_secret, session_id, role=role, **kw)

    async def join(self, session_id: str, role: str = "publisher", **kw: Any) -> Peer:
        return await Peer.connect(self, session_id, self.mint(session_id, role, **kw))


@dataclass
class Peer:
    """One signaling client.  Replies (with ``id``) and events are kept apart."""

    ws: aiohttp.ClientWebSocketResponse
    hello: dict[str, Any]
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    replies: dict[Any, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    closed: asyncio.Future[None] | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _reader: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.hello["connection"]["id"])

    @classmethod
    async def connect(cls, api: Api, session_id: str, token: str) -> Peer:
        ws = await api.http.ws_connect(
            f"{api.server.ws_base}/v1/sessions/{session_id}/ws", params={"token": token}
        )
        first = await ws.receive_json(timeout=5)
        if first.get("type") != "session":
            await ws.close()
            raise Refused(first, ws.close_code)
        peer = cls(ws, first)
        peer.closed = asyncio.get_running_loop().create_future()
        peer._reader = asyncio.create_task(peer._read())
        api.peers.append(peer)
        return peer

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.json()
                fut = self.replies.pop(data.get("id"), None) if "id" in data else None
                if fut is not None and not fut.done():
                    fut.set_result(data)
                else:
                    self.events.put_nowait(data)
        finally:
            assert self.closed is not None
            if not self.closed.done():
                self.closed.set_result(None)

    async def request(self, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[msg_id] = fut
        await self.ws.send_json({**msg, "id": msg_id})
        return await asyncio.wait_for(fut, timeout)

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def event(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event of type ``kind`` (events of other types before it are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind!r} event")
            ev = await asyncio.wait_for(self.events.get(), left)
            if ev.get("type") == kind:
                return ev

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        assert self.closed is not None
        await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)


class Refused(Exception):
    def __init__(self, error: dict[str, Any], close_code: int | None) -> None:
        super().__init__(f"{error} (close {close_code})")
        self.error = error
        self.close_code = close_code


async def refused(
    api: Api, session_id: str, token: str | None
) -> tuple[dict[str, Any], int | None]:
    """Connects with ``token``, expects a refusal: (error message, close code)."""
    params = {} if token is None else {"token": token}
    ws = await api.http.ws_connect(
        f"{api.server.ws_base}/v1/sessions/{session_id}/ws", params=params
    )
    try:
        first = await ws.receive_json(timeout=5)
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        return first, ws.close_code
    finally:
        await ws.close()


# -- SDP and a fake router --------------------------------------------------------------


def fake_offer(*, video: str | None = "VP8/90000", audio: str | None = "opus/48000/2") -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    if audio:
        lines += ["m=audio 9 UDP/TLS/RTP/SAVPF 111", f"a=rtpmap:111 {audio}"]
    if video:
        lines += ["m=video 9 UDP/TLS/RTP/SAVPF 96", f"a=rtpmap:96 {video}"]
    return "\r\n".join(lines) + "\r\n"


class CodecNotAllowed(ValueError):
    """Same name as e2ee.sfu.router's: the server maps it to ``codec_not_allowed``."""


class UnknownStream(LookupError):
    """Same name as e2ee.sfu.router's: the server maps it to ``unknown_stream``."""


@dataclass
class _Desc:
    sdp: str
    type: str


class FakeRouter:
    """The Router API without media: checks codecs like the real one in E2EE mode."""

    def __init__(self, *, e2ee: bool = True, **_: Any) -> None:
        self.e2ee = e2ee
        self.published: set[str] = set()
        self.subs: dict[str, str] = {}
        self.calls: dict[str, int] = {}

    @classmethod
    def factory(cls, record: Any) -> FakeRouter:
        return cls(e2ee=record.e2ee)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def publish(self, stream_id: str, offer: Any) -> _Desc:
        self._count("publish")
        codecs = re.findall(r"a=rtpmap:\d+ ([\w-]+)/", offer.sdp)
        if not codecs:
            raise ValueError("no codecs in the offer")
        if self.e2ee and not {c.lower() for c in codecs} & {"vp8", "opus"}:
            raise CodecNotAllowed(f"E2EE sessions allow VP8 and Opus only, not {codecs}")
        self.published.add(stream_id)
        return _Desc(f"fake-answer {stream_id}", "answer")

    async def subscribe(self, subscription_id: str, stream_id: str) -> _Desc:
        self._count("subscribe")
        if stream_id not in self.published:
            raise UnknownStream(stream_id)
        self.subs[subscription_id] = stream_id
        return _Desc(f"fake-offer {subscription_id}", "offer")

    async def accept_answer(self, subscription_id: str, answer: Any) -> None:
        self._count("accept_answer")
        if subscription_id not in self.subs:
            raise KeyError(subscription_id)

    async def unsubscribe(self, subscription_id: str) -> None:
        self._count("unsubscribe")
        self.subs.pop(subscription_id, None)

    async def unpublish(self, stream_id: str) -> None:
        self._count("unpublish")
        self.published.discard(stream_id)

    def subscriber_count(self, stream_id: str) -> int:
        return sum(1 for s in self.subs.values() if s == stream_id)

    def stats(self) -> dict[str, Any]:
        return {"fake": True, "frames_decoded": 0, "streams": len(self.published), **self.calls}

    async def close(self) -> None:
        self.published.clear()
        self.subs.clear()
