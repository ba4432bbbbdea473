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
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


async def _honest(cfg: dict[str, Any]) -> None:
    from e2ee.tools.bench.router_worker.link import commands, reply
    from e2ee.tools.bench.soak_clients import HonestWorker

    w = HonestWorker(cfg)
    joining = asyncio.ensure_future(w.start())
    reply({"ok": True, "event": "ready"})

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "status":
            return w.status()
        if name == "freeze":
            joining.cancel()
            return await w.freeze()
        if name == "report":
            return w.report()
        if name == "leave":
            return await w.leave()
        raise ValueError(f"unknown command {name!r}")

    await commands(handle)
    joining.cancel()
    await w.leave()


async def _abusive(cfg: dict[str, Any]) -> None:
    from e2ee.tools.bench.router_worker.link import commands, reply
    from e2ee.tools.bench.soak_abuse import AbuseWorker

    w = AbuseWorker(cfg)
    await w.start(until=time.monotonic() + cfg["seconds"])
    reply({"ok": True, "event": "ready"})

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "status":
            return w.status()
        if name == "stop":
            return await w.stop()
        raise ValueError(f"unknown command {name!r}")

    await commands(handle)
    await w.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("honest", "abusive"):
        print("usage: python -m e2ee.tools.bench.soak_worker honest|abusive CONFIG_PATH")
        return 2
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"{args[0]} %(levelname)s %(message)s"
    )
    from e2ee.rtc import net

    net.restrict_ice_addresses(["127.0.0.1"])
    cfg = json.loads(Path(args[1]).read_text())
    asyncio.run(_honest(cfg) if args[0] == "honest" else _abusive(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
