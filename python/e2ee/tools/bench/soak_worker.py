"""A load process of ``e2ee bench soak``: ``python -m e2ee.tools.bench.soak_worker ROLE
CONFIG_PATH`` (ROLE ``honest`` or ``abusive``, CONFIG_PATH a JSON file).

It answers one JSON line per command on stdin (the link of
:mod:`e2ee.tools.bench.router_worker.link`): first ``{"ok": true, "event": "ready"}``,
then for ``honest`` (:class:`~e2ee.tools.bench.soak_clients.HonestWorker`) ``status``,
``freeze``, ``report``, ``leave``, and for ``abusive``
(:class:`~e2ee.tools.bench.soak_abuse.AbuseWorker`) ``status`` and ``stop``; ``quit``
ends it.  Clients in their own processes, so the server's loop lag is its own.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]


async def _serve(table: dict[str, Callable[[], Any]]) -> None:
    """Answers the parent's commands (``table``: a command's name to what does it) until
    ``quit``; a handler may be async."""
    from e2ee.tools.bench.router_worker.link import commands

    def handle(cmd: dict[str, Any]) -> Any:
        name = cmd.get("cmd")
        if name not in table:
            raise ValueError(f"unknown command {name!r}")
        return table[str(name)]()

    await commands(handle)


async def _honest(cfg: dict[str, Any]) -> None:
    from e2ee.tools.bench.router_worker.link import reply
    from e2ee.tools.bench.soak_clients import HonestWorker

    # The load processes are the bench's, not the product's: keep their garbage
    # collector off what lives all run long (the client, aiortc, PyAV: imported here),
    # as the server does (e2ee.server.app.serve).
    for name in ("aiortc", "av", "e2ee.client.session", "e2ee.transform.protect"):
        importlib.import_module(name)
    gc.freeze()
    w = HonestWorker(cfg)
    joining = asyncio.ensure_future(w.start())
    reply({"ok": True, "event": "ready"})

    async def freeze() -> dict[str, Any]:
        joining.cancel()
        return await w.freeze()

    await _serve({"status": w.status, "freeze": freeze, "report": w.report, "leave": w.leave})
    joining.cancel()
    await w.leave()


async def _abusive(cfg: dict[str, Any]) -> None:
    from e2ee.tools.bench.router_worker.link import reply
    from e2ee.tools.bench.soak_abuse import AbuseWorker

    w = AbuseWorker(cfg)
    await w.start(until=time.monotonic() + cfg["seconds"])
    reply({"ok": True, "event": "ready"})
    await _serve({"status": w.status, "stop": w.stop})
    await w.stop()


def main(argv: list[str] | None = None) -> int:
    from e2ee.tools.bench.router_worker import run_worker

    return run_worker(
        argv,
        "usage: python -m e2ee.tools.bench.soak_worker honest|abusive CONFIG_PATH",
        {"honest": _honest, "abusive": _abusive},
        lambda path: json.loads(Path(path).read_text()),
    )


if __name__ == "__main__":
    sys.exit(main())
