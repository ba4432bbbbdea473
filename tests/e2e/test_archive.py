"""Archiving of routed sessions without E2EE, end to end: the real application and media
router in process, real aiortc publishers and subscribers on loopback (no E2EE), the
archive's files downloaded over REST and decoded here with PyAV (the server never
decodes).  ``E2EE_TEST_ARCHIVE_SECONDS`` sets the length of the demo-like call
(default 10 s)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from e2ee.archive.config import ArchiveConfig
from support.archive import (
    Call,
    archive_app,
    decode,
    download,
    manifest,
    wait_router_frames,
    wait_status,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

DEMO_SECONDS = float(os.environ.get("E2EE_TEST_ARCHIVE_SECONDS", "10"))


async def _start(api: object, sid: str, **body: object) -> dict[str, object]:
    status, archive = await api.call("POST", f"/v1/sessions/{sid}/archive", body)  # type: ignore[attr-defined]
    assert status == 201, archive
    return dict(archive)


async def test_archive_of_a_demo_call(tmp_path: Path) -> None:
    """A publisher (the synthetic picture and tone) and a subscriber, archived for
    DEMO_SECONDS: one WebM file per track, durations within 0.5 s, content intact."""
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            pub, stream_id = await call.publish(name="alice")
            sub = await call.subscribe(stream_id)
            await wait_router_frames(api, sid)
            archive = await _start(api, sid, name="demo")
            aid = str(archive["id"])
            assert archive["status"] == "started"
            for peer in (pub, sub):
                ev = await peer.event("archive_started")
                assert ev["archive"]["id"] == aid
                assert ev["archive"]["name"] == "demo"
            # Polled while it records (the server closes connections idle for 10 s).
            deadline = time.monotonic() + DEMO_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(1.0, left))
                status, live = await api.call("GET", f"/v1/archives/{aid}")
                assert (status, live["status"]) == (200, "started"), live
            status, stopped = await api.call("POST", f"/v1/archives/{aid}/stop")
            assert (status, stopped["status"]) == (200, "stopped"), stopped
            ev = await sub.event("archive_stopped")
            assert ev["archive"]["id"] == aid
            done = await wait_status(api, aid)
            assert done["status"] == "available", done
            # The call itself went on: the subscriber decoded the picture and the tone.
            assert all(c.count(good=True) > 0 for c in call.collectors)
            _, session = await api.call("GET", f"/v1/sessions/{sid}")
            assert session["router"]["frames_decoded"] == 0
        finally:
            await call.close()
        zf = await download(api, aid)
        meta = manifest(zf)
        assert meta["archive_id"] == aid
        assert meta["status"] == "available"
        assert sorted(n for n in zf.namelist()) == [
            "00-video.webm",
            "01-audio.webm",
            "manifest.json",
        ]
        length = float(done["duration"])
        assert abs(length - DEMO_SECONDS) < 2.0  # the stop request's own latency
        for entry in meta["streams"]:
            assert entry["stream_id"] == stream_id
            assert entry["connection_data"] == "name=alice"
            assert entry["name"] == "alice"
            assert entry["error"] is None
            assert entry["dropped_overflow"] == 0
            got = decode(zf.read(entry["file"]))
            assert got.kind == entry["kind"]
            assert abs(got.duration - length) < 0.5, (entry, got, length)
            assert abs(entry["duration"] - length) < 0.5, (entry, length)
            assert entry["start_offset"] < 0.5, entry
            if got.kind == "video":
                assert (got.width, got.height) == (320, 240)
                assert got.frames >= 20 * length, got  # 30 fps sent
                assert got.good >= 0.95 * got.frames, got
            else:
                assert got.frames >= 40 * length, got  # 50 frames a second
                assert got.good >= 0.95 * got.frames, got


async def test_streams_join_and_leave_during_the_archive(tmp_path: Path) -> None:
    """A stream published after the start is archived; one that ends mid-archive has its
    file finished; has_video false archives only audio."""
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            _, first_id = await call.publish(name="first")
            await wait_router_frames(api, sid, 10)
            aid = str((await _start(api, sid, has_video=False))["id"])
            second, second_id = await call.publish(name="second")
            await asyncio.sleep(1.5)
            reply = await second.request({"type": "unpublish", "stream_id": second_id})
            assert reply["type"] == "ok", reply
            await asyncio.sleep(1.5)
            status, _ = await api.call("POST", f"/v1/archives/{aid}/stop")
            assert status == 200
            done = await wait_status(api, aid)
        finally:
            await call.close()
        assert done["status"] == "available", done
        streams = {(e["stream_id"], e["kind"]): e for e in done["streams"]}
        assert set(streams) == {(first_id, "audio"), (second_id, "audio")}
        zf = await download(api, aid)
        durations = {}
        for (stream, _), entry in streams.items():
            got = decode(zf.read(entry["file"]))
            assert got.good >= 0.9 * got.frames > 0, got
            durations[stream] = got.duration
        assert durations[second_id] < durations[first_id] - 1.0, durations
        assert streams[(second_id, "audio")]["start_offset"] > 0


async def test_session_ending_mid_archive(tmp_path: Path) -> None:
    """Everyone leaves: the archive stops (reason session_ended) and is available."""
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            await call.publish(video=False)
            await wait_router_frames(api, sid, 10)
            aid = str((await _start(api, sid))["id"])
            await asyncio.sleep(1.0)
        finally:
            await call.close()
            await api.close()  # the last connection leaves: the room closes
        done = await wait_status(api, aid)
        assert (done["status"], done["reason"]) == ("available", "session_ended"), done
        assert done["streams"][0]["frames"] > 0
        status, err = await api.call("POST", f"/v1/archives/{aid}/stop")
        assert (status, err["code"]) == (409, "archive_not_recording")


async def test_session_deleted_mid_archive(tmp_path: Path) -> None:
    """DELETE of the session: everyone is disconnected, the archive is finished."""
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            pub, _ = await call.publish()
            await wait_router_frames(api, sid)
            aid = str((await _start(api, sid))["id"])
            await asyncio.sleep(1.0)
            status, _ = await api.call("DELETE", f"/v1/sessions/{sid}")
            assert status == 204
            assert (await pub.event("disconnected"))["reason"] == "session_deleted"
            done = await wait_status(api, aid)
        finally:
            await call.close()
        assert (done["status"], done["reason"]) == ("available", "session_ended"), done
        assert {e["kind"] for e in done["streams"]} == {"video", "audio"}
        assert all(e["frames"] > 0 for e in done["streams"]), done["streams"]


async def test_maximum_duration(tmp_path: Path) -> None:
    config = ArchiveConfig(max_duration=1.5)
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http, config) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            pub, _ = await call.publish(video=False)
            aid = str((await _start(api, sid))["id"])
            ev = await pub.event("archive_stopped", timeout=20)
            assert ev["archive"]["id"] == aid
            assert ev["archive"]["reason"] == "max_duration"
            done = await wait_status(api, aid)
        finally:
            await call.close()
        assert (done["status"], done["reason"]) == ("available", "max_duration"), done
        assert 1.0 < done["duration"] < 3.0


async def test_start_and_stop_races(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            await call.publish(video=False)
            url = f"/v1/sessions/{sid}/archive"
            starts = await asyncio.gather(*(api.call("POST", url, {}) for _ in range(6)))
            codes = sorted(status for status, _ in starts)
            assert codes == [201] + [409] * 5, starts
            assert {b["code"] for s, b in starts if s == 409} == {"archive_in_progress"}
            aid = next(b["id"] for s, b in starts if s == 201)
            stops = await asyncio.gather(
                *(api.call("POST", f"/v1/archives/{aid}/stop") for _ in range(6))
            )
            assert sorted(s for s, _ in stops) == [200] + [409] * 5, stops
            assert {b["code"] for s, b in stops if s == 409} == {"archive_not_recording"}
            # Stopped at once after the start, and started again while the first one is
            # still finishing its files: both end well.
            again = await _start(api, sid)
            status, _ = await api.call("POST", f"/v1/archives/{again['id']}/stop")
            assert status == 200
            third = await _start(api, sid)
            for archive_id in (aid, again["id"]):
                assert (await wait_status(api, str(archive_id)))["status"] == "available"
            status, _ = await api.call("POST", f"/v1/archives/{third['id']}/stop")
            assert status == 200
            assert (await wait_status(api, str(third["id"])))["status"] == "available"
            status, listed = await api.call("GET", f"/v1/archives?session_id={sid}")
            assert status == 200
            assert [a["id"] for a in listed["archives"]] == [third["id"], again["id"], aid]
        finally:
            await call.close()


@contextlib.contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """``directory`` cannot be written to, even by root (immutable) or by us (mode)."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a read-only directory")
        done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
        if done.returncode:
            pytest.skip(f"chattr +i failed: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)


async def test_unwritable_directory_fails_and_the_call_goes_on(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            pub, stream_id = await call.publish()
            sub = await call.subscribe(stream_id)
            await wait_router_frames(api, sid)
            with _read_only(tmp_path / "archives"):
                status, archive = await api.call("POST", f"/v1/sessions/{sid}/archive", {})
                assert status == 201, archive
                done = await wait_status(api, archive["id"])
            assert done["status"] == "failed", done
            assert "cannot be created" in done["reason"], done
            status, err = await api.call("GET", f"/v1/archives/{archive['id']}/download")
            assert (status, err["code"]) == (409, "archive_not_available")
            # The session is unaffected: media still flows, and a new archive works.
            before = sum(c.count(good=True) for c in call.collectors)
            await asyncio.sleep(1.0)
            assert sum(c.count(good=True) for c in call.collectors) > before
            again = await _start(api, sid)
            await asyncio.sleep(0.5)
            await api.call("POST", f"/v1/archives/{again['id']}/stop")
            assert (await wait_status(api, str(again["id"])))["status"] == "available"
            assert not pub.ws.closed
            assert not sub.ws.closed
        finally:
            await call.close()


async def test_refusals(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http) as api:
        e2ee = (await api.create_session(e2ee=True, kdf_iterations=1000))["id"]
        relayed = (await api.create_session(media_mode="relayed"))["id"]
        empty = (await api.create_session())["id"]
        for sid, status, code in [
            (e2ee, 409, "e2ee_unsupported_feature"),
            (relayed, 409, "relayed_unsupported_feature"),
            (empty, 409, "no_clients"),
            ("nope", 404, "session_not_found"),
        ]:
            got, err = await api.call("POST", f"/v1/sessions/{sid}/archive", {})
            assert (got, err["code"]) == (status, code), (sid, err)
        got, err = await api.call("POST", f"/v1/sessions/{e2ee}/archive", {})
        assert "cannot decode end-to-end encrypted media" in err["message"]
        got, err = await api.call("POST", f"/v1/sessions/{relayed}/archive", {})
        assert "media_mode 'routed'" in err["message"]
        for body in (
            {"output_mode": "composed"},
            {"has_audio": False, "has_video": False},
            {"has_audio": "yes"},
            {"name": 5},
            {"nme": "typo"},
        ):
            got, err = await api.call("POST", f"/v1/sessions/{empty}/archive", body)
            assert (got, err["code"]) == (400, "bad_request"), body
        for method, path in [
            ("GET", "/v1/archives/nope"),
            ("POST", "/v1/archives/nope/stop"),
            ("DELETE", "/v1/archives/nope"),
            ("GET", "/v1/archives/nope/download"),
        ]:
            got, err = await api.call(method, path)
            assert (got, err["code"]) == (404, "archive_not_found"), path
            got, err = await api.call(method, path, headers={})
            assert got == 401
        got, err = await api.call("GET", "/v1/archives?limit=0")
        assert (got, err["code"]) == (400, "bad_request")
        got, err = await api.call("GET", "/v1/archives?sesion_id=x")
        assert (got, err["code"]) == (400, "bad_request")


async def test_delete_and_retention(tmp_path: Path) -> None:
    """DELETE is immediate (not while recording); the sweep deletes expired archives."""
    config = ArchiveConfig(retention=1.0, sweep_interval=0.2)
    async with aiohttp.ClientSession() as http, archive_app(tmp_path, http, config) as api:
        sid = (await api.create_session())["id"]
        call = Call(api, sid)
        try:
            await call.publish(video=False)
            first = str((await _start(api, sid))["id"])
            status, err = await api.call("DELETE", f"/v1/archives/{first}")
            assert (status, err["code"]) == (409, "archive_in_progress")
            status, err = await api.call("GET", f"/v1/archives/{first}/download")
            assert (status, err["code"]) == (409, "archive_not_available")
            await api.call("POST", f"/v1/archives/{first}/stop")
            await wait_status(api, first)
            assert (tmp_path / "archives" / first).is_dir()
            status, _ = await api.call("DELETE", f"/v1/archives/{first}")
            assert status == 204
            assert not (tmp_path / "archives" / first).exists()
            status, err = await api.call("GET", f"/v1/archives/{first}")
            assert (status, err["code"]) == (404, "archive_not_found")

            second = str((await _start(api, sid))["id"])
            await api.call("POST", f"/v1/archives/{second}/stop")
            done = await wait_status(api, second)
            assert done["expires_at"] == pytest.approx(done["stopped_at"] + 1.0)
            deadline = time.monotonic() + 30
            while (tmp_path / "archives" / second).exists():
                assert time.monotonic() < deadline, "the sweep did not delete the archive"
                await asyncio.sleep(0.1)
            status, _ = await api.call("GET", f"/v1/archives/{second}")
            assert status == 404
            status, listed = await api.call("GET", "/v1/archives")
            assert listed == {"archives": []}
        finally:
            await call.close()
