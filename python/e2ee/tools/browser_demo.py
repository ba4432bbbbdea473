"""A measured E2EE call with real Chromium participants: the browser client
(``python/e2ee/web/static``, driven by Playwright) and Python clients, through a real
server and router, everyone subscribed to everyone.

Like ``e2ee demo``: a third of the way in the first participant (a browser) changes its
secret alone, so everyone else sees a mismatch on its streams; two thirds in (and not
before each of them has seen it: on a loaded machine frames lag), everyone follows, as a
planned change (everyone accepts the new secret, then everyone sets it): its streams
match again, and nobody sees a mismatch on anyone else's.  Every participant publishes
the synthetic picture (dark left half, bright right half) and the 400 Hz tone: browsers
draw them on a canvas and with WebAudio (``synthetic=1``), Python with
:mod:`e2ee.tools.synthetic`.

What counts as a frame received:

* Python subscribers: a decoded frame showing the real picture or carrying the tone
  (:class:`~e2ee.tools.synthetic.FrameCollector`), as in ``e2ee demo``.
* Browser subscribers: a frame that authenticated, was decrypted and went to Chromium's
  decoder (the worker's ``framesDelivered``); on top, the <video> element is sampled
  about twice a second once it has a picture (``video_samples``), and
  ``video_samples_real`` counts the samples showing the real picture.

Needs Playwright (``pip install playwright``) and a Chromium (default
``/usr/lib/chromium/chromium``, or ``$E2EE_CHROMIUM``); Playwright does not download one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from e2ee.client.session import Session, Subscriber
from e2ee.rtc import net
from e2ee.server.store import SQLiteStore
from e2ee.server.tokens import mint_token
from e2ee.tools.demo import start_server, stop_server
from e2ee.tools.rest_client import credentials_or_fail, request
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack
from e2ee.wire.params import SessionPolicy

__all__ = ["CHROMIUM_ARGS", "format_browser_report", "run_browser_demo"]

FIRST_SECRET = "the first shared secret"
SECOND_SECRET = "the second shared secret"
DEFAULT_CHROMIUM = "/usr/lib/chromium/chromium"
#: Fake capture devices and no permission prompt; loopback ICE candidates allowed.
CHROMIUM_ARGS = (
    "--use-fake-device-for-media-stream=fps=30",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
)
SAMPLE_INTERVAL = 0.5
#: Longest wait, after the lone change, for every subscriber to have seen the mismatch.
MISMATCH_WAIT = 20.0


@dataclass
class _Browser:
    name: str
    context: Any
    page: Any
    samples: dict[str, list[bool]] = field(default_factory=dict)

    async def state(self) -> dict[str, Any]:
        state: dict[str, Any] = await self.page.evaluate(
            "JSON.parse(JSON.stringify(window.e2ee.state))"
        )
        return state

    async def sample(self) -> None:
        """Samples every remote <video> element that has a picture: is it the real one?"""
        shown = await self.page.evaluate(
            """() => Object.fromEntries(window.e2ee.state.streams.map((s) => {
                 const r = window.e2ee.sample(s.streamId);
                 return [s.name, r ? r.looksLikeSource : null];
               }))"""
        )
        for name, real in shown.items():
            if real is not None:  # no picture yet: nothing to judge
                self.samples.setdefault(name, []).append(bool(real))


@dataclass
class _PythonPair:
    publisher: str
    subscriber: str
    sub: Subscriber
    collectors: dict[str, FrameCollector] = field(default_factory=dict)


async def _until(predicate: Any, what: str, timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def run_browser_demo(
    participants: int = 3,
    seconds: float = 10.0,
    *,
    browsers: int = 1,
    url: str | None = None,
    data_dir: Path | None = None,
    kdf_iterations: int | None = None,
    chromium: str | None = None,
    screenshot: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the call and returns the measured report (see the module docstring).

    ``participants`` in all, of whom ``browsers`` (at least 1) are Chromium pages and
    the rest Python clients.  ``url``/``data_dir``: use that running server instead of
    starting one.  ``kdf_iterations``: the session's PBKDF2 count (default: the
    server's, 600,000); a lower count is accepted by both clients only because this
    function lowers their floor to it explicitly.  ``screenshot``: where to save a
    picture of the first browser's page at the end.

    The report: ``session``, ``seconds``, ``participants`` (name and ``"browser"`` or
    ``"python"``), ``pairs`` (per publisher and subscriber: ``video_frames_decoded``,
    ``audio_frames_decoded``, ``mismatch_events``, ``match_events``, and for browser
    subscribers ``video_samples`` and ``video_samples_real``) and ``router``
    (``frames_forwarded``, ``bytes_forwarded``, ``frames_decoded``: always 0).
    """
    if participants < 2:
        raise ValueError("the demo needs at least 2 participants")
    if not 1 <= browsers <= participants:
        raise ValueError("browsers must be from 1 to the number of participants")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        raise RuntimeError("the browser demo needs Playwright: pip install playwright") from None
    chromium = chromium or os.environ.get("E2EE_CHROMIUM", DEFAULT_CHROMIUM)
    if not os.access(chromium, os.X_OK):
        raise RuntimeError(f"no Chromium at {chromium} (set E2EE_CHROMIUM)")
    net.restrict_ice_addresses([os.environ.get(net.ENV_VAR, "127.0.0.1").split(",")[0]])

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    if url is not None and data_dir is None:
        raise ValueError("with url, data_dir must name that server's data directory")
    tmp = None
    server = None
    policy = (
        SessionPolicy() if kdf_iterations is None else SessionPolicy(min_iterations=kdf_iterations)
    )
    sessions: dict[str, Session] = {}
    pages: list[_Browser] = []
    pairs: list[_PythonPair] = []
    try:
        # Inside the try: cancelled while the server starts, it is still stopped.
        if url is None:
            tmp = tempfile.TemporaryDirectory(prefix="e2ee-browser-demo-")
            data_dir = Path(tmp.name)
            say("starting a server ...")
            server, url = await start_server(data_dir)
            store = SQLiteStore.in_data_dir(data_dir)
            creds = store.get_or_create_credentials_sync()
            store.close_sync()
        else:
            assert data_dir is not None
            creds = credentials_or_fail(data_dir)
        server_url, server_data = url, data_dir

        async def rest(method: str, path: str, **kwargs: Any) -> Any:
            async with aiohttp.ClientSession() as http:
                return await request(http, method, server_url, path, creds, server_data, **kwargs)

        body: dict[str, Any] = {"e2ee": True, "media_mode": "routed"}
        if kdf_iterations is not None:
            body["kdf_iterations"] = kdf_iterations
        info = await rest("POST", "/v1/sessions", body=body, expect=201)
        sid: str = info["id"]
        say(f"session {sid} (e2ee, suite {info['suite']}) at {url}")

        def token(name: str, role: Literal["publisher"] = "publisher") -> str:
            return mint_token(creds.api_key, creds.api_secret, sid, role=role, data=name)

        browser_names = [f"b{i + 1}" for i in range(browsers)]
        python_names = [f"p{i + 1}" for i in range(participants - browsers)]
        names = browser_names + python_names

        async with async_playwright() as pw:
            chrome = await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
            try:
                for name in browser_names:
                    pages.append(
                        await _join_browser(chrome, url, sid, token(name), name, kdf_iterations)
                    )
                say(f"{browsers} browser(s) publishing")
                for name in python_names:
                    s = Session(
                        url, sid, token(name), encryption_secret=FIRST_SECRET, policy=policy
                    )
                    await s.connect()
                    await s.publish(
                        video=SyntheticVideoTrack(), audio=SyntheticAudioTrack(), name=name
                    )
                    sessions[name] = s
                say(f"{len(python_names)} Python participant(s) publishing; subscribing ...")
                for sub_name, s in sessions.items():
                    for pub_name in names:
                        if pub_name == sub_name:
                            continue
                        stream_id = await _stream_of(s, pub_name)
                        pairs.append(_PythonPair(pub_name, sub_name, await s.subscribe(stream_id)))
                await _until(
                    lambda: _tracks_ready(pairs), "the Python subscribers' tracks", timeout=20
                )
                for p in pairs:
                    for kind in ("audio", "video"):
                        track = getattr(p.sub, kind)
                        p.collectors[kind] = FrameCollector(track).start()
                for b in pages:
                    others = len(names) - 1

                    async def all_streams(b: _Browser = b, others: int = others) -> bool:
                        return len((await b.state())["streams"]) >= others

                    await _until(all_streams, f"{b.name}'s streams", timeout=30)

                start = time.monotonic()
                sampler = asyncio.ensure_future(_sample(pages))
                try:
                    await asyncio.sleep(seconds / 3)
                    say(f"{names[0]} changes its secret alone")
                    await pages[0].page.evaluate(
                        f"window.e2ee.setEncryptionSecret({SECOND_SECRET!r})"
                    )
                    await asyncio.sleep(seconds / 3)
                    # On a loaded machine frames can lag behind the clock: follow only once
                    # every subscriber of the changed streams has seen them mismatch.
                    await _until(
                        lambda: _mismatch_seen(names[0], pairs, pages),
                        f"the others to see {names[0]}'s streams mismatch",
                        timeout=MISMATCH_WAIT,
                        interval=0.2,
                    )
                    say("everyone follows: accepts the new secret, then sets it")
                    followers: list[_Browser | Session] = [*pages[1:], *sessions.values()]
                    await asyncio.gather(*(_follow(f, "accept") for f in followers))
                    await asyncio.gather(*(_follow(f, "set") for f in followers))
                    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - start)))
                finally:
                    sampler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sampler
                if screenshot is not None:
                    await pages[0].page.screenshot(path=str(screenshot))
                report_pairs = [_python_pair_report(p) for p in pairs]
                for b in pages:
                    report_pairs += _browser_pair_reports(b, await b.state())
            finally:
                for b in pages:
                    with contextlib.suppress(Exception):
                        await b.page.evaluate("window.e2ee.leave()")
                    await b.context.close()
                await chrome.close()

        session_now = await rest("GET", f"/v1/sessions/{sid}")
        router = session_now.get("router") or {}
        order = {n: i for i, n in enumerate(names)}
        report_pairs.sort(key=lambda p: (order[p["subscriber"]], order[p["publisher"]]))
        return {
            "session": {
                "id": sid,
                "e2ee": info["e2ee"],
                "suite": info["suite"],
                "kdf_iterations": info["kdf_iterations"],
            },
            "seconds": seconds,
            "participants": [
                {"name": n, "client": "browser" if n in browser_names else "python"} for n in names
            ],
            "pairs": report_pairs,
            "router": {
                "frames_forwarded": router.get("frames_forwarded", 0),
                "bytes_forwarded": router.get("bytes_forwarded", 0),
                "frames_decoded": router.get("frames_decoded", 0),
            },
        }
    finally:
        for p in pairs:
            for c in p.collectors.values():
                await c.stop()
        for s in sessions.values():
            with contextlib.suppress(Exception):
                await s.disconnect()
        await stop_server(server)
        if tmp is not None:
            tmp.cleanup()


