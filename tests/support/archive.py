"""Helpers for the archive tests: the real application in process with short archive
limits, a plain (non-E2EE) aiortc publisher and subscriber through the real router, and
the content checks on archived files (decoded here, in the test: the server never
decodes)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from e2ee.archive.config import ArchiveConfig
from e2ee.server.app import HEADER_TIMEOUT, MAX_CONNECTIONS, create_app, reject_malformed
from e2ee.server.http_compat import GuardedAppRunner
from e2ee.tools.synthetic import (
    FrameCollector,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    has_tone,
    looks_like_source,
)
from support.app_server import AppServer
from support.media import new_pc
from support.server import Api, Peer, Served


@contextlib.asynccontextmanager
async def archive_app(
    data_dir: Path, http: aiohttp.ClientSession, config: ArchiveConfig | None = None
) -> AsyncIterator[Api]:
    """The real application (real media router) with ``config``, and an API client."""
    app = await create_app(data_dir, archive_config=config or ArchiveConfig())
    runner = GuardedAppRunner(
        app,
        max_connections=MAX_CONNECTIONS,
        reject=reject_malformed,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=HEADER_TIMEOUT,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    api = Api(AppServer(data_dir, f"http://127.0.0.1:{port}", app), http)
    try:
        yield api
    finally:
        await api.close()
        await runner.cleanup()


class Serve(Served):
    """``e2ee serve --port 0`` in a child process (ICE on loopback), its output in files
    under ``home``; ``preexec``: run in the child before it starts (resource limits)."""

    def __init__(
        self, data_dir: Path, home: Path, preexec: Callable[[], None] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.out, self.err = home / "serve.out", home / "serve.err"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "E2EE_ICE_ADDRESSES": "127.0.0.1"}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "e2ee", "serve", "--port", "0", "--data-dir", str(data_dir)],
                stdout=out,
                stderr=err,
                cwd=home,
                env=env,
                preexec_fn=preexec,
            )
        deadline = time.monotonic() + 30
        while not (m := re.search(r"listening on (http://\S+)", self.out.read_text())):
            assert self.proc.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        self.url = m.group(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@dataclass
class Call:
    """Publishers and subscribers of one session; closes everything."""

    api: Api
    sid: str
    pcs: list[RTCPeerConnection] = field(default_factory=list)
    collectors: list[FrameCollector] = field(default_factory=list)

    async def publish(
        self, *, name: str = "cam", video: bool = True, audio: bool = True
    ) -> tuple[Peer, str]:
        peer = await self.api.join(self.sid, "publisher", data=f"name={name}")
        pc = new_pc()
        self.pcs.append(pc)
        if video:
            pc.addTransceiver(SyntheticVideoTrack(), direction="sendonly")
        if audio:
            pc.addTransceiver(SyntheticAudioTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        reply = await peer.request(
            {"type": "publish", "sdp": pc.localDescription.sdp, "sdp_type": "offer", "name": name},
            timeout=30,
        )
        assert reply["type"] == "answer", reply
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return peer, str(reply["stream_id"])

    async def subscribe(self, stream_id: str) -> Peer:
        peer = await self.api.join(self.sid, "subscriber")
        pc = new_pc()
        self.pcs.append(pc)

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self.collectors.append(FrameCollector(track).start())

        offer = await peer.request({"type": "subscribe", "stream_id": stream_id}, timeout=30)
        assert offer["type"] == "offer", offer
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        ok = await peer.request(
            {
                "type": "answer",
                "subscription_id": offer["subscription_id"],
                "sdp": pc.localDescription.sdp,
            },
            timeout=30,
        )
        assert ok["type"] == "ok", ok
        return peer

    async def close(self) -> None:
        for collector in self.collectors:
            await collector.stop()
        for pc in self.pcs:
            with contextlib.suppress(Exception):
                await pc.close()


async def wait_router_frames(api: Api, sid: str, frames: int = 30, timeout: float = 30) -> None:
    """Until the session's router has received ``frames`` frames."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, got = await api.call("GET", f"/v1/sessions/{sid}")
        if got["router"] and got["router"].get("frames_received", 0) >= frames:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the router received fewer than {frames} frames")


async def wait_status(
    api: Api, aid: str, statuses: tuple[str, ...] = ("available", "failed"), timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, got = await api.call("GET", f"/v1/archives/{aid}")
        assert status == 200, got
        if got["status"] in statuses:
            return dict(got)
        if time.monotonic() > deadline:
            raise TimeoutError(f"archive {aid} still {got['status']}")
        await asyncio.sleep(0.1)


async def download(api: Api, aid: str) -> zipfile.ZipFile:
    async with api.http.get(
        f"{api.server.url}/v1/archives/{aid}/download", headers=api.auth()
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "application/zip"
        data = await resp.read()
    return zipfile.ZipFile(io.BytesIO(data))


@dataclass
class Decoded:
    """One archived file, decoded by the test."""

    kind: str
    duration: float  # the container's duration, seconds
    frames: int
    good: int  # frames showing the synthetic picture / carrying the tone
    width: int = 0
    height: int = 0


def decode(data: bytes) -> Decoded:
    """Decodes a WebM file with PyAV and checks every frame for the synthetic content."""
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name.startswith("matroska"), container.format.name
        assert len(container.streams) == 1
        stream = container.streams[0]
        duration = (container.duration or 0) / av.time_base
        kind = stream.type
        frames = good = width = height = 0
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
        for frame in container.decode(stream):
            frames += 1
            if isinstance(frame, av.VideoFrame):
                width, height = frame.width, frame.height
                good += looks_like_source(frame)
            elif isinstance(frame, av.AudioFrame):
                # PyAV's decoder gives float samples; the tone check reads s16.
                for mono in resampler.resample(frame):
                    good += has_tone(mono)
    return Decoded(kind, duration, frames, good, width, height)


def manifest(zf: zipfile.ZipFile) -> dict[str, Any]:
    return dict(json.loads(zf.read("manifest.json")))
