"""The browser client against the server's budgets (issue 11), in real Chromium with a
real ``e2ee serve --dev``: each refusal or forced close reaches e2ee.js as the same code
as in the Python client, and the call page shows it on its status line.

* one token, too many connections: connect() rejects with ``token_connection_limit``;
* a page flooding ``signal``: its requests reject with ``rate_limited``, then it is
  closed with 4029 and emits ``disconnected`` (``rate_limited``); a page that backs off
  after its first ``rate_limited`` stays connected;
* a subscription whose answer never comes: subscribe() rejects with
  ``subscription_expired`` and the router lets go of it;
* a page that stops reading while others send to it: ``disconnected`` (``too_slow``)
  and close 4008, the others unaffected;
* a moderator's force-disconnect: ``disconnected`` (``force_disconnected``, 4001), and
  the same token refused at connect (``token_revoked``); a deleted session:
  ``disconnected`` (``session_deleted``, 4404); a close without the server's message
  (1009, a message over the hard limit): the reason named by the close code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from browser.helpers import (
    SECRET,
    TEST_ITERATIONS,
    CallPage,
    DevServer,
    PythonPeer,
    join_call,
    open_call,
)
from e2ee.server.errors import (
    CLOSE_FORCE_DISCONNECTED,
    CLOSE_NOT_FOUND,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_SLOW,
)
from e2ee.server.rooms import MAX_CONNECTIONS_PER_TOKEN
from e2ee.server.ws_endpoint import MAX_MESSAGE_BYTES

pytestmark = pytest.mark.asyncio(loop_scope="session")

STATUS = "#status-text"


#: The server's pending-subscription timeout in the test that waits for it.
PENDING_SECONDS = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    srv = DevServer(tmp_path_factory.mktemp("abuse")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A server that lets unanswered subscriptions expire after :data:`PENDING_SECONDS`."""
    limits = {"pending_subscription_seconds": PENDING_SECONDS}
    srv = DevServer(tmp_path_factory.mktemp("abuse-quick"), limits=limits).start()
    yield srv
    srv.stop()


async def status_line(call: CallPage) -> tuple[str, str]:
    """The page's status line: its text and its state (``data-state``)."""
    text = await call.page.text_content(STATUS)
    kind = await call.page.get_attribute("#status", "data-state")
    return text or "", kind or ""


#: Keeps every text and state the status line shows in ``window.statusLog`` (a passing
#: warning goes back to "Connected" after a few seconds).
WATCH_STATUS = """() => {
  window.statusLog = [];
  const el = document.getElementById("status");
  const keep = () => window.statusLog.push([el.textContent, el.dataset.state]);
  new MutationObserver(keep).observe(el, { subtree: true, childList: true, characterData: true,
                                           attributes: true });
}"""


async def status_log(call: CallPage) -> list[tuple[str, str]]:
    """What the status line showed since :data:`WATCH_STATUS`, in order."""
    log = await call.page.evaluate("window.statusLog")
    return [(text, kind) for text, kind in log]


async def wait_disconnected(call: CallPage, timeout: float = 30.0) -> dict[str, Any]:
    """The page's ``disconnected`` record, once the page has one."""
    event: dict[str, Any] = await call.wait(
        "(s) => s.events.find((e) => e.type === 'disconnected')", timeout
    )
    return event


async def assert_disconnected(call: CallPage, reason: str, code: int, shown: str) -> None:
    """The page was disconnected for ``reason`` with close ``code``, and its status line
    says so as an error: ``Disconnected: <shown> (<reason>, <code>)``."""
    event = await wait_disconnected(call)
    assert (event["reason"], event["code"]) == (reason, code), event
    assert await status_line(call) == (f"Disconnected: {shown} ({reason}, {code})", "error")


@contextlib.asynccontextmanager
async def watched_call(
    browser: Any, server: DevServer, name: str
) -> AsyncIterator[tuple[str, list[dict[str, Any]], CallPage]]:
    """A new session with a Python peer ``py`` that records who left it (its
    ``connection_destroyed`` events) and a page ``name`` in the call, not publishing:
    ``(session id, left, page)``.  On exit, py is still in the call and the page had no
    script error; both are closed."""
    sid = server.session()
    py = PythonPeer(server, sid, "py")
    try:
        await py.start(publish=False)
        gone: list[dict[str, Any]] = []
        py.session.on("connection_destroyed", gone.append)
        call = await join_call(browser, server, sid, name, publish=False)
        try:
            yield sid, gone, call
            # The others are still in the call.
            await py.session.signal("still", "here")
            assert not call.errors
        finally:
            await call.close()
    finally:
        await py.close()