async def _join_browser(
    chrome: Any, url: str, sid: str, token: str, name: str, kdf_iterations: int | None
) -> _Browser:
    """Opens the call page as ``name`` and joins by typing the secret and clicking Join
    (a user gesture: the page may then start the tone's AudioContext)."""
    context = await chrome.new_context(
        permissions=["camera", "microphone"], viewport={"width": 1280, "height": 800}
    )
    page = await context.new_page()
    params = {"session": sid, "token": token, "name": name, "publish": "1", "synthetic": "1"}
    if kdf_iterations is not None:
        params["minIterations"] = str(kdf_iterations)
    await page.goto(f"{url}/?{urllib.parse.urlencode(params)}")
    await page.wait_for_function("() => window.e2ee?.state.ready", timeout=20_000)
    await page.fill("input[name=secret]", FIRST_SECRET)
    await page.click("#join-button")
    await page.wait_for_function(
        "() => window.e2ee.state.publishing || window.e2ee.state.error", timeout=30_000
    )
    error = await page.evaluate("window.e2ee.state.error")
    if error:
        await context.close()
        raise RuntimeError(f"browser {name} could not join: {error}")
    return _Browser(name, context, page)


async def _follow(who: _Browser | Session, step: Literal["accept", "set"]) -> None:
    """One participant's step of the planned change to SECOND_SECRET."""
    if isinstance(who, Session):
        if step == "accept":
            await who.accept_encryption_secret(SECOND_SECRET)
        else:
            await who.set_encryption_secret(SECOND_SECRET)
        return
    method = "session.acceptEncryptionSecret" if step == "accept" else "setEncryptionSecret"
    await who.page.evaluate(f"window.e2ee.{method}({SECOND_SECRET!r})")


