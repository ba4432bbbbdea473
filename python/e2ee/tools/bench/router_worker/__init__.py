"""The load generators of ``e2ee bench router``: publisher and subscriber processes.

:mod:`e2ee.tools.bench.router_processes` runs them as
``python -m e2ee.tools.bench.router_worker ROLE CONFIG`` (ROLE ``publisher`` or
``subscriber``, CONFIG a JSON object).  They read one JSON command per line on stdin,
answer one JSON object per line on stdout and log to stderr.  All WebRTC traffic stays on
loopback: the parent sets ``E2EE_ICE_ADDRESSES=127.0.0.1`` and each worker also calls
:func:`e2ee.rtc.net.restrict_ice_addresses` with ``127.0.0.1``.

* :mod:`~e2ee.tools.bench.router_worker.media`: the pre-encoded media loop and the stamp;
* :mod:`~e2ee.tools.bench.router_worker.publisher`: sends the loop, stamped and encrypted,
  and records when it sent each frame; :mod:`~e2ee.tools.bench.router_worker.uplink`
  counts its RTP packets and drops some (the loss scenario);
* :mod:`~e2ee.tools.bench.router_worker.subscriber`: many subscriptions per process, on
  the light path (:mod:`~e2ee.tools.bench.router_worker.light`: an RTP header read per
  packet) or the full one (:mod:`~e2ee.tools.bench.router_worker.receive`: aiortc's
  receive path, every frame decrypted), recorded per window
  (:mod:`~e2ee.tools.bench.router_worker.window`); no decode;
* :mod:`~e2ee.tools.bench.router_worker.link`: the parent and signaling links both use.

:func:`run_worker` is the ``main`` of these processes and of
:mod:`e2ee.tools.bench.soak_worker`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from e2ee.tools.bench.router_worker.media import (
    MAGIC,
    STAMP,
    clear_bytes,
    load_media,
    prepare_media,
)

__all__ = ["MAGIC", "STAMP", "clear_bytes", "load_media", "main", "prepare_media", "run_worker"]

Role = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


def run_worker(
    argv: list[str] | None,
    usage: str,
    roles: dict[str, Role],
    read_config: Callable[[str], dict[str, Any]],
) -> int:
    """The ``main`` of a load process ``python -m ... ROLE CONFIG``: logs to stderr, keeps
    WebRTC on loopback and runs ``roles[ROLE](read_config(CONFIG))``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in roles:
        print(usage)
        return 2
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {args[0]} %(levelname)s %(message)s",
    )
    from e2ee.rtc import net

    net.restrict_ice_addresses(["127.0.0.1"])
    cfg = read_config(args[1])
    asyncio.run(roles[args[0]](cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    from e2ee.tools.bench.router_worker.publisher import run_publisher
    from e2ee.tools.bench.router_worker.subscriber import run_subscriber

    return run_worker(
        argv,
        "usage: python -m e2ee.tools.bench.router_worker publisher|subscriber CONFIG_JSON",
        {"publisher": run_publisher, "subscriber": run_subscriber},
        json.loads,
    )
