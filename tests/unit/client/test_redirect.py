"""Which redirects the client follows (cluster mode, e2ee.client.redirect): a base URL of
http(s), never a step down from https to http; anything else is a protocol error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from e2ee.client.errors import Redirected, SessionError
from e2ee.client.redirect import MAX_REDIRECTS, redirect_target


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        ("http://a:8080", "http://b:8081", "http://b:8081"),
        ("http://a:8080", "http://b:8081/", "http://b:8081"),
        ("http://a:8080", "https://b.example.org", "https://b.example.org"),
        ("https://a", "https://b/calls", "https://b/calls"),
        ("http://[::1]:1", "http://[::1]:2", "http://[::1]:2"),
    ],
)
def test_a_good_redirect_is_followed(current: str, target: str, expected: str) -> None:
    assert redirect_target(current, target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "",
        None,
        42,
        "ws://b:1",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "http://b:99999",
    ],
)
def test_a_bad_redirect_is_a_protocol_error(target: object) -> None:
    with pytest.raises(SessionError) as refused:
        redirect_target("http://a:8080", target)
    assert refused.value.code == "protocol_error"


def test_a_redirect_from_https_to_http_is_refused() -> None:
    with pytest.raises(SessionError, match="unencrypted") as refused:
        redirect_target("https://a", "http://b:8080")
    assert refused.value.code == "protocol_error"


def test_the_redirect_error_carries_where_to_go() -> None:
    err = Redirected("http://b:1", "node-b")
    assert (err.code, err.url, err.node_id) == ("redirect", "http://b:1", "node-b")
    assert Redirected("http://b:1", "", "too_many_redirects").code == "too_many_redirects"
    assert MAX_REDIRECTS == 3


def test_a_single_node_server_never_imports_redis(tmp_path: object) -> None:
    """Without --cluster nothing of the cluster, nor the redis package, is loaded."""
    probe = (
        "import asyncio, sys, tempfile\n"
        "import e2ee.server.app\n"
        "async def main():\n"
        "    app = await e2ee.server.app.create_app(tempfile.mkdtemp())\n"
        "    await app.cleanup()\n"
        "asyncio.run(main())\n"
        "names = ('redis', 'redis.', 'e2ee.server.cluster')\n"
        "print(sorted(m for m in sys.modules if m.startswith(names)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
