"""The browser client in a cluster (issue 14, docs/cluster.md), in real Chromium: three
real ``e2ee serve --cluster`` node processes and one real ``redis-server`` on loopback.

The Python client joins first and publishes, so the session is placed on one node (the
owner); the call page is loaded from another node and joins with its token there: that
node redirects its WebSocket to the owner, the page follows (the page's policy lets it
connect there), logs it, and then the two decode each other's E2EE media (the content
checks of test_browser_client.py).  The page's policy names every live node.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from browser.helpers import TEST_ITERATIONS, PythonPeer, join_call
from browser.test_browser_client import python_sees, sees
from e2ee.server.store import Credentials
from e2ee.server.tokens import mint_token, project_auth_token
from support.cluster import NodeProcess
from support.redis_server import RedisServer

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Front:
    """One node as the browser helpers use a server (its ``url`` and ``token()``); the
    project's credentials are the cluster's (in Redis), so any node's token works on all."""

    def __init__(self, node: NodeProcess, creds: Credentials) -> None:
        self.node = node
        self.url = node.url
        self.creds = creds

    def token(self, session_id: str, name: str = "", role: str = "publisher") -> str:
        return mint_token(
            self.creds.api_key, self.creds.api_secret, session_id, role=role, data=name
        )

    def new_session(self) -> str:
        auth = project_auth_token(self.creds.api_key, self.creds.api_secret)
        req = urllib.request.Request(
            self.url + "/v1/sessions",
            data=b'{"e2ee": true, "kdf_iterations": %d}' % TEST_ITERATIONS,
            method="POST",
            headers={"Authorization": f"Bearer {auth}", "Content-Type": "application/json"},
        )
        with _NO_PROXY.open(req, timeout=10) as resp:
            assert resp.status == 201
            return str(json.loads(resp.read())["id"])

    def page_policy(self) -> str:
        with _NO_PROXY.open(self.url + "/", timeout=10) as resp:
            return str(resp.headers["Content-Security-Policy"])


@pytest.fixture(scope="module")
def fronts(
    redis_server_module: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Front]]:
    directory: Path = tmp_path_factory.mktemp("browser-cluster")
    nodes: list[NodeProcess] = []
    try:
        for name in ("node-a", "node-b", "node-c"):
            nodes.append(NodeProcess(redis_server_module.url, name, directory).start())
        creds = nodes[0].credentials()
        yield [Front(node, creds) for node in nodes]
    finally:
        for node in nodes:
            node.stop()


def test_the_page_may_connect_to_every_live_node(fronts: list[Front]) -> None:
    policy = fronts[0].page_policy()
    [connect] = [d.split()[1:] for d in policy.split("; ") if d.startswith("connect-src ")]
    for front in fronts:
        socket = "ws" + front.url.removeprefix("http")
        assert front.url in connect
        assert socket in connect
    assert not any("*" in source for source in connect)
    assert "script-src 'self'" in policy


@pytest.mark.timeout(180)
@pytest.mark.asyncio(loop_scope="session")
async def test_the_page_follows_the_redirect_to_the_owner_and_decodes(
    browser: Any, fronts: list[Front]
) -> None:
    sid = fronts[1].new_session()
    # The Python client joins first, through node B: the session is placed (on the
    # least-loaded node) and the client follows a redirect if that is not B.
    py = PythonPeer(fronts[1], sid, "py")
    await py.start()
    call = None
    try:
        [owner] = [f for f in fronts if f.url == py.session.url]
        entry = next(f for f in fronts if f is not owner)
        call = await join_call(browser, entry, sid, "bea")

        # The page was loaded from `entry`, and its session is on the owner.
        state = await call.state()
        [redirect] = [e for e in state["events"] if e["type"] == "redirected"]
        assert redirect["fromUrl"] == entry.url
        assert redirect["url"] == owner.url
        assert redirect["nodeId"] == owner.node.node_id
        assert await call.page.evaluate("window.e2ee.session.url") == owner.url
        assert await call.page.evaluate("location.origin") == entry.url
        log = await call.page.inner_text("#log")
        assert f"Redirected to node {owner.node.node_id} at {owner.url}" in log

        # Media both ways through the owner's router, decrypted and looking right.
        shown = await sees(call, "py", 60)
        assert abs(shown["left"] - 40) < 20
        assert abs(shown["right"] - 210) < 20
        collectors = await py.receive("bea")
        await python_sees(collectors, 30)
        stream = next(s for s in (await call.state())["streams"] if s["name"] == "py")
        assert stream["video"]["framesMismatched"] == stream["video"]["framesFailed"] == 0
        assert not call.errors
        assert not [line for line in call.console if "Content Security Policy" in line]
    finally:
        if call is not None:
            await call.close()
        await py.close()


