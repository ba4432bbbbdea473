"""A load process of ``e2ee bench cluster``: ``python -m e2ee.tools.bench.cluster_worker
CONFIG_PATH`` (a JSON file).

Its participants are the soak's honest pairs (:class:`~e2ee.tools.bench.soak_clients.
HonestWorker`: pre-encoded VP8, each subscribed to its partner, every gap recorded), with
three differences: each pair has a session of its own; each participant enters the
cluster through its own list of node URLs (so joins are redirected to the owner, and
reconnects rotate through them); and the client reconnects quickly, as an application
that wants a short failover would configure it (:data:`FAILOVER`).

Commands (one JSON line each, :mod:`e2ee.tools.bench.router_worker.link`): ``status``,
``recovery`` (``t``: a ``time.monotonic()`` of the parent, the kill; per subscriber, when
it subscribed again after it and its first frame decoded on that subscription),
``freeze``, ``report``, ``leave``, ``quit``.  ``time.monotonic()`` is the machine's boot
clock, the same in every process.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from pathlib import Path
from typing import Any

from e2ee.client import ReconnectPolicy, Session, SessionPolicy
from e2ee.tools.bench.soak_clients import HonestWorker, Participant

__all__ = ["FAILOVER", "ClusterWorker", "main"]

#: Retries from 0.1 s, at most 0.5 s apart, for up to a minute (tests/e2e's failover).
FAILOVER = ReconnectPolicy(
    initial_delay=0.1, max_delay=0.5, max_attempts=None, max_elapsed=60.0, connect_timeout=5.0
)


class ClusterWorker(HonestWorker):
    """The honest pairs of one load process, one session per pair (module docstring)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.where = {p["name"]: (p["session_id"], p["entries"]) for p in cfg["participants"]}
        self.redirects: dict[str, int] = {}

    def _new_session(self, p: Participant) -> Any:
        sid, entries = self.where[p.name]
        s = Session(
            entries,
            sid,
            p.token,
            encryption_secret=self.cfg["secret"],
            policy=SessionPolicy(min_iterations=self.cfg["kdf_iterations"]),
            request_timeout=30.0,
            reconnect=FAILOVER,
        )
        s.on("redirected", functools.partial(self._redirected, p.name))
        # After a reconnect on another node the partner's new stream may already be
        # there, listed in the new node's hello rather than announced: look again.
        s.on("reconnected", functools.partial(self._look_again, p, s))
        return s

    def _redirected(self, name: str, _msg: Any) -> None:
        self.redirects[name] = self.redirects.get(name, 0) + 1

    def _look_again(self, p: Participant, s: Any, _msg: Any) -> None:
        if p.session is s and not p.leaving and not self.frozen:
            for stream in list(s.streams.values()):
                self._on_stream(p, stream)

    def recovery(self, since: float) -> dict[str, Any]:
        """Per subscriber (monotonic times, ``None``: not yet): its first subscription made
        after ``since``, and the first frame decoded on one."""
        first: dict[str, float | None] = {p.name: None for p in self.people}
        subscribed: dict[str, float | None] = dict(first)
        for f in self.flows:
            if f.started > since:
                old = subscribed[f.subscriber]
                subscribed[f.subscriber] = f.started if old is None else min(old, f.started)
            if f.started > since and f.first is not None:
                old = first[f.subscriber]
                first[f.subscriber] = f.first if old is None else min(old, f.first)
        return {"first_frame": first, "subscribed": subscribed}

    def report(self) -> dict[str, Any]:
        return {**super().report(), "redirects": self.redirects}


async def _run(cfg: dict[str, Any]) -> None:
    from e2ee.tools.bench.router_worker.link import commands, reply

    w = ClusterWorker(cfg)
    joining = asyncio.ensure_future(w.start())
    reply({"ok": True, "event": "ready"})

    async def freeze() -> dict[str, Any]:
        joining.cancel()
        return await w.freeze()

    def handle(cmd: dict[str, Any]) -> Any:
        name = cmd.get("cmd")
        if name == "recovery":
            return w.recovery(float(cmd["t"]))
        table = {"status": w.status, "freeze": freeze, "report": w.report, "leave": w.leave}
        if name not in table:
            raise ValueError(f"unknown command {name!r}")
        return table[str(name)]()

    await commands(handle)
    joining.cancel()
    await w.leave()


def main(argv: list[str] | None = None) -> int:
    from e2ee.tools.bench.router_worker import run_worker

    args = ["cluster", *(sys.argv[1:] if argv is None else argv)]
    return run_worker(
        args,
        "usage: python -m e2ee.tools.bench.cluster_worker CONFIG_PATH",
        {"cluster": _run},
        lambda path: json.loads(Path(path).read_text()),
    )


if __name__ == "__main__":
    sys.exit(main())
