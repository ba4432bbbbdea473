"""``e2ee demo``: a real E2EE call through a real router, measured.

Starts a server (or uses ``--url``), creates an end-to-end encrypted session, and runs N
participants as separate client connections, each publishing synthetic VP8 video and
Opus audio and subscribed to everyone else.  One more subscriber, the eavesdropper, gets
the same routed frames without the key and tries to decode them.

Two changes of secret:

* A third of the way in one participant changes its secret alone (an unplanned change):
  the others see one mismatch on its streams, and one match when they take the secret
  too.
* Two thirds of the way in, a planned change (docs/protocol.md §8): everyone accepts the
  second secret (receive only, :meth:`Session.accept_encryption_secret`), and once all
  have, everyone sets it.  No receiver sees a mismatch; the report counts, per pair, the
  mismatch events from the start of the planned change to the end (0 expected).

Every count in the report is measured: a video frame counts as decoded when the picture
is the source picture, an audio frame when it carries the source tone.

The session is created with the server's default of 600,000 PBKDF2 iterations, so the
clients keep their default :class:`~e2ee.wire.params.SessionPolicy`: no floor is lowered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from e2ee.client.session import Session, Subscriber
from e2ee.rtc import compat, net
from e2ee.server.store import Credentials, SQLiteStore
from e2ee.server.tokens import mint_token
from e2ee.tools.rest_client import credentials_or_fail, request
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack

__all__ = ["DemoCall", "run_demo"]

log = logging.getLogger(__name__)

FIRST_SECRET = "the first shared secret"
SECOND_SECRET = "the second shared secret"


@dataclass
class Pair:
    publisher: str
    subscriber: str
    sub: Subscriber
    collectors: dict[str, FrameCollector] = field(default_factory=dict)
    #: Index in ``sub.events`` where the planned change began (``None``: not yet).
    planned_from: int | None = None

    def report(self) -> dict[str, Any]:
        video_events = [e for e in self.sub.events if e.kind == "video"]
        planned = [] if self.planned_from is None else self.sub.events[self.planned_from :]
        return {
            "publisher": self.publisher,
            "subscriber": self.subscriber,
            "video_frames_decoded": self._good("video"),
            "audio_frames_decoded": self._good("audio"),
            "mismatch_events": sum(e.type == "encryption_secret_mismatch" for e in video_events),
            "match_events": sum(e.type == "encryption_secret_match" for e in video_events),
            # Audio and video: every mismatch a receiver saw during the planned change.
            "planned_change_mismatch_events": sum(
                e.type == "encryption_secret_mismatch" for e in planned
            ),
        }

    def _good(self, kind: str) -> int:
        c = self.collectors.get(kind)
        return c.count(good=True) if c else 0


class Eavesdropper:
    """Receives a stream's routed frames with a plain aiortc peer: no key, no transform."""

    def __init__(self, url: str, session_id: str, token: str) -> None:
        self._url, self._sid, self._token = url, session_id, token
        self.frames_received = 0
        self.collectors: list[FrameCollector] = []
        self.pcs: list[RTCPeerConnection] = []
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._n = 0

    async def connect(self) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(
            f"{self._url}/v1/sessions/{self._sid}/ws", params={"token": self._token}
        )
        first = await self._ws.receive_json(timeout=15)
        if first.get("type") != "session":
            raise RuntimeError(f"eavesdropper refused: {first}")

    async def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._ws is not None
        self._n += 1
        await self._ws.send_str(json.dumps({**msg, "id": self._n}))
        while True:
            reply = await self._ws.receive_json(timeout=15)
            if reply.get("id") == self._n:
                if reply.get("type") == "error":
                    raise RuntimeError(f"eavesdropper: {reply}")
                return dict(reply)

    async def subscribe(self, stream_id: str) -> None:
        offer = await self._request({"type": "subscribe", "stream_id": stream_id})
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.collectors.append(FrameCollector(track).start())

        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        for t in pc.getTransceivers():
            self._count_frames(t.receiver)
        await pc.setLocalDescription(await pc.createAnswer())
        await self._request(
            {
                "type": "answer",
                "subscription_id": offer["subscription_id"],
                "sdp": pc.localDescription.sdp,
            }
        )

    def _count_frames(self, receiver: Any) -> None:
        # Counts every routed frame handed to this peer's decoder (aiortc's private
        # decoder queue, see e2ee.rtc.compat); demo-only instrumentation.
        q = compat.decoder_queue(receiver)
        put = q.put

        def counting_put(item: Any, *args: Any, **kwargs: Any) -> None:
            if item is not None:
                self.frames_received += 1
            put(item, *args, **kwargs)

        q.put = counting_put

    def report(self) -> dict[str, Any]:
        decoded = sum(len(c.frames) for c in self.collectors)
        return {
            "frames_received": self.frames_received,
            "frames_decoded": decoded,  # the decoder produced something (noise counts)
            "frames_decodable": sum(c.count(good=True) for c in self.collectors),
        }

    async def close(self) -> None:
        for c in self.collectors:
            await c.stop()
        for pc in self.pcs:
            await pc.close()
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()


