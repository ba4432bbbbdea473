"""A worker's two links: to the parent bench (one JSON command per line on stdin, one JSON
answer per line on stdout) and to the server (a minimal client of the signaling
WebSocket, :mod:`e2ee.server.signaling`), plus what both roles need to join the call: the
session's key ring and a peer-connection configuration without ICE servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Signaling", "commands", "key_ring", "reply", "rtc_configuration"]

log = logging.getLogger("e2ee.tools.bench.router_worker")

#: With this set to a path prefix, a worker runs cProfile during its measured windows
#: (``mark`` to ``report``) and writes ``PREFIX.PID.pstats`` when it ends: what a load
#: generator costs, for the bench's authors.
PROFILE_ENV = "E2EE_BENCH_WORKER_PROFILE"


# -- the parent link ---------------------------------------------------------------------


def reply(obj: dict[str, Any]) -> None:
    """One answer line to the parent."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def commands(handle: Callable[[dict[str, Any]], Any]) -> None:
    """Reads commands from stdin until ``quit`` or EOF; ``handle`` may be async."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=reader, name="commands", daemon=True).start()
    prefix = os.environ.get(PROFILE_ENV)
    # CPU time, not wall time: the machine may be shared.
    profiler = cProfile.Profile(time.process_time) if prefix else None
    try:
        while True:
            line = await lines.get()
            if not line:
                return
            cmd = json.loads(line)
            if cmd.get("cmd") == "quit":
                return
            if profiler is not None and cmd.get("cmd") == "report":
                profiler.disable()
            try:
                result = handle(cmd)
                if asyncio.iscoroutine(result):
                    result = await result
                reply({"ok": True, **(result or {})})
            except Exception as exc:
                log.exception("command %s failed", cmd.get("cmd"))
                reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            if profiler is not None and cmd.get("cmd") == "mark":
                profiler.enable()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{prefix}.{os.getpid()}.pstats")


# -- the server link ---------------------------------------------------------------------


class Signaling:
    """A minimal client of the signaling WebSocket (:mod:`e2ee.server.signaling`)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}
        self._ids = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, http: Any, url: str, session_id: str, token: str) -> Signaling:
        ws = await http.ws_connect(
            f"{url.replace('http', 'ws', 1)}/v1/sessions/{session_id}/ws",
            params={"token": token},
            heartbeat=None,
        )
        sig = cls(ws)
        sig.hello = await ws.receive_json(timeout=30)
        if sig.hello.get("type") != "session":
            await ws.close()
            raise RuntimeError(f"signaling refused: {sig.hello}")
        sig._reader = asyncio.create_task(sig._read())
        return sig

    async def _read(self) -> None:
        import aiohttp

        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            fut = self._pending.pop(data.get("id"), None) if "id" in data else None
            if fut is not None and not fut.done():
                fut.set_result(data)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("signaling closed"))

    async def request(self, msg: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self._ids += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = fut
        await self.ws.send_str(json.dumps({**msg, "id": self._ids}))
        answer = await asyncio.wait_for(fut, timeout)
        if answer.get("type") == "error":
            raise RuntimeError(f"{msg['type']}: {answer.get('code')}: {answer.get('message')}")
        return answer

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


# -- joining -----------------------------------------------------------------------------


async def key_ring(cfg: dict[str, Any]) -> Any:
    """The session's key ring, from the secret the parent hands every worker."""
    from e2ee.crypto.keyring import KeyRing

    ring = KeyRing(
        cfg["session_id"],
        suite=cfg["suite"],
        kdf_iterations=cfg["kdf_iterations"],
        grace_period=0,
    )
    await ring.set_secret_async(cfg["secret"])
    return ring


def rtc_configuration() -> Any:
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])
