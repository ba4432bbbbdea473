"""The real server against hostile HTTP: forged access-log lines, requests aiohttp's
parser rejects, sockets that never finish a request head, malformed SDP over signaling,
the ``serve`` options that keep the router's ICE to the configured addresses, no
``Server`` header, and the per-address limits of WebSocket connections."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from e2ee.server.limits import ServerLimits
from e2ee.tools import cli
from support.app_server import app_api
from support.server import Api, Peer, ServerProcess


def _address(server: ServerProcess) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _exchange(server: ServerProcess, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends ``data`` on a fresh connection and reads until the server closes it."""
    with socket.create_connection(_address(server), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _log_after(server: ServerProcess, offset: int, marker: str, timeout: float = 5.0) -> str:
    """The server's stderr written after ``offset``, once it mentions ``marker``."""
    deadline = time.monotonic() + timeout
    while True:
        text = server.stderr_path.read_bytes()[offset:].decode(errors="replace")
        if marker in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _log_size(server: ServerProcess) -> int:
    return server.stderr_path.stat().st_size


def test_access_log_escapes_request_text(server: ServerProcess) -> None:
    start = _log_size(server)
    forged = "2026-01-01 00:00:00,000 INFO aiohttp.access: forged"
    path = "/nothing%0A" + forged.replace(" ", "%20") + "%1B[31m%00%5C%22end"
    reply = _exchange(
        server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.1 404")
    text = _log_after(server, start, "end")
    assert "/nothing\\x0a" in text, text
    assert not any(line.startswith("2026-01-01") for line in text.splitlines()), text
    assert "\x1b" not in text
    assert "\x00" not in text
    assert "\\x1b[31m\\x00\\x5c\\x22end" in text

    # Long paths are capped.
    start = _log_size(server)
    _exchange(
        server, f"GET /{'a' * 5000}z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    text = _log_after(server, start, "aaa...")
    assert "aaa..." in text
    assert "az" not in text


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\x01\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9.9.9\r\nHost: x\r\n\r\n",
    ],
)
def test_parser_rejections_are_json_and_one_warning(
    server: ServerProcess, request_bytes: bytes
) -> None:
    start = _log_size(server)
    reply = _exchange(server, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400", reply
    assert b"application/json" in head.lower()
    error = json.loads(body)
    assert error["type"] == "error"
    assert error["code"] == "bad_request"
    assert b"Bad Header" not in body
    assert b"\x00" not in reply
    text = _log_after(server, start, "rejected a malformed request")
    lines = [line for line in text.splitlines() if "malformed request" in line]
    assert len(lines) == 1, text
    assert "WARNING" in lines[0], text
    assert "Traceback" not in text, text
    assert "ERROR" not in text, text
    assert "\x00" not in text
    assert "\x01" not in text


def test_half_sent_request_head_is_closed(server: ServerProcess) -> None:
    with socket.create_connection(_address(server), timeout=20) as sock:
        sock.sendall(b"GET /healthz HT")
        opened = time.monotonic()
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - opened
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
    assert waited < 13.0, waited


def test_idle_sockets_do_not_block_the_server(server: ServerProcess) -> None:
    socks = [socket.create_connection(_address(server), timeout=5) for _ in range(50)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost")
        reply = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "sdp",
    [
        # An m-line without formats: aiortc's parser asserts on it.
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "a=fingerprint:sha-256 AA:BB\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n",
        # No DTLS fingerprint anywhere.
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=rtpmap:96 VP8/90000\r\n",
    ],
)
async def test_malformed_offer_is_bad_request_without_traceback(
    api: Api, server: ServerProcess, sdp: str
) -> None:
    session = await api.create_session(e2ee=True, kdf_iterations=1000)
    peer = await api.join(session["id"], "publisher")
    start = await asyncio.to_thread(_log_size, server)
    reply = await peer.request({"type": "publish", "sdp": sdp, "sdp_type": "offer"})
    assert (reply["type"], reply["code"]) == ("error", "bad_request"), reply
    # The connection still works.
    assert (await peer.request({"type": "ping"}))["type"] == "pong"
    await asyncio.sleep(0.2)
    text = await asyncio.to_thread(
        lambda: server.stderr_path.read_bytes()[start:].decode(errors="replace")
    )
    assert "Traceback" not in text, text
    assert "ERROR" not in text, text


def test_serve_media_and_stun_options() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--media-address", "10.0.0.5", "--media-address", "::1"])
    assert args.media_address == ["10.0.0.5", "::1"]
    assert args.stun_server is None
    args = parser.parse_args(["serve", "--stun-server", "stun:stun.example.org:3478"])
    assert args.stun_server == ["stun:stun.example.org:3478"]
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--media-address", "example.org"])


@pytest.mark.asyncio
async def test_open_connections_are_bounded() -> None:
    from aiohttp import web

    from e2ee.server.app import reject_malformed
    from e2ee.server.http_compat import GuardedAppRunner

    runner = GuardedAppRunner(
        web.Application(), max_connections=2, reject=reject_malformed, keepalive_timeout=30
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    held = []
    try:
        for _ in range(2):
            held.append(await asyncio.open_connection("127.0.0.1", port))
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        held.append((reader, writer))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
        # The held ones still work.
        first_reader, first_writer = held[0]
        first_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(first_reader.read(), 5)).startswith(b"HTTP/1.1 404")
    finally:
        for _, writer in held:
            writer.close()
        await runner.cleanup()


# -- no Server header ---------------------------------------------------------------------


def _head(reply: bytes) -> list[bytes]:
    return reply.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")


def test_no_response_names_the_server_software(server: ServerProcess) -> None:
    host, port = _address(server)
    requests = {
        "health": b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "not found": b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "parser rejection": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\x01\r\n\r\n",
        "bad version": b"GET / HTTP/9.9.9\r\nHost: x\r\n\r\n",
        "websocket": (
            f"GET /v1/sessions/nope/ws?token=x HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    }
    for name, request in requests.items():
        reply = _exchange(server, request)
        head = _head(reply)
        assert head[0].startswith(b"http/1."), (name, reply)
        assert not [h for h in head if h.startswith(b"server:")], (name, head)
        assert b"aiohttp" not in reply.lower(), (name, reply)


# -- per-address WebSocket limits -----------------------------------------------------------


async def _refusal(api: Api, sid: str) -> tuple[int, dict[str, Any], Any]:
    """(status, JSON body, headers) of a WebSocket upgrade the server refuses."""
    url = f"{api.server.ws_base}/v1/sessions/{sid}/ws"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.http.ws_connect(url, params={"token": api.mint(sid, "subscriber")})
    status = info.value.status
    # The same refusal, read as plain HTTP to see its body.
    async with api.http.get(
        api.server.url + f"/v1/sessions/{sid}/ws",
        params={"token": api.mint(sid, "subscriber")},
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    ) as resp:
        assert resp.status == status
        return status, await resp.json(), resp.headers


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "refused a WebSocket" in r.getMessage()]


@pytest.mark.asyncio
async def test_open_websockets_per_address_are_bounded(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    limits = ServerLimits(max_connections_per_address=3, connect_rate=0.001, connect_burst=100)
    caplog.set_level(logging.INFO, logger="e2ee.server.app")
    async with app_api(tmp_path, http, limits=limits) as api:
        sid = (await api.create_session())["id"]
        peers = [await api.join(sid, "subscriber") for _ in range(3)]
        status, body, headers = await _refusal(api, sid)
        assert status == 429
        assert (body["type"], body["code"]) == ("error", "address_connection_limit")
        assert headers["Retry-After"] == "1"
        assert "Server" not in headers
        lines = _refusal_lines(caplog)
        assert len(lines) == 2  # one WARNING line per refusal
        assert {r.levelno for r in lines} == {logging.WARNING}
        assert "127.0.0.1: address_connection_limit" in lines[0].getMessage()
        # REST from the same address is not concerned; the peers are still served.
        status, _ = await api.call("GET", f"/v1/sessions/{sid}")
        assert status == 200
        assert (await peers[0].request({"type": "ping"}))["type"] == "pong"
        # A connection that ends frees its place.
        await peers[0].close()
        statuses: list[int] = []
        for _ in range(50):
            try:
                await api.join(sid, "subscriber")
                break
            except aiohttp.WSServerHandshakeError as exc:
                statuses.append(exc.status)
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the closed connection's place was never freed")
        assert set(statuses) <= {429}


@pytest.mark.asyncio
async def test_new_websockets_per_address_are_rate_limited(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    limits = ServerLimits(connect_rate=0.001, connect_burst=5)  # no refill during the test
    caplog.set_level(logging.INFO, logger="e2ee.server.app")
    async with app_api(tmp_path, http, limits=limits) as api:
        sid = (await api.create_session())["id"]
        for _ in range(5):
            peer = await api.join(sid, "subscriber")
            await peer.close()  # closing gives back no attempt
        status, body, headers = await _refusal(api, sid)
        assert (status, body["code"]) == (429, "rate_limited")
        assert "Server" not in headers
        lines = _refusal_lines(caplog)
        assert len(lines) == 2
        assert "127.0.0.1: rate_limited" in lines[0].getMessage()
        status, _ = await api.call("GET", "/healthz", headers={})
        assert status == 200


@pytest.mark.asyncio
async def test_the_default_address_limits_let_a_busy_loopback_through(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # The default budget fits what the test suite does from one address at once.
    async with app_api(tmp_path, http) as api:
        sid = (await api.create_session(max_participants=100))["id"]
        peers: list[Peer] = await asyncio.gather(*(api.join(sid, "subscriber") for _ in range(60)))
        assert len({p.id for p in peers}) == 60
