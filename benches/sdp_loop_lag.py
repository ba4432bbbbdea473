"""Event-loop lag while the router takes 20 offers of the largest size it accepts.

A 1 ms ticker runs on the loop; the lag of one tick is how late it woke.  Twenty offers
of ~64 KiB with 16 video m-sections (padded with ``a=ssrc`` lines, the dearest to parse)
go to one :class:`e2ee.sfu.router.Router` at once.  ``--on-loop`` runs the SDP checks
on the loop, as before they moved to the parsing pool; ``--parse-only`` times the checks
alone (no peer connections).

    unshare --net -- bash -c 'ip link set lo up && \\
        .venv/bin/python benches/sdp_loop_lag.py [--on-loop] [--parse-only]'
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack

from e2ee.sfu import router as router_module
from e2ee.sfu import sdp
from e2ee.sfu.router import Router

OFFERS = 20
SECTIONS = 16


async def max_offer() -> str:
    """An aiortc offer with 16 video m-sections, padded to just under the 64 KiB cap."""
    pc = RTCPeerConnection()
    for _ in range(SECTIONS):
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    text = str(pc.localDescription.sdp)
    await pc.close()
    head, *sections = re.split(r"(?=^m=)", text, flags=re.MULTILINE)
    per_section = (sdp.MAX_SDP_CHARS - 1024 - len(text)) // len(sections)
    line = "a=ssrc:{} cname:padding-padding-pad\r\n"
    padded = [head]
    for i, section in enumerate(sections):
        count = per_section // len(line.format(10**8))
        padded.append(section + "".join(line.format(10**8 + i * 1000 + n) for n in range(count)))
    out = "".join(padded)
    assert len(out) <= sdp.MAX_SDP_CHARS, len(out)
    return out


def on_loop() -> None:
    """Runs the router's SDP checks inline on the loop (the behaviour before)."""

    async def inline(text: str, what: str, *, e2ee: bool) -> Any:
        return sdp._check(text, what, e2ee)

    router_module.check_off_loop = inline  # type: ignore[assignment]
    sdp.check_off_loop = inline  # type: ignore[assignment]


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(max(0.0, time.perf_counter() - before - 0.001))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--on-loop", action="store_true", help="checks on the loop (before)")
    parser.add_argument("--parse-only", action="store_true", help="the checks alone")
    args = parser.parse_args()
    if args.on_loop:
        on_loop()
    text = await max_offer()
    router = Router()
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    await asyncio.sleep(0.2)
    lags.clear()
    started = time.perf_counter()
    if args.parse_only:
        await asyncio.gather(*(sdp.check_off_loop(text, "bench", e2ee=True) for _ in range(OFFERS)))
    else:
        offer = RTCSessionDescription(sdp=text, type="offer")
        await asyncio.gather(*(router.publish(f"s{i}", offer) for i in range(OFFERS)))
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    await router.close()
    lags.sort()
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    mode = "on the loop" if args.on_loop else f"parsing pool ({sdp.PARSE_WORKERS} threads)"
    what = "checks only" if args.parse_only else "router.publish"
    print(
        f"{OFFERS} offers of {len(text)} chars, {SECTIONS} m-sections, {what}, {mode}: "
        f"{elapsed * 1000:.0f} ms total; loop lag over {len(lags)} ticks: "
        f"max {lags[-1] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"median {statistics.median(lags) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
