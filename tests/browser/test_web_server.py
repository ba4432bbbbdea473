"""``e2ee serve`` serving the browser client, and its development mode (no browser here).

Both against the real CLI in a child process: ``e2ee serve --dev`` and plain
``e2ee serve``.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser.helpers import DevServer
from e2ee.server.static import _STATIC_NAME

STATIC = Path(__file__).resolve().parents[2] / "python" / "e2ee" / "web" / "static"


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("dev")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("plain"), dev=False).start()
    yield server
    server.stop()


def raw_get(
    server: DevServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A GET with ``path`` sent exactly as given (no client-side normalization)."""
    url = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        headers = headers or {}
        conn.putrequest("GET", path, skip_host="Host" in headers, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- static files ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_page_and_modules_are_served_with_their_types(plain_server: DevServer) -> None:
    status, headers, body = raw_get(plain_server, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == (STATIC / "index.html").read_bytes()
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    js = "text/javascript; charset=utf-8"
    # e2ee.js is the entry point; the modules it is made of are served beside it.
    modules = ["errors", "policy", "keyring", "link", "redirect", "transforms", "peers"]
    modules += ["emitter", "session"]
    modules += ["sframe-base", "sframe-header", "sframe-keys", "sframe-replay", "tiles", "eventlog"]
    expected = {
        "e2ee.js": js,
        **{f"{module}.js": js for module in modules},
        "e2ee-worker.js": js,
        "sframe.js": js,
        "app.js": js,
        "synthetic.js": js,
        "style.css": "text/css; charset=utf-8",
        "index.html": "text/html; charset=utf-8",
    }
    # Every module in the directory is listed here, so a new one is checked too.
    assert {p.name for p in STATIC.glob("*.js")} <= expected.keys()
    for name, content_type in expected.items():
        status, headers, body = raw_get(plain_server, f"/static/{name}")
        assert status == 200, name
        assert headers["content-type"] == content_type, name
        assert body == (STATIC / name).read_bytes(), name
        # Revalidated on every load: never a stale module mixed with a new one.
        assert headers["cache-control"] == "no-cache"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["etag"].startswith('"')


@pytest.mark.timeout(60)
def test_etag_revalidation(plain_server: DevServer) -> None:
    _, headers, _ = raw_get(plain_server, "/static/e2ee.js")
    status, again, body = raw_get(
        plain_server, "/static/e2ee.js", {"If-None-Match": headers["etag"]}
    )
    assert status == 304
    assert body == b""
    assert again["etag"] == headers["etag"]
    status, _, body = raw_get(plain_server, "/static/e2ee.js", {"If-None-Match": '"stale"'})
    assert status == 200
    assert body


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/..%2Fapp.py",
        "/static/%2e%2e%2fapp.py",
        "/static/..%2F..%2Fserver%2Fapp.py",
        "/static/%2E%2E/__init__.py",
        "/static/.hidden",
        "/static/",
        "/static/nope.js",
        "/static/__init__.py",
        "/static/e2ee.js%00.css",
        "/static/e2ee.js/",
        "/static//etc/passwd",
        "/static/..\\app.py",
    ],
)
def test_nothing_outside_the_static_directory(plain_server: DevServer, path: str) -> None:
    status, _headers, body = raw_get(plain_server, path)
    assert status == 404, (path, status, body[:200])
    assert b"import" not in body
    assert b"def " not in body


def test_static_names_are_one_plain_segment() -> None:
    for name in ("e2ee.js", "e2ee-worker.js", "style.css", "a_b.png"):
        assert _STATIC_NAME.fullmatch(name)
    for name in ("../x.js", ".env", "a/b.js", "a\\b.js", "", "x" * 200, "é.js"):
        assert not _STATIC_NAME.fullmatch(name)


# -- development mode ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_dev_mode_is_off_by_default(plain_server: DevServer) -> None:
    assert plain_server.get("/dev")[0] == 404
    status, _ = plain_server.post("/dev/sessions", {})
    assert status in (404, 405)
    assert not any("DEV MODE" in line for line in plain_server.lines)


@pytest.mark.timeout(60)
def test_dev_mode_is_refused_off_loopback(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "e2ee", "serve", "--dev", "--host", "0.0.0.0", "--port", "0"]
    proc = subprocess.run(
        [*cmd, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0
    assert "loopback" in proc.stderr
    assert "listening" not in proc.stdout


@pytest.mark.timeout(60)
def test_dev_creates_e2ee_sessions_and_tokens(dev_server: DevServer) -> None:
    status, info = dev_server.get("/dev")
    assert status == 200
    assert info["dev"] is True
    assert any("DEV MODE" in line for line in dev_server.lines)

    status, session = dev_server.post("/dev/sessions", {})
    assert status == 201
    assert session["e2ee"] is True
    assert session["media_mode"] == "routed"
    assert session["suite"] == 6
    assert session["kdf_iterations"] == 600_000

    status, session = dev_server.post("/dev/sessions", {"kdf_iterations": 1000, "suite": 5})
    assert status == 201
    assert session["kdf_iterations"] == 1000
    assert session["suite"] == 5
    # Always E2EE: the fields that could turn it off are refused, not ignored.
    for body in ({"e2ee": False}, {"media_mode": "relayed"}, {"e2e": True}):
        status, err = dev_server.post("/dev/sessions", body)
        assert status == 400, body
        assert err["code"] == "bad_request"
    assert dev_server.post("/dev/sessions", {"kdf_iterations": 10})[0] == 400

    status, token = dev_server.post(f"/dev/sessions/{session['id']}/tokens", {"data": "ann"})
    assert status == 201
    assert token["role"] == "publisher"
    assert token["data"] == "ann"
    assert token["session_id"] == session["id"]
    assert token["token"].count(".") == 2
    assert dev_server.post(f"/dev/sessions/{session['id']}/tokens", {"role": "god"})[0] == 400
    assert dev_server.post(f"/dev/sessions/{session['id']}/tokens", {"x": 1})[0] == 400
    status, err = dev_server.post("/dev/sessions/nope/tokens", {})
    assert status == 404
    assert err["code"] == "session_not_found"


@pytest.mark.timeout(60)
def test_dev_answers_only_its_own_pages(dev_server: DevServer) -> None:
    port = urllib.parse.urlsplit(dev_server.url).port
    # Another site's page (a cross-origin POST always carries its Origin).
    status, _, _ = raw_get(dev_server, "/dev", {"Origin": "http://evil.example"})
    assert status == 403
    # A DNS-rebinding page: the browser sends its own host name.
    status, _, _ = raw_get(dev_server, "/dev", {"Host": f"evil.example:{port}"})
    assert status == 403
    status, _, _ = raw_get(dev_server, "/dev", {"Origin": dev_server.url})
    assert status == 200
    status, _, _ = raw_get(dev_server, "/dev", {"Host": f"localhost:{port}"})
    assert status == 200
