"""Helpers for the browser client tests: a real ``e2ee serve --dev`` child process, the
call page in a Chromium context, and waiting on ``window.e2ee.state``.

The Chromium itself is the ``browser`` fixture of tests/browser/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.client import Session, SessionPolicy, Subscriber
from e2ee.rtc import net
from e2ee.server.store import SQLiteStore, db_path
from e2ee.server.tokens import project_auth_token
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack
from support import REPO

#: Iterations of the test sessions; both clients lower their floor to it explicitly.
TEST_ITERATIONS = 1000
SECRET = "the browser test secret"
OTHER_SECRET = "a secret nobody else has"

_LISTENING = re.compile(r"listening on (http://\S+)")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DevServer:
    """``e2ee serve --dev --port 0`` (the real CLI, router and static files) in a child
    process on 127.0.0.1 (``dev=False``: without ``--dev``).  stdout is kept in
    :attr:`lines`, stderr in ``data_dir/stderr.txt``.  ``limits``: fields of
    :class:`e2ee.server.limits.ServerLimits` (budgets the CLI does not set), for which the
    same server is started through :func:`e2ee.server.app.run` instead of the CLI."""

    def __init__(
        self, data_dir: Path, *, dev: bool = True, limits: dict[str, Any] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.dev = dev
        self.extra_args = ("--dev",) if dev else ()
        self.limits = limits
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.lines: list[str] = []

    def start(self, timeout: float = 30.0) -> DevServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", net.ENV_VAR: "127.0.0.1"}
        if self.limits is None:
            argv = ["-m", "e2ee", "serve", "--port", "0", "--data-dir", str(self.data_dir)]
            argv += self.extra_args
        else:
            argv = ["-c", _RUN_WITH_LIMITS, str(self.data_dir), json.dumps(self.limits)]
            argv.append("dev" if self.dev else "")
        with open(self.data_dir / "stderr.txt", "ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, *argv],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=str(REPO),
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            self.lines.append(line)
            if m := _LISTENING.search(line):
                self.url = m.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"server did not start: {''.join(self.lines)}")
        threading.Thread(target=self._drain, daemon=True).start()
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                _NO_PROXY.open(self.url + "/healthz", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("server never became healthy")

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """A JSON POST to the server (the dev endpoints need no credentials)."""
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        return _call(req)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return _call(urllib.request.Request(self.url + path, headers=headers or {}))

    def auth_header(self) -> str:
        """An ``Authorization`` value for the REST API, with the credentials from the data
        directory (as an application server on this host would have them)."""
        store = SQLiteStore(db_path(self.data_dir))
        try:
            creds = store.get_or_create_credentials_sync()
        finally:
            store.close_sync()
        return f"Bearer {project_auth_token(creds.api_key, creds.api_secret)}"

    def rest(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """The authenticated REST API (:meth:`auth_header`)."""
        headers = {"Authorization": self.auth_header(), "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        return _call(req)

    def session(self, kdf_iterations: int = TEST_ITERATIONS) -> str:
        """A new E2EE session (through ``POST /dev/sessions``); its id."""
        status, body = self.post("/dev/sessions", {"kdf_iterations": kdf_iterations})
        assert status == 201, body
        return str(body["id"])

    def token(self, session_id: str, name: str = "", role: str = "publisher") -> str:
        status, body = self.post(
            f"/dev/sessions/{urllib.parse.quote(session_id)}/tokens", {"role": role, "data": name}
        )
        assert status == 201, body
        return str(body["token"])


_RUN_WITH_LIMITS = """
import json, sys
from e2ee.server.app import run
from e2ee.server.limits import ServerLimits
run("127.0.0.1", 0, sys.argv[1], dev=sys.argv[3] == "dev",
    limits=ServerLimits(**json.loads(sys.argv[2])))