async def start_server(data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    """``e2ee serve`` in a child process on a free loopback port: (process, base URL).

    The child has a session of its own, so a Ctrl-C in the terminal reaches only the
    demo, which then stops it (:func:`stop_server`); if starting fails or is cancelled,
    the child is killed before this returns."""
    env = {**os.environ, net.ENV_VAR: os.environ.get(net.ENV_VAR, "127.0.0.1")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "e2ee",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            if not line:
                break
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                # Keep draining its output so the server never blocks on a full pipe.
                _DRAINS.add(asyncio.ensure_future(_drain(proc.stdout)))
                return proc, m.group(1)
        raise RuntimeError("the demo's server did not start")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


_DRAINS: set[asyncio.Future[None]] = set()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


class DemoCall:
    """One demo call: the server's credentials, the session, its participants, the pairs
    of publisher and subscriber, and the eavesdropper; :meth:`close` ends them."""

    def __init__(self, url: str, data_dir: Path, creds: Credentials) -> None:
        self.creds = creds
        self.url = url
        self.data_dir = data_dir
        self.info: dict[str, Any] = {}
        self.names: list[str] = []
        self.sessions: list[Session] = []
        self.stream_of: dict[str, str] = {}
        self.pairs: list[Pair] = []
        self.eve: Eavesdropper | None = None

    @property
    def sid(self) -> str:
        return str(self.info["id"])

    async def _rest(self, method: str, path: str, **kwargs: Any) -> Any:
        async with aiohttp.ClientSession() as http:
            return await request(http, method, self.url, path, self.creds, self.data_dir, **kwargs)

    def token(self, role: Literal["publisher", "subscriber"], name: str) -> str:
        return mint_token(self.creds.api_key, self.creds.api_secret, self.sid, role=role, data=name)

    async def create_session(self) -> None:
        body = {"e2ee": True, "media_mode": "routed"}
        self.info = await self._rest("POST", "/v1/sessions", body=body, expect=201)

    async def router_stats(self) -> dict[str, Any]:
        session_now = await self._rest("GET", f"/v1/sessions/{self.sid}")
        return dict(session_now.get("router") or {})

    async def join(self, participants: int, seconds: float) -> None:
        """Every participant connects with the first secret and publishes."""
        self.names = [f"p{i + 1}" for i in range(participants)]
        # The grace period covers the time from the unplanned change to the planned one,
        # so the first participant keeps accepting the others' first secret until then.
        grace = max(10.0, seconds)
        for name in self.names:
            s = Session(
                self.url,
                self.sid,
                self.token("publisher", name),
                encryption_secret=FIRST_SECRET,
                grace_period=grace,
            )
            await s.connect()
            self.sessions.append(s)
        for name, s in zip(self.names, self.sessions, strict=True):
            pub = await s.publish(
                video=SyntheticVideoTrack(), audio=SyntheticAudioTrack(), name=name
            )
            self.stream_of[name] = pub.stream_id

    async def subscribe_everyone(self) -> None:
        """Everyone to everyone else, then the eavesdropper to everyone."""
        for sub_name, s in zip(self.names, self.sessions, strict=True):
            for pub_name in self.names:
                if pub_name == sub_name:
                    continue
                sub = await s.subscribe(self.stream_of[pub_name])
                self.pairs.append(Pair(pub_name, sub_name, sub))
        self.eve = Eavesdropper(self.url, self.sid, self.token("subscriber", "eavesdropper"))
        await self.eve.connect()
        for name in self.names:
            await self.eve.subscribe(self.stream_of[name])

    async def collect(self) -> None:
        """Once every pair has its tracks, count what they decode."""
        await _wait_tracks(self.pairs)
        for p in self.pairs:
            for kind in ("audio", "video"):
                track = getattr(p.sub, kind)
                if track is not None:
                    p.collectors[kind] = FrameCollector(track).start()

    async def change_secrets(self, seconds: float, say: Callable[[str], None]) -> None:
        """The unplanned change a third of the way in, the planned one at two thirds."""
        start = time.monotonic()
        await asyncio.sleep(seconds / 3)
        say(f"{self.names[0]} changes its secret alone")
        await self.sessions[0].set_encryption_secret(SECOND_SECRET)
        await asyncio.sleep(seconds / 3)
        say("planned change: everyone accepts the second secret, then everyone sets it")
        for p in self.pairs:
            p.planned_from = len(p.sub.events)
        await asyncio.gather(*(s.accept_encryption_secret(SECOND_SECRET) for s in self.sessions))
        await asyncio.gather(*(s.set_encryption_secret(SECOND_SECRET) for s in self.sessions))
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - start)))

    def report(self, seconds: float, router: dict[str, Any]) -> dict[str, Any]:
        assert self.eve is not None
        info = self.info
        pair_reports = [p.report() for p in self.pairs]
        return {
            "session": {
                "id": info["id"],
                "e2ee": info["e2ee"],
                "suite": info["suite"],
                "kdf_iterations": info["kdf_iterations"],
            },
            "seconds": seconds,
            "pairs": pair_reports,
            "planned_change": {
                "mismatch_events": sum(p["planned_change_mismatch_events"] for p in pair_reports)
            },
            "router": {
                "frames_forwarded": router.get("frames_forwarded", 0),
                "bytes_forwarded": router.get("bytes_forwarded", 0),
                "frames_decoded": router.get("frames_decoded", 0),
            },
            "eavesdropper": self.eve.report(),
        }

    async def stop_collectors(self) -> None:
        for p in self.pairs:
            for c in p.collectors.values():
                await c.stop()

    async def close(self) -> None:
        if self.eve is not None:
            await self.eve.close()
        for s in self.sessions:
            with contextlib.suppress(Exception):
                await s.disconnect()