# -- connecting ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_one_token_too_many_connections(browser: Any, server: DevServer) -> None:
    sid = server.session()
    token = server.token(sid, "tabs")
    tabs = await open_call(browser, server)
    extra: CallPage | None = None
    try:
        # As many connections as one token may have, from e2ee.js; then one more.
        result = await tabs.page.evaluate(
            """async ([sid, token, secret, n, minIterations]) => {
              const m = await import("/static/e2ee.js");
              const open = () => m.connect(location.origin, sid, token, {
                encryptionSecret: secret, policy: { minIterations } });
              window.tabs = [];
              for (let i = 0; i < n; i++) window.tabs.push(await open());
              try {
                await open();
                return { connected: true };
              } catch (e) {
                return { name: e.name, code: e.code, message: e.message,
                         isSessionError: e instanceof m.SessionError };
              }
            }""",
            [sid, token, SECRET, MAX_CONNECTIONS_PER_TOKEN, TEST_ITERATIONS],
        )
        assert result["code"] == "token_connection_limit", result
        assert result["isSessionError"]
        assert str(MAX_CONNECTIONS_PER_TOKEN) in result["message"]

        # The call page, with the same invitation, says so on its status line.
        extra = await open_call(
            browser,
            server,
            session=sid,
            token=token,
            name="tabs",
            publish=0,
            minIterations=TEST_ITERATIONS,
        )
        await extra.wait("(s) => s.ready", 20)
        await extra.page.fill("input[name=secret]", SECRET)
        await extra.page.click("#join-button")
        error = await extra.wait("(s) => s.error", 30)
        assert error["code"] == "token_connection_limit"
        text, kind = await status_line(extra)
        assert kind == "error"
        assert text.startswith("Could not join: this invitation is already open in too many")
        assert text.endswith("(token_connection_limit)")

        # The first ones are still in; closing one lets the next one in.
        assert await tabs.page.evaluate("window.tabs.every((s) => s.connected)")
        await tabs.page.evaluate("window.tabs.pop().disconnect()")
        await extra.page.click("#join-button")
        await extra.wait("(s) => s.connected", 30)
        assert await status_line(extra) == ("Connected", "connected")
        assert not tabs.errors
        assert not extra.errors
    finally:
        if extra is not None:
            await extra.close()
        await tabs.close()


# -- rate limits --------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_flooding_signal_is_rate_limited_then_closed_4029(
    browser: Any, server: DevServer
) -> None:
    async with watched_call(browser, server, "flood") as (_, gone, call):
        result = await call.page.evaluate(
            """async () => {
              const s = window.e2ee.session;
              const limited = [];
              s.on("rateLimited", (e) => limited.push(e.request));
              const closed = new Promise((resolve) => s.on("disconnected", resolve));
              const sends = [];
              for (let i = 0; i < 400; i++) {
                sends.push(s.signal("flood", "x").then(() => "ok", (e) => e.code));
              }
              const codes = {};
              for (const c of await Promise.all(sends)) codes[c] = (codes[c] ?? 0) + 1;
              const event = await closed;
              return { codes, event, limited: limited.length, limitedTypes: [...new Set(limited)],
                       connected: s.connected };
            }"""
        )
        codes = result["codes"]
        assert codes.get("ok", 0) >= 1, result
        assert codes.get("rate_limited", 0) >= 1, result
        assert set(codes) <= {"ok", "rate_limited", "disconnected"}, result
        assert result["limited"] == codes["rate_limited"]
        assert result["limitedTypes"] == ["signal"]
        assert result["event"]["reason"] == "rate_limited"
        assert result["event"]["code"] == CLOSE_RATE_LIMITED
        assert not result["connected"]

        await assert_disconnected(
            call, "rate_limited", CLOSE_RATE_LIMITED, "this browser sent messages too fast"
        )
        # The others see it leave for that reason, and stay connected.
        for _ in range(100):
            if gone:
                break
            await asyncio.sleep(0.1)
        assert [g["reason"] for g in gone] == ["rate_limited"]


