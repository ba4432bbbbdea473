"""A write that fails in the middle of an archive (the file size limit of the server
process, RLIMIT_FSIZE: writes past it fail with EFBIG, as a full disk fails them with
ENOSPC): the archive ends ``failed`` with the reason, the call goes on."""

from __future__ import annotations

import asyncio
import resource
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from support.archive import Call, Serve, wait_router_frames, wait_status
from support.server import Api

pytestmark = pytest.mark.timeout(120)

#: Bytes any file of the server may grow to: its databases stay below (about 50 KB),
#: the audio track of an archive passes it within seconds (about 16 KB a second).
FILE_LIMIT = 160 * 1024


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


@pytest.mark.asyncio
async def test_a_failed_write_mid_archive(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = await asyncio.to_thread(Serve, data, tmp_path, _limit_file_size)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(server, http)
            sid = (await api.create_session())["id"]
            call = Call(api, sid)
            try:
                pub, stream_id = await call.publish()
                sub = await call.subscribe(stream_id)
                await wait_router_frames(api, sid)
                status, archive = await api.call("POST", f"/v1/sessions/{sid}/archive", {})
                assert status == 201, archive
                assert (await pub.event("archive_started"))["archive"]["id"] == archive["id"]
                ev = await sub.event("archive_stopped", timeout=60)
                assert "File too large" in ev["archive"]["reason"], ev
                done = await wait_status(api, archive["id"])
                assert done["status"] == "failed", done
                assert "01-audio.webm: File too large" in done["reason"], done
                audio = next(e for e in done["streams"] if e["kind"] == "audio")
                assert audio["error"] is not None
                assert audio["frames"] > 0
                # The call is unaffected: the subscriber still gets the picture and tone.
                before = sum(c.count(good=True) for c in call.collectors)
                deadline = time.monotonic() + 30
                while sum(c.count(good=True) for c in call.collectors) < before + 50:
                    assert time.monotonic() < deadline, "media stopped with the archive"
                    await asyncio.sleep(0.1)
                assert not pub.ws.closed
                assert not sub.ws.closed
                _, session = await api.call("GET", f"/v1/sessions/{sid}")
                assert len(session["connections"]) == 2
            finally:
                await call.close()
                await api.close()
    finally:
        assert await asyncio.to_thread(server.stop) == 0
