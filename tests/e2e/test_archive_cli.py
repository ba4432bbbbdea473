"""``e2ee archive start|stop|list|download`` against a real ``e2ee serve`` process, with a
real aiortc publisher (no E2EE) in the test's process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import zipfile
from pathlib import Path

import aiohttp
import pytest

from e2ee.archive.catalog import SQLiteArchiveCatalog
from support.archive import Call, Serve, decode, wait_router_frames
from support.cli import e2ee
from support.server import Api

pytestmark = pytest.mark.timeout(120)


async def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # In a thread: the publisher's media keeps flowing on this event loop meanwhile.
    return await asyncio.to_thread(e2ee, "archive", *args, check=check)


@pytest.mark.asyncio
async def test_archive_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = await asyncio.to_thread(Serve, data, tmp_path)
    where = ("--url", server.url, "--data-dir", str(data))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(server, http)
            sid = (await api.create_session())["id"]
            e2ee_sid = (await api.create_session(e2ee=True, kdf_iterations=1000))["id"]
            call = Call(api, sid)
            try:
                await call.publish(name="cli")
                await wait_router_frames(api, sid)
                aid = (await _cli("start", sid, "--name", "from-cli", *where)).stdout.strip()
                assert re.fullmatch(r"[A-Za-z0-9_-]{22}", aid), aid
                await asyncio.sleep(2.0)
                listed = (await _cli("list", "--session", sid, *where)).stdout
                assert aid in listed
                assert "started" in listed
                early = await _cli("download", aid, *where, check=False)
                assert early.returncode == 1
                assert "still recording" in early.stderr
                stopped = await _cli("stop", aid, *where)
                assert stopped.stdout.strip() == f"stopped archive {aid}"
                again = await _cli("stop", aid, *where, check=False)
                assert again.returncode == 1
                assert "archive_not_recording" in again.stderr
                out = tmp_path / "got.zip"
                done = await _cli("download", aid, "-o", str(out), *where)
                assert f"wrote {out}" in done.stdout
                refused = await _cli("start", e2ee_sid, *where, check=False)
                assert refused.returncode == 1
                assert "e2ee_unsupported_feature" in refused.stderr
                missing = await _cli("start", "nope", *where, check=False)
                assert "session_not_found" in missing.stderr
                # Left running when the server stops: finished on the way out.
                running = (await _cli("start", sid, *where)).stdout.strip()
                await asyncio.sleep(1.0)
            finally:
                await call.close()
                await api.close()
    finally:
        assert await asyncio.to_thread(server.stop) == 0
    catalog = SQLiteArchiveCatalog.in_data_dir(data)
    try:
        record = await catalog.get(running)
    finally:
        await catalog.close()
    assert record is not None
    assert (record.status, record.reason) == ("available", "session_ended"), record
    assert (data / "archives" / running / "archive.zip").is_file()
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == ["00-video.webm", "01-audio.webm", "manifest.json"]
        for name in names[:2]:
            got = decode(zf.read(name))
            assert got.frames > 0
            assert got.good >= 0.9 * got.frames, (name, got)


@pytest.mark.asyncio
async def test_an_archive_cut_short_by_kill_9_is_failed_at_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = await asyncio.to_thread(Serve, data, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(server, http)
            sid = (await api.create_session())["id"]
            call = Call(api, sid)
            try:
                await call.publish(name="cut")
                await wait_router_frames(api, sid)
                status, started = await api.call("POST", f"/v1/sessions/{sid}/archive", {})
                assert status == 201, started
                await asyncio.sleep(1.0)
            finally:
                server.proc.kill()  # no stop, no shutdown handler: a crash
                await asyncio.to_thread(server.proc.wait, 30)
                await call.close()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    again = await asyncio.to_thread(Serve, data, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            status, record = await Api(again, http).call("GET", f"/v1/archives/{started['id']}")
        assert status == 200, record
        assert record["status"] == "failed"
        assert "stopped while recording" in record["reason"]
        assert record["expires_at"] is not None  # swept like any other after retention
    finally:
        assert await asyncio.to_thread(again.stop) == 0