"""


def _call(req: urllib.request.Request) -> tuple[int, Any]:
    try:
        with _NO_PROXY.open(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw = err.read()
        status = err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


@dataclass
class CallPage:
    """The call page in its own browser context (its own camera permission and
    storage), as one participant."""

    context: Any
    page: Any
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    async def state(self) -> dict[str, Any]:
        state: dict[str, Any] = await self.page.evaluate(
            "JSON.parse(JSON.stringify(window.e2ee.state))"
        )
        return state

    async def wait(self, predicate: str, timeout: float = 30.0, arg: Any = None) -> Any:
        """Waits until ``predicate`` (a JS function of ``(state, arg)``) is truthy."""
        handle = await self.page.wait_for_function(
            f"([arg]) => window.e2ee && ({predicate})(window.e2ee.state, arg)",
            arg=[arg],
            timeout=timeout * 1000,
            polling=200,
        )
        return await handle.json_value()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.page.evaluate("window.e2ee && window.e2ee.leave()")
        await self.context.close()


async def open_call(browser: Any, server: DevServer, **params: Any) -> CallPage:
    """The call page with ``params`` in its URL (``session``, ``token``, ``secret``,
    ``name``, ``publish``, ``synthetic``, ``minIterations``); the camera and microphone
    permission granted (without it Chromium offers only mDNS ICE candidates)."""
    context = await browser.new_context(
        permissions=["camera", "microphone"], viewport={"width": 1280, "height": 800}
    )
    page = await context.new_page()
    call = CallPage(context, page)
    page.on("pageerror", lambda exc: call.errors.append(str(exc)))
    page.on("console", lambda msg: call.console.append(f"{msg.type}: {msg.text}"))
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items() if v is not None})
    await page.goto(f"{server.url}/?{query}")
    return call


def stream_by_name(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in state["streams"] if s["name"] == name), None)


async def join_call(
    browser: Any,
    server: DevServer,
    session_id: str,
    name: str,
    *,
    secret: str = SECRET,
    publish: bool = True,
    synthetic: bool = True,
) -> CallPage:
    """A participant who opens the invitation link, types the secret and clicks "Join"
    (a user gesture, so that the page may start its audio)."""
    call = await open_call(
        browser,
        server,
        session=session_id,
        token=server.token(session_id, name),
        name=name,
        publish=int(publish),
        synthetic=int(synthetic),
        minIterations=TEST_ITERATIONS,
    )
    try:
        await call.wait("(s) => s.ready", 20)
        await call.page.fill("input[name=secret]", secret)
        await call.page.click("#join-button")
        await call.wait(
            "(s, publish) => s.error || (s.connected && (!publish || s.publishing))", 30, publish
        )
        state = await call.state()
        assert state["error"] is None, state["error"]
    except BaseException:
        await call.close()
        raise
    return call


class PythonPeer:
    """A participant on the Python client (:class:`e2ee.client.Session`), with the
    floor lowered explicitly to the test sessions' iteration count, publishing the
    synthetic picture and tone under its name."""

    def __init__(self, server: DevServer, session_id: str, name: str, secret: str = SECRET):
        self.name = name
        self.session = Session(
            server.url,
            session_id,
            server.token(session_id, name),
            encryption_secret=secret,
            policy=SessionPolicy(min_iterations=TEST_ITERATIONS),
        )
        self.collectors: dict[str, dict[str, FrameCollector]] = {}
        self.subscribers: dict[str, Subscriber] = {}

    async def start(self, *, publish: bool = True) -> PythonPeer:
        await self.session.connect()
        if publish:
            await self.session.publish(
                video=SyntheticVideoTrack(), audio=SyntheticAudioTrack(), name=self.name
            )
        return self

    async def stream_id(self, name: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for stream in self.session.streams.values():
                if stream.get("name") == name:
                    return str(stream["id"])
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no stream named {name!r}")

    async def receive(self, name: str, timeout: float = 20.0) -> dict[str, FrameCollector]:
        """Subscribes to ``name``'s stream; collectors of its decoded video and audio."""
        sub = await self.session.subscribe(await self.stream_id(name))
        self.subscribers[name] = sub
        deadline = time.monotonic() + timeout
        while sub.video is None or sub.audio is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no tracks from {name!r}")
            await asyncio.sleep(0.05)
        collectors = {
            "video": FrameCollector(sub.video).start(),
            "audio": FrameCollector(sub.audio).start(),
        }
        self.collectors[name] = collectors
        return collectors

    async def close(self) -> None:
        for collectors in self.collectors.values():
            for c in collectors.values():
                await c.stop()
        with contextlib.suppress(Exception):
            await self.session.disconnect()