async def _run_call(
    call: DemoCall, participants: int, seconds: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """The call's phases, in order; returns the report."""
    await call.create_session()
    say(f"session {call.sid} (e2ee, suite {call.info['suite']}) at {call.url}")
    await call.join(participants, seconds)
    say(f"{participants} participants publishing; subscribing everyone to everyone ...")
    await call.subscribe_everyone()
    await call.collect()
    await call.change_secrets(seconds, say)
    report = call.report(seconds, await call.router_stats())
    await call.stop_collectors()
    return report


async def stop_server(server: asyncio.subprocess.Process | None, timeout: float = 10.0) -> None:
    """Stops the server of :func:`start_server`: SIGTERM, and SIGKILL after ``timeout``."""
    if server is None or server.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        server.terminate()
    try:
        await asyncio.wait_for(server.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        await server.wait()


async def run_demo(
    participants: int = 3,
    seconds: float = 10.0,
    *,
    url: str | None = None,
    data_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the demo and returns the measured report (see the module docstring).

    ``url``/``data_dir``: use that running server (``data_dir`` must hold its project
    credentials: none are created).  Otherwise the demo starts a server in a temporary
    directory; cancelled or failing at any point, it stops the server and removes the
    directory before it returns."""
    if participants < 2:
        raise ValueError("the demo needs at least 2 participants")
    if not seconds > 0:
        raise ValueError("the demo needs a duration above 0 seconds")
    if url is not None and data_dir is None:
        raise ValueError("with --url, --data-dir must name that server's data directory")
    net.restrict_ice_addresses([os.environ.get(net.ENV_VAR, "127.0.0.1").split(",")[0]])

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as tmp:
        server = None
        call = None
        try:
            if url is None:
                data_dir = Path(tmp.enter_context(tempfile.TemporaryDirectory(prefix="e2ee-demo-")))
                say("starting a server ...")
                server, url = await start_server(data_dir)
                creds = _new_credentials(data_dir)
            else:
                assert data_dir is not None
                creds = credentials_or_fail(data_dir)
            call = DemoCall(url, data_dir, creds)
            return await _run_call(call, participants, seconds, say)
        finally:
            if call is not None:
                await call.close()
            await stop_server(server)


def _new_credentials(data_dir: Path) -> Credentials:
    """The credentials the demo's own server created in ``data_dir``."""
    store = SQLiteStore.in_data_dir(data_dir)
    try:
        return store.get_or_create_credentials_sync()
    finally:
        store.close_sync()


async def _wait_tracks(pairs: list[Pair], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.sub.audio is not None and p.sub.video is not None for p in pairs):
            return
        await asyncio.sleep(0.05)
    missing = [f"{p.publisher}->{p.subscriber}" for p in pairs if p.sub.video is None]
    raise RuntimeError(f"no tracks arrived for {missing}")


def format_report(report: dict[str, Any]) -> str:
    """The report as a table a person reads."""
    s = report["session"]
    lines = [
        f"session {s['id']}  e2ee={s['e2ee']}  suite={s['suite']}  "
        f"kdf_iterations={s.get('kdf_iterations')}  ({report['seconds']:g} s)",
        "",
        f"{'publisher':>9} -> {'subscriber':<10} {'video ok':>8} {'audio ok':>8} "
        f"{'mismatch':>8} {'match':>5} {'planned-change mismatch':>23}",
    ]
    for p in report["pairs"]:
        lines.append(
            f"{p['publisher']:>9} -> {p['subscriber']:<10} {p['video_frames_decoded']:>8} "
            f"{p['audio_frames_decoded']:>8} {p['mismatch_events']:>8} {p['match_events']:>5} "
            f"{p['planned_change_mismatch_events']:>23}"
        )
    r, e = report["router"], report["eavesdropper"]
    lines += [
        "",
        "mismatch/match: video events over the whole call (the unplanned change); "
        "planned-change mismatch: audio and video, from the planned change on "
        f"(total {report['planned_change']['mismatch_events']}, expected 0)",
        "",
        f"router:       {r['frames_forwarded']} frames / {r['bytes_forwarded']} bytes "
        f"forwarded, {r['frames_decoded']} decoded",
        f"eavesdropper: {e['frames_received']} frames received, {e['frames_decoded']} "
        f"decoder outputs (noise), {e['frames_decodable']} showing the real picture or tone",
    ]
    return "\n".join(lines)
