"""The load generators of ``e2ee bench router``: publisher and subscriber processes.

:mod:`e2ee.tools.bench.router_processes` runs them as
``python -m e2ee.tools.bench.router_worker ROLE CONFIG`` (ROLE ``publisher`` or
``subscriber``, CONFIG a JSON object).  They read one JSON command per line on stdin,
answer one JSON object per line on stdout and log to stderr.  All WebRTC traffic stays on
loopback: the parent sets ``E2EE_ICE_ADDRESSES=127.0.0.1`` and each worker also calls
:func:`e2ee.rtc.net.restrict_ice_addresses` with ``127.0.0.1``.

* :mod:`~e2ee.tools.bench.router_worker.media`: the pre-encoded media loop and the stamp;
* :mod:`~e2ee.tools.bench.router_worker.publisher`: sends the loop, stamped and encrypted;
* :mod:`~e2ee.tools.bench.router_worker.subscriber` and
  :mod:`~e2ee.tools.bench.router_worker.receive`: receive, decrypt and time it, no decode;
* :mod:`~e2ee.tools.bench.router_worker.link`: the parent and signaling links both use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from e2ee.tools.bench.router_worker.media import (
    MAGIC,
    STAMP,
    clear_bytes,
    load_media,
    prepare_media,
)

__all__ = ["MAGIC", "STAMP", "clear_bytes", "load_media", "main", "prepare_media"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("publisher", "subscriber"):
        print("usage: python -m e2ee.tools.bench.router_worker publisher|subscriber CONFIG_JSON")
        return 2
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"{args[0]} %(levelname)s %(message)s"
    )
    from e2ee.rtc import net
    from e2ee.tools.bench.router_worker.publisher import run_publisher
    from e2ee.tools.bench.router_worker.subscriber import run_subscriber

    net.restrict_ice_addresses(["127.0.0.1"])
    cfg = json.loads(args[1])
    role = run_publisher if args[0] == "publisher" else run_subscriber
    asyncio.run(role(cfg))
    return 0