async def _stream_of(session: Session, name: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stream in session.streams.values():
            if stream.get("name") == name:
                return str(stream["id"])
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no stream named {name!r}")


async def _mismatch_seen(name: str, pairs: list[_PythonPair], pages: list[_Browser]) -> bool:
    """Whether every subscriber of ``name`` has seen a mismatch on its video."""
    for p in pairs:
        if p.publisher == name and not any(
            e.type == "encryption_secret_mismatch" and e.kind == "video" for e in p.sub.events
        ):
            return False
    for b in pages:
        if b.name == name:
            continue
        state = await b.state()
        ids = {s["streamId"] for s in state["streams"] if s["name"] == name}
        if not any(
            e["type"] == "encryptionSecretMismatch"
            and e.get("kind") == "video"
            and e.get("streamId") in ids
            for e in state["events"]
        ):
            return False
    return True


async def _tracks_ready(pairs: list[_PythonPair]) -> bool:
    return all(p.sub.audio is not None and p.sub.video is not None for p in pairs)


async def _sample(pages: list[_Browser]) -> None:
    while True:
        for b in pages:
            with contextlib.suppress(Exception):
                await b.sample()
        await asyncio.sleep(SAMPLE_INTERVAL)


def _python_pair_report(p: _PythonPair) -> dict[str, Any]:
    video_events = [e for e in p.sub.events if e.kind == "video"]
    return {
        "publisher": p.publisher,
        "subscriber": p.subscriber,
        "subscriber_client": "python",
        "video_frames_decoded": p.collectors["video"].count(good=True),
        "audio_frames_decoded": p.collectors["audio"].count(good=True),
        "mismatch_events": sum(e.type == "encryption_secret_mismatch" for e in video_events),
        "match_events": sum(e.type == "encryption_secret_match" for e in video_events),
    }


def _browser_pair_reports(b: _Browser, state: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for stream in state["streams"]:
        events = [
            e
            for e in state["events"]
            if e.get("streamId") == stream["streamId"] and e.get("kind") == "video"
        ]
        samples = b.samples.get(stream["name"], [])
        out.append(
            {
                "publisher": stream["name"],
                "subscriber": b.name,
                "subscriber_client": "browser",
                "video_frames_decoded": (stream.get("video") or {}).get("framesDelivered", 0),
                "audio_frames_decoded": (stream.get("audio") or {}).get("framesDelivered", 0),
                "mismatch_events": sum(e["type"] == "encryptionSecretMismatch" for e in events),
                "match_events": sum(e["type"] == "encryptionSecretMatch" for e in events),
                "video_samples": len(samples),
                "video_samples_real": sum(samples),
            }
        )
    return out


def format_browser_report(report: dict[str, Any]) -> str:
    """The report as a table a person reads."""
    s = report["session"]
    clients = {p["name"]: p["client"] for p in report["participants"]}
    lines = [
        f"session {s['id']}  e2ee={s['e2ee']}  suite={s['suite']}  ({report['seconds']:g} s)",
        "participants: " + ", ".join(f"{n} ({c})" for n, c in clients.items()),
        "",
        f"{'publisher':>9} -> {'subscriber':<16} {'video ok':>8} {'audio ok':>8} "
        f"{'mismatch':>8} {'match':>5}  picture samples",
    ]
    for p in report["pairs"]:
        who = f"{p['subscriber']} ({p['subscriber_client']})"
        samples = (
            f"{p['video_samples_real']}/{p['video_samples']} real"
            if p["subscriber_client"] == "browser"
            else "(every frame checked)"
        )
        lines.append(
            f"{p['publisher']:>9} -> {who:<16} {p['video_frames_decoded']:>8} "
            f"{p['audio_frames_decoded']:>8} {p['mismatch_events']:>8} {p['match_events']:>5}  "
            f"{samples}"
        )
    r = report["router"]
    lines += [
        "",
        f"router: {r['frames_forwarded']} frames / {r['bytes_forwarded']} bytes forwarded, "
        f"{r['frames_decoded']} decoded",
    ]
    return "\n".join(lines)
