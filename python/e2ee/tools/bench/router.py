"""``e2ee bench router``: what the media router costs per forwarded packet, how many
subscribers one router process holds at 30 fps, its added latency, and how subscribers
recover from loss on a publisher's uplink.

::

    e2ee bench router [--scenario fanout|mesh|loss|all[,...]] [--subscribers 1,50,100,200]
                      [--parties 10] [--loss 1%,5%,burst300] [--loss-subscribers 10]
                      [--subscriber-kind light|full] [--receiver native|python]
                      [--per-process N] [--seconds 10]
                      [--warmup 3] [--json PATH] [--plot PATH.png] [--quick] [--no-pin]
                      [--profile PATH] [--keep]

A real session server runs in its own process, with one E2EE session per scenario;
publisher processes send pre-encoded VP8 (640x480, 30 fps, ~1 Mbit/s) and Opus (50
frames/s), each frame stamped and encrypted at send time; subscriber processes receive
without decoding; all on loopback.  Scenarios (:mod:`e2ee.tools.bench.router_scenarios`):
``fanout`` (1 publisher to S subscribers, stepping S), ``mesh`` (P parties all-to-all) and
``loss`` (uplink loss, freezes and recovery).  The router gets one CPU to itself where
there are two or more, the load generators the others (``--no-pin``: no pinning, load
generators at nice 10).

Subscribers are light by default (:mod:`e2ee.tools.bench.router_worker.light`: aiortc
does ICE, DTLS and signalling, each RTP packet costs a header read, arrival times are the
kernel's, a decrypted probe every few seconds maps RTP timestamps to the publishers'
frame numbers), so one process terminates up to 50 subscriptions and S=200 measures the
router (``--receiver native``, the default: the sockets drained with ``recvmmsg(2)`` and
RTP followed to frames in Rust, :class:`e2ee._srtp.RtpReader`, so Python works per frame;
``python``: a header read in Python per packet); ``full`` runs aiortc's whole receive
path and decrypts every frame (10 per process).  Every step prints the load generators'
CPU beside the router's and is marked not valid when a generator process used more than
85% of a core, their CPUs were more than 95% busy, or the router waited for its own CPU
more than 20% of the window (:mod:`e2ee.tools.bench.router_load_figures`).  Latency runs from
the moment a publisher sent a frame's last packet to the kernel's receive time of that
frame's last packet at each subscriber.

Progress goes to stderr, the tables and the issue's targets to stdout
(:mod:`e2ee.tools.bench.router_report`), every figure with machine facts to ``--json``,
a row of panels per scenario to ``--plot`` (:mod:`e2ee.tools.bench.router_plot`).
``--profile PATH`` runs the server under cProfile for an extra window after the last
fanout step and writes pstats to PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from e2ee.tools.bench import _measure
from e2ee.tools.bench.router_report import format_table, json_safe, targets
from e2ee.tools.bench.router_rig import DEFAULT_SUBSCRIBERS, PER_PROCESS, Config, Rig
from e2ee.tools.bench.router_scenarios import fanout, loss, mesh, parse_loss

__all__ = ["DEFAULT_SUBSCRIBERS", "SCENARIOS", "main", "run"]

SCENARIOS = ("fanout", "mesh", "loss")

_METHOD = {
    "router_cpu": "utime+stime of the server process (all threads), /proc/PID/stat",
    "frames_forwarded": "router stats (GET /v1/sessions/{id}), per subscription track",
    "packets_forwarded": "RTP packets (RTX included) counted on arrival at the subscribers",
    "latency": "frame n's last packet handed to SRTP and the socket at the publisher "
    "(CLOCK_MONOTONIC) -> frame n complete at the subscriber (its marker packet's kernel "
    "receive time, nothing missing; no decode); light subscribers map RTP timestamps to n "
    "with decrypted probes of the stamp inside the encrypted frame",
    "lost": "frames the publisher sent from the window's start to 0.5 s before its end "
    "that a subscriber never got",
    "freeze": "longest time between two delivered video frames at one subscriber, window "
    "edges included",
    "pli_rtt": "a PLI's arrival at the publisher -> the answering key frame's arrival at "
    "each subscriber",
    "validity": "a step is not valid if a load process used > 85% of a core, the load "
    "generators' CPUs were > 95% busy or the router waited > 20% of the window for its CPU",
}


def _rig(cfg: Config, tmp: Path, media: Path, name: str) -> Rig:
    (tmp / name).mkdir(parents=True, exist_ok=True)
    return Rig(cfg, tmp / name, media)


def _new_rig(rigs: list[Rig], cfg: Config, tmp: Path, media: Path, name: str) -> Rig:
    rigs.append(_rig(cfg, tmp, media, name))
    return rigs[-1]


async def run(cfg: Config, progress: Any = None) -> dict[str, Any]:
    """Runs the scenarios of ``cfg``; returns the report (see the module docstring)."""
    from e2ee.tools.bench.router_worker.media import prepare_media

    say = progress or (lambda msg: print(f"[bench router] {msg}", file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="e2ee-bench-router-"))
    started = _measure.now_iso()
    scenarios: dict[str, Any] = {}
    pinning: dict[str, Any] = {}
    try:
        media_path = tmp / "media.bin"
        say("encoding the media loop (libvpx, libopus) ...")
        media = await asyncio.get_running_loop().run_in_executor(
            None, lambda: prepare_media(media_path, seconds=cfg.media_seconds, fps=cfg.fps)
        )
        for name in cfg.scenarios:
            say(f"scenario {name}")
            if name == "mesh":
                rigs: list[Rig] = []
                scenarios[name] = await mesh(
                    functools.partial(_new_rig, rigs, cfg, tmp, media_path), say, cfg.parties
                )
                if rigs:
                    pinning = _pinning(rigs[-1])
                continue
            rig = _rig(cfg, tmp, media_path, name)
            try:
                scenarios[name] = await (fanout(rig, say) if name == "fanout" else loss(rig, say))
            finally:
                await rig.close()
            pinning = _pinning(rig)
    finally:
        if cfg.keep:
            say(f"kept {tmp} (the server's and the workers' logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report = _document(cfg, started, media, scenarios, pinning)
    report["targets"] = targets(report)
    return report


def _pinning(rig: Rig) -> dict[str, Any]:
    return {
        "router_cpus": sorted(rig.router_cpus) if rig.router_cpus else None,
        "load_generator_cpus": sorted(rig.load_cpus) if rig.load_cpus else None,
        "load_generator_nice": rig.nice,
    }


def _document(
    cfg: Config,
    started: str,
    media: dict[str, Any],
    scenarios: dict[str, Any],
    pinning: dict[str, Any],
) -> dict[str, Any]:
    """The report: every figure, the settings and the machine."""
    return {
        "benchmark": "router",
        "started": started,
        "machine": _measure.machine_info(),
        "config": {
            "scenarios": list(cfg.scenarios),
            "subscribers": list(cfg.subscribers),
            "parties": list(cfg.parties),
            "loss": list(cfg.loss),
            "loss_subscribers": cfg.loss_subscribers,
            "seconds": cfg.seconds,
            "warmup_s": cfg.warmup,
            "subscriber_kind": cfg.kind,
            "receiver": cfg.receiver,
            "subscribers_per_process": cfg.subscribers_per_process,
            "quick": cfg.quick,
        },
        "pinning": pinning,
        "media": {k: v for k, v in media.items() if k != "path"},
        "method": dict(_METHOD),
        "scenarios": scenarios,
    }


# -- the command line --------------------------------------------------------------------


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError("counts must be increasing and positive")
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if names == ["all"]:
        return SCENARIOS
    bad = [n for n in names if n not in SCENARIOS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"scenarios are {', '.join(SCENARIOS)} or all, not {text!r}"
        )
    return tuple(dict.fromkeys(names))


def _loss_modes(text: str) -> tuple[str, ...]:
    modes = tuple(v.strip() for v in text.split(",") if v.strip())
    try:
        for m in modes:
            parse_loss(m)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not modes:
        raise argparse.ArgumentTypeError("no loss mode")
    return modes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="e2ee bench router",
        description="Router CPU per forwarded packet, delivered fps, added latency and loss "
        "recovery: 1-to-S fan-out, an all-to-all call, uplink loss (a real server and "
        "separate load processes, all on loopback).",
    )
    p.add_argument(
        "--scenario",
        type=_scenarios,
        default=("fanout",),
        help="fanout, mesh, loss, a comma list, or all (fanout)",
    )
    p.add_argument(
        "--subscribers",
        type=_int_list,
        help="fanout: subscriber counts to step through (1,50,100,200)",
    )
    p.add_argument("--parties", type=_int_list, help="mesh: party counts (10)")
    p.add_argument(
        "--loss", type=_loss_modes, help="loss: modes, N%% or burstMS (1%%,5%%,burst300)"
    )
    p.add_argument("--loss-subscribers", type=int, help="loss: subscribers (10)")
    p.add_argument(
        "--subscriber-kind",
        choices=("light", "full"),
        default="light",
        help="light: RTP header per packet, decrypted probes (default); full: aiortc's "
        "receive path, every frame decrypted",
    )
    p.add_argument(
        "--receiver",
        choices=("native", "python"),
        default="native",
        help="light subscribers' receive path: native (recvmmsg and frames in Rust, "
        "default) or python (a header read in Python per packet)",
    )
    p.add_argument("--seconds", type=float, help="measured seconds per step (10)")
    p.add_argument("--warmup", type=float, help="seconds before each measurement (3)")
    p.add_argument(
        "--per-process",
        type=int,
        help=f"subscribers per process (light {PER_PROCESS['light']}, full {PER_PROCESS['full']})",
    )
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--plot", type=Path, help="write a PNG: a row of panels per scenario")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: fanout S=1,2; mesh 3 parties; loss 2 subscribers, 5%%,burst300; "
        "1 s windows (options given explicitly still apply)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin the router to one CPU")
    p.add_argument("--profile", type=Path, help="cProfile the router after the last fanout step")
    p.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs) and say where"
    )
    return p


def _config(args: argparse.Namespace) -> Config:
    """The run's settings: the options given, else the defaults (``--quick``: its own)."""
    quick = args.quick

    def pick(given: Any, full: Any, smoke: Any) -> Any:
        return given if given is not None else (smoke if quick else full)

    return Config(
        scenarios=args.scenario,
        subscribers=pick(args.subscribers, DEFAULT_SUBSCRIBERS, (1, 2)),
        parties=pick(args.parties, (10,), (3,)),
        loss=pick(args.loss, ("1%", "5%", "burst300"), ("5%", "burst300")),
        loss_subscribers=pick(args.loss_subscribers, 10, 2),
        seconds=pick(args.seconds, 10.0, 1.0),
        warmup=pick(args.warmup, 3.0, 0.5),
        kind=args.subscriber_kind,
        receiver=args.receiver,
        per_process=args.per_process,
        pin=not args.no_pin,
        profile=args.profile,
        keep=args.keep,
        quick=quick,
        media_seconds=2.0 if quick else 10.0,
        join_timeout=30.0 if quick else 60.0,
        probe_s=0.5 if quick else 5.0,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (
        (args.seconds is not None and args.seconds <= 0)
        or (args.loss_subscribers is not None and args.loss_subscribers < 1)
        or (args.per_process is not None and args.per_process < 1)
    ):
        print("e2ee bench router: counts and durations must be positive", file=sys.stderr)
        return 2
    report = asyncio.run(run(_config(args)))
    print(format_table(report))
    if args.json:
        _measure.write_json(args.json, json_safe(report))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from e2ee.tools.bench.router_plot import plot

        plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