@pytest.mark.timeout(90)
async def test_rate_limited_request_can_be_retried(browser: Any, server: DevServer) -> None:
    sid = server.session()
    call = await join_call(browser, server, sid, "eager", publish=False)
    try:
        await call.page.evaluate(WATCH_STATUS)
        result = await call.page.evaluate(
            """async () => {
              const s = window.e2ee.session;
              const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
              // Small batches until the server refuses one (a few strikes at most).
              let refused = 0, sent = 0;
              while (!refused && sent < 2000) {
                const batch = [];
                for (let i = 0; i < 10; i++) {
                  batch.push(s.signal("burst", "x").then(() => null, (e) => e.code));
                }
                sent += batch.length;
                const codes = (await Promise.all(batch)).filter(Boolean);
                if (codes.some((c) => c !== "rate_limited")) return { unexpected: codes };
                refused = codes.length;
              }
              // Back off and retry the way an application would.
              let tries = 0;
              for (;;) {
                tries++;
                try {
                  await s.signal("retry", "x");
                  break;
                } catch (e) {
                  if (e.code !== "rate_limited" || tries > 100) return { unexpected: [e.code] };
                  await sleep(100);
                }
              }
              return { refused, tries, connected: s.connected };
            }"""
        )
        assert "unexpected" not in result, result
        assert result["refused"] >= 1
        assert result["connected"]
        # The page told the user (once in its log), and is still in the call.
        state = await call.state()
        limited = [e for e in state["events"] if e["type"] == "rateLimited"]
        assert [e["request"] for e in limited] == ["signal"]
        assert state["connected"]
        assert state["error"] is None
        shown = await status_log(call)
        assert ('Slow down: too many "signal" messages (rate_limited)', "warn") in shown
        assert not call.errors
    finally:
        await call.close()


# -- subscriptions ------------------------------------------------------------------------

#: Makes the page's peer connections never produce an answer: a browser whose answer
#: never reaches the server.
NO_ANSWER = """
RTCPeerConnection.prototype.createAnswer = function () {
  window.answersHeld = (window.answersHeld ?? 0) + 1;
  return new Promise(() => {});
};
"""


@pytest.mark.timeout(120)
async def test_unanswered_subscription_expires(browser: Any, quick_server: DevServer) -> None:
    server = quick_server
    sid = server.session()
    py = PythonPeer(server, sid, "py")
    await py.start()
    call = await open_call(
        browser,
        server,
        session=sid,
        token=server.token(sid, "late"),
        name="late",
        publish=0,
        minIterations=TEST_ITERATIONS,
    )
    try:
        await call.page.add_init_script(NO_ANSWER)
        await call.page.reload()
        await call.wait("(s) => s.ready", 20)
        await call.page.evaluate(WATCH_STATUS)
        await call.page.fill("input[name=secret]", SECRET)
        await call.page.click("#join-button")
        await call.wait("(s) => s.connected", 30)
        # The page subscribes to py's stream at once; the server's pending timeout ends
        # it, and the page says so.
        error = await call.wait("(s) => s.events.find((e) => e.type === 'error' && e.code)", 60)
        assert error["code"] == "subscription_expired", error
        assert await call.page.evaluate("window.answersHeld") == 1
        shown = await status_log(call)
        expected = (
            "Could not receive py: the server gave up waiting for this browser's answer"
            " (subscription_expired)"
        )
        assert (expected, "warn") in shown
        assert await call.page.get_attribute(".tile:not(.local)", "data-state") == "no-media"

        # The same through e2ee.js: the event, then the rejection; nothing kept.
        stream_id = await py.stream_id("py")
        result = await call.page.evaluate(
            """async (streamId) => {
              const s = window.e2ee.session;
              const events = [];
              s.on("subscriptionExpired", (e) => events.push(e));
              try {
                await s.subscribe(streamId);
                return { resolved: true };
              } catch (e) {
                return { code: e.code, name: e.name, events, subscribers: s.subscribers.size,
                         connected: s.connected };
              }
            }""",
            stream_id,
        )
        assert result["code"] == "subscription_expired", result
        assert [e["stream_id"] for e in result["events"]] == [stream_id]
        assert result["subscribers"] == 0
        assert result["connected"]
        # The router let go of both.
        status, info = server.rest("GET", f"/v1/sessions/{sid}")
        assert status == 200
        assert info["router"]["subscriptions"] == {}
        assert not call.errors
    finally:
        await call.close()
        await py.close()


# -- too slow -----------------------------------------------------------------------------


def _own_network_services() -> list[int]:
    """The network-service processes of the Chromium this test process started (its
    descendants only: other Chromiums on the machine are left alone)."""
    parents: dict[int, int] = {}
    services = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if b"--utility-sub-type=network.mojom.NetworkService" in cmdline:
            services.append(pid)

    def mine(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid in services if mine(pid)]