# -- the rules, in the page (no cluster needed) ---------------------------------------------

REDIRECT_RULES = """async ([current, targets]) => {
  const { redirectTarget } = await import("/static/redirect.js");
  return targets.map((t) => {
    try {
      return redirectTarget(current, t);
    } catch (e) {
      return `${e.code}: ${e.message}`;
    }
  });
}"""


@pytest.mark.timeout(60)
@pytest.mark.asyncio(loop_scope="session")
async def test_redirect_rules_are_the_python_clients(page: Any) -> None:
    followed = await page.evaluate(
        REDIRECT_RULES,
        [
            "http://a.test:8080",
            ["http://b.test:8081", "https://b.test/e2ee/", "HTTP://B.test:8081/"],
        ],
    )
    assert followed == ["http://b.test:8081", "https://b.test/e2ee", "http://b.test:8081"]
    refused = await page.evaluate(
        REDIRECT_RULES,
        [
            "https://a.test",
            [
                "http://b.test",
                "ws://b.test",
                "javascript:alert(1)",
                "",
                "b.test",
                "https://u:p@b.test",
            ],
        ],
    )
    assert refused[0].startswith("protocol_error: the server redirected from https to")
    assert "the token would travel unencrypted" in refused[0]
    assert refused[3] == "protocol_error: the server's redirect names no URL"
    assert all(r.startswith("protocol_error: ") for r in refused)
    assert await page.evaluate("import('/static/e2ee.js').then((m) => m.MAX_REDIRECTS)") == 3


@pytest_asyncio.fixture(loop_scope="session")
async def redirecting_node() -> AsyncIterator[tuple[str, list[str]]]:
    """A node that answers every join with a redirect to itself (nodes that disagree), or
    for session ``moving`` with a hello, then the redirect (the session moved); (its URL,
    the paths of the WebSockets it answered)."""
    joins: list[str] = []
    url = ""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        joins.append(request.path_qs)
        if request.match_info["sid"] == "moving":  # joined, then the session moves
            session = {"id": "moving", "e2ee": False, "suite": None, "kdf_iterations": None}
            await sock.send_json(
                {"type": "session", "session": session, "connection": {"id": "c1"}}
            )
        await sock.send_json({"type": "redirect", "url": url + "/", "node_id": "node-x"})
        await sock.close(code=4302, message=b"redirect")
        return sock

    app = web.Application()
    app.router.add_get("/v1/sessions/{sid}/ws", ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield url, joins
    await runner.cleanup()


@pytest.mark.timeout(60)
@pytest.mark.asyncio(loop_scope="session")
async def test_at_most_three_redirects_in_a_row(
    page: Any, redirecting_node: tuple[str, list[str]]
) -> None:
    url, joins = redirecting_node
    outcome = await page.evaluate(
        """async (url) => {
          const { Session } = await import("/static/e2ee.js");
          const session = new Session(url, "s1", "tok en", { requestTimeout: 10000 });
          const seen = [];
          session.on("redirected", (ev) => seen.push(ev));
          try {
            await session.connect();
            return { seen };
          } catch (e) {
            return { seen, code: e.code, name: e.constructor.name, message: e.message };
          }
        }""",
        url,
    )
    assert outcome["code"] == "too_many_redirects"
    assert outcome["name"] == "Redirected"
    assert outcome["message"].startswith("more than 3 redirects in a row")
    assert [e["url"] for e in outcome["seen"]] == [url] * 3
    assert {e["nodeId"] for e in outcome["seen"]} == {"node-x"}
    # The first join and the three redirects followed, each with the same path and token.
    assert joins == ["/v1/sessions/s1/ws?token=tok%20en"] * 4


@pytest.mark.timeout(60)
@pytest.mark.asyncio(loop_scope="session")
async def test_a_session_moved_while_connected_says_so(
    page: Any, redirecting_node: tuple[str, list[str]]
) -> None:
    # The browser client does not reconnect on its own: the session ends with reason
    # `redirected`, and joining again (through any node) follows the redirect.
    url, _ = redirecting_node
    outcome = await page.evaluate(
        """async (url) => {
          const { Session } = await import("/static/e2ee.js");
          const session = new Session(url, "moving", "token", { requestTimeout: 10000 });
          const ended = new Promise((resolve) => session.on("disconnected", resolve));
          await session.connect();
          return await ended;
        }""",
        url,
    )
    assert outcome == {"type": "disconnected", "reason": "redirected", "code": 4302}