@contextlib.contextmanager
def network_paused() -> Iterator[None]:
    """Stops this test's Chromium from reading any socket (its network service is
    stopped, SIGSTOP), as a browser too busy or too slow to keep up; resumed on exit."""
    pids = _own_network_services()
    assert pids, "no network service process of this Chromium found"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def _flood_to(
    server: DevServer, sid: str, target: str, stop: asyncio.Event, sent: list[int]
) -> None:
    """Directed signals of 8,000 random characters to ``target`` from one raw WebSocket,
    under its rate limit, until ``stop``.  Random, so that the WebSocket's compression
    (permessage-deflate) cannot shrink them."""
    ws_url = server.url.replace("http", "ws", 1) + f"/v1/sessions/{sid}/ws"
    token = server.token(sid, "sender")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, params={"token": token}) as ws,
    ):
        hello = await ws.receive_json(timeout=10)
        assert hello["type"] == "session", hello

        async def drain() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        try:
            while not stop.is_set():
                for _ in range(2):
                    data = base64.b64encode(os.urandom(6000)).decode()
                    await ws.send_json(
                        {"type": "signal", "to": target, "kind": "bulk", "data": data}
                    )
                    sent[0] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.12)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader


@pytest.mark.timeout(120)
async def test_page_that_stops_reading_is_dropped_as_too_slow(
    browser: Any, server: DevServer
) -> None:
    stop = asyncio.Event()
    sent = [0]
    floods: list[asyncio.Task[None]] = []
    async with watched_call(browser, server, "slow") as (sid, gone, call):
        try:
            victim = (await call.state())["connectionId"]
            with network_paused():
                floods = [
                    asyncio.create_task(_flood_to(server, sid, victim, stop, sent))
                    for _ in range(8)
                ]
                deadline = time.monotonic() + 60
                while not any(g["connection"]["id"] == victim for g in gone):
                    assert time.monotonic() < deadline, f"not dropped after {sent[0]} signals"
                    for task in floods:
                        if task.done():
                            task.result()
                    await asyncio.sleep(0.1)
                stop.set()
                await asyncio.gather(*floods)
            assert [g["reason"] for g in gone if g["connection"]["id"] == victim] == ["too_slow"]

            # Resumed, the page reads what was queued: the reason, then close 4008.
            await assert_disconnected(
                call,
                "too_slow",
                CLOSE_TOO_SLOW,
                "this browser fell too far behind the call's messages",
            )
        finally:
            stop.set()
            for task in floods:
                task.cancel()
            await asyncio.gather(*floods, return_exceptions=True)


# -- ended by the server -------------------------------------------------------------------


async def rejoin(call: CallPage) -> dict[str, Any]:
    """Clicks "Join" again on a page that was disconnected; the page's error."""
    await call.page.click("#join-button")
    error: dict[str, Any] = await call.wait("(s) => s.error", 30)
    return error


@pytest.mark.timeout(90)
async def test_force_disconnect_then_the_token_is_refused(browser: Any, server: DevServer) -> None:
    sid = server.session()
    call = await join_call(browser, server, sid, "kicked", publish=False)
    try:
        cid = (await call.state())["connectionId"]
        status, _ = server.rest("DELETE", f"/v1/sessions/{sid}/connections/{cid}")
        assert status == 204
        await assert_disconnected(
            call,
            "force_disconnected",
            CLOSE_FORCE_DISCONNECTED,
            "removed from the call by a moderator",
        )
        # The same invitation again: refused at connect, and said so.
        error = await rejoin(call)
        assert error["code"] == "token_revoked"
        assert await status_line(call) == (
            "Could not join: this invitation was revoked (token_revoked)",
            "error",
        )
        assert not call.errors
    finally:
        await call.close()


@pytest.mark.timeout(90)
async def test_deleted_session_disconnects_the_page(browser: Any, server: DevServer) -> None:
    sid = server.session()
    call = await join_call(browser, server, sid, "left", publish=False)
    try:
        status, _ = server.rest("DELETE", f"/v1/sessions/{sid}")
        assert status == 204
        await assert_disconnected(
            call, "session_deleted", CLOSE_NOT_FOUND, "the session was deleted"
        )
        assert not call.errors
    finally:
        await call.close()


@pytest.mark.timeout(90)
async def test_close_without_a_reason_is_named_by_its_code(browser: Any, server: DevServer) -> None:
    """A message over the hard limit: the server closes with 1009 and no ``disconnected``
    message; the page still names it."""
    sid = server.session()
    call = await join_call(browser, server, sid, "big", publish=False)
    try:
        code = await call.page.evaluate(
            """(size) => window.e2ee.session
                 .signal("big", "x".repeat(size))
                 .then(() => "ok", (e) => e.code)""",
            MAX_MESSAGE_BYTES + 1,
        )
        assert code == "disconnected"
        await assert_disconnected(call, "message_too_large", 1009, "a message was too large")
        assert not call.errors
    finally:
        await call.close()
