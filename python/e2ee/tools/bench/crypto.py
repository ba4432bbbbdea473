"""``e2ee bench crypto``: SFrame encrypt and decrypt speed from Python, against a baseline.

For each cipher suite (default 6 and 5) and frame size (default 100 B, 1,200 B, 10 KB,
100 KB, 1 MB) it times one-frame encrypt and decrypt of three implementations:

* ``e2ee``: the Rust core, :class:`e2ee.sframe.Encryptor` / :class:`~e2ee.sframe.Decryptor`;
* ``media``: the media layer, :class:`e2ee.FrameEncryptor` / :class:`e2ee.FrameDecryptor`
  on VP8 delta frames (3 clear bytes; codec framing, KID, events and stats included);
* ``baseline``: SFrame written on Python's ``cryptography`` (:mod:`e2ee.tools.bench.baseline`),
  what a Python user would write without e2ee.

All three do the same SFrame work on the same frames: key, 8-byte KID, the 3 clear bytes
as metadata.  The decryptors have no replay window, so one frame is decrypted again and
again.  Every figure is a median over ``--repeat`` timings; each timing is a batch of calls
lasting a few milliseconds, divided by the number of calls, and every repetition times all
candidates of a suite and size once, in shuffled order.  Ratios are baseline time /
candidate time (above 1: faster than the baseline).

Then multi-threaded throughput: 1 and 2 threads, each encrypting 100 KB frames with its own
``Encryptor`` (the core releases the GIL for 4 KiB and more), the two runs interleaved.

Results go to stdout, progress to stderr; ``--json`` keeps every figure with its spread and
the machine, ``--plot`` draws MB/s against frame size (needs matplotlib).
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2ee import crypto
from e2ee.crypto.frames import FrameDecryptor, FrameEncryptor
from e2ee.crypto.keyring import KeyRing
from e2ee.crypto.sframe import CipherSuite, Decryptor, Encryptor
from e2ee.tools.bench import _measure
from e2ee.tools.bench._measure import Series, Stats

__all__ = ["main", "run"]

SCHEMA = "e2ee-bench-crypto/1"
IMPLEMENTATIONS = ("e2ee", "media", "baseline")
OPERATIONS = ("encrypt", "decrypt")
DEFAULT_SUITES = (6, 5)
DEFAULT_SIZES = (100, 1_200, 10_000, 100_000, 1_000_000)
DEFAULT_REPEAT = 61
THREAD_SIZE = 100_000
THREAD_COUNTS = (1, 2)
VP8_DELTA = b"\x31\x02\x00"  # VP8 payload header of an inter frame: 3 bytes stay in clear
CLEAR = len(VP8_DELTA)

Op = Callable[[], object]


@dataclass(frozen=True)
class Settings:
    suites: tuple[int, ...]
    sizes: tuple[int, ...]
    repeat: int
    batch: float  # seconds per timed batch
    thread_repeat: int
    thread_batch: float  # seconds per thread run (one thread)
    quick: bool
    seed: int | None = None
    steady_malloc: bool = True


# -- argument parsing --------------------------------------------------------------------


def _size(text: str) -> int:
    """``1200``, ``1_200``, ``10k``, ``10KB``, ``1M`` or ``1MB`` (decimal units) to bytes."""
    t = text.strip().upper().replace("_", "").removesuffix("B")
    scale = {"K": 1_000, "M": 1_000_000}.get(t[-1:], 1)
    if scale > 1:
        t = t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise ValueError(f"not a size: {text!r}") from None
    if value != int(value) or not CLEAR < value <= 64_000_000:
        raise ValueError(f"size must be a whole number of bytes from {CLEAR + 1} to 64M: {text!r}")
    return int(value)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(_size(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return tuple(sorted(set(sizes)))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ee bench crypto",
        description="SFrame encrypt/decrypt speed: the e2ee core, its media layer and a "
        "`cryptography` baseline, per suite and frame size, plus 1- and 2-thread throughput.",
    )
    parser.add_argument(
        "--suites",
        type=int,
        nargs="+",
        choices=[int(s) for s in CipherSuite],
        metavar="N",
        help="cipher suites, 1 to 8 (default: 6 5)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        metavar="LIST",
        help="frame sizes in bytes, comma-separated; k and M suffixes allowed "
        "(default: 100,1200,10000,100000,1000000)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        metavar="N",
        help=f"timings per figure, the median is reported (default: {DEFAULT_REPEAT}; --quick: 5)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--plot", type=Path, metavar="PATH.png", help="plot MB/s against frame size (matplotlib)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: one size (1,200 B) per suite, few repeats, about a second",
    )
    parser.add_argument(
        "--malloc-as-is",
        action="store_true",
        help="leave glibc's malloc thresholds alone (by default they are fixed, so that large "
        "outputs do not page-fault on some calls and not others)",
    )
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)  # reproducible shuffles
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    suites = tuple(dict.fromkeys(args.suites or DEFAULT_SUITES))
    if args.quick:
        return Settings(
            suites=suites,
            sizes=args.sizes or (1_200,),
            repeat=args.repeat or 5,
            batch=0.001,
            thread_repeat=min(args.repeat or 3, 3),
            thread_batch=0.004,
            quick=True,
            seed=args.seed,
            steady_malloc=not args.malloc_as_is,
        )
    return Settings(
        suites=suites,
        sizes=args.sizes or DEFAULT_SIZES,
        repeat=args.repeat or DEFAULT_REPEAT,
        batch=0.003,
        thread_repeat=max(5, (args.repeat or DEFAULT_REPEAT) // 2),
        thread_batch=0.03,
        quick=False,
        seed=args.seed,
        steady_malloc=not args.malloc_as_is,
    )


# -- the candidates ----------------------------------------------------------------------


def _frame(size: int) -> bytes:
    """A VP8 delta frame of ``size`` bytes: the 3-byte payload header, then filler."""
    return VP8_DELTA + bytes(i & 0xFF for i in range(size - CLEAR))


class _Setup:
    """One suite's key material and the three implementations' objects, all on one KID."""

    def __init__(self, suite: int) -> None:
        from e2ee.tools.bench import baseline  # needs `cryptography`

        self.suite = CipherSuite(suite)
        self.ring = KeyRing("bench", suite=suite, kdf_iterations=1000)
        self.ring.set_secret("benchmark secret")
        self.media_enc = FrameEncryptor(self.ring, "vp8")
        self.media_dec = FrameDecryptor(self.ring, "vp8", replay_window=0)
        current = self.ring.snapshot.current
        assert current is not None
        kid = self.media_enc.kid
        assert kid is not None
        self.key, self.kid = current.key, kid
        self.core_enc = Encryptor(self.suite, self.key, kid)
        self.core_dec = Decryptor(self.suite, replay_window=0)
        self.core_dec.add_key(kid, self.key)
        self.base_enc = baseline.BaselineEncryptor(suite, self.key, kid)
        self.base_dec = baseline.BaselineDecryptor(suite)
        self.base_dec.add_key(kid, self.key)

    def candidates(self, size: int) -> dict[tuple[str, str], Op]:
        """``{(implementation, operation): call}`` for frames of ``size`` bytes, checked."""
        frame = _frame(size)
        clear, body = frame[:CLEAR], frame[CLEAR:]
        wire = self.media_enc.encrypt(frame)
        sealed = wire[CLEAR:]
        ops: dict[tuple[str, str], Op] = {
            ("e2ee", "encrypt"): functools.partial(self.core_enc.encrypt, body, clear),
            ("e2ee", "decrypt"): functools.partial(self.core_dec.decrypt, sealed, clear),
            ("media", "encrypt"): functools.partial(self.media_enc.encrypt, frame),
            ("media", "decrypt"): functools.partial(self.media_dec.decrypt, wire),
            ("baseline", "encrypt"): functools.partial(self.base_enc.encrypt, body, clear),
            ("baseline", "decrypt"): functools.partial(self.base_dec.decrypt, sealed, clear),
        }
        # Every candidate must do the real work: decrypt what the encryptors produce.
        for (impl, op), call in ops.items():
            out = call()
            assert isinstance(out, bytes)
            if op == "decrypt":
                ok = out == (frame if impl == "media" else body)
            elif impl == "media":
                ok = out[:CLEAR] == clear and self.base_dec.decrypt(out[CLEAR:], clear) == body
            else:
                ok = self.core_dec.decrypt(out, clear) == body
            if not ok:
                raise RuntimeError(f"suite {int(self.suite)}, {size} B: {impl} {op} is wrong")
        return ops


# -- threads -----------------------------------------------------------------------------


def _threaded_run(encryptors: Sequence[Encryptor], frame: bytes, calls: int) -> float:
    """Wall seconds for ``len(encryptors)`` threads each encrypting ``frame`` ``calls`` times."""
    count = len(encryptors)
    start = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def work(enc: Encryptor) -> None:
        encrypt = enc.encrypt
        start.wait()
        try:
            for _ in range(calls):
                encrypt(frame)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(enc,), daemon=True) for enc in encryptors]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed


def _threads(suite: int, settings: Settings, rng: random.Random) -> dict[str, Any]:
    """MB/s of 1 and 2 threads encrypting 100 KB frames, the runs interleaved."""
    cs = CipherSuite(suite)
    frame = bytes(i & 0xFF for i in range(THREAD_SIZE))
    encryptors = [Encryptor(cs, bytes(range(32)), kid) for kid in range(max(THREAD_COUNTS))]
    per_call = _measure.time_batch(functools.partial(encryptors[0].encrypt, frame), 20)
    calls = max(2, round(settings.thread_batch / per_call))
    samples: dict[int, list[float]] = {n: [] for n in THREAD_COUNTS}
    _threaded_run(encryptors, frame, 2)  # warm up both threads' paths
    order = list(THREAD_COUNTS)
    for _ in range(settings.thread_repeat):
        rng.shuffle(order)
        for n in order:
            elapsed = _threaded_run(encryptors[:n], frame, calls)
            samples[n].append(n * calls * THREAD_SIZE / elapsed / 1e6)
    stats = {n: Stats.of(samples[n]) for n in THREAD_COUNTS}
    one, two = stats[1].median, stats[2].median
    return {
        "suite": suite,
        "size": THREAD_SIZE,
        "calls_per_thread": calls,
        "mb_per_s": {str(n): stats[n].as_dict() for n in THREAD_COUNTS},
        "speedup_2_threads": two / one,
    }


# -- the run -----------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _label(size: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if size >= scale and size % (scale // 10) == 0:
            return f"{size / scale:g} {unit}"
    return f"{size:,} B"


def run(settings: Settings) -> dict[str, Any]:
    """Measure everything ``settings`` asks for; returns the JSON document."""
    rng = random.Random(settings.seed)
    started = time.perf_counter()
    malloc = _measure.steady_malloc() if settings.steady_malloc else None
    overhead = _measure.interleaved({"noop": functools.partial(len, b"")}, 5, target=0.001)
    results: list[dict[str, Any]] = []
    for suite in settings.suites:
        setup = _Setup(suite)
        for size in settings.sizes:
            _progress(
                f"suite {suite}, {_label(size)}: {len(IMPLEMENTATIONS) * len(OPERATIONS)} "
                f"candidates x {settings.repeat} timings"
            )
            ops = setup.candidates(size)
            named = {f"{impl}/{op}": call for (impl, op), call in ops.items()}
            timed = _measure.interleaved(named, settings.repeat, target=settings.batch, rng=rng)
            for op in OPERATIONS:
                base = timed[f"baseline/{op}"][0].median
                for impl in IMPLEMENTATIONS:
                    stats, calls = timed[f"{impl}/{op}"]
                    results.append(
                        {
                            "suite": suite,
                            "size": size,
                            "op": op,
                            "impl": impl,
                            "calls_per_timing": calls,
                            "us": stats.scaled(1e6).as_dict(),
                            "mb_per_s": stats.inverse(size / 1e6).as_dict(),
                            "ratio_to_baseline": base / stats.median,
                        }
                    )
    threads: list[dict[str, Any]] = []
    for suite in settings.suites:
        _progress(
            f"suite {suite}, {_label(THREAD_SIZE)}: 1 and 2 threads x {settings.thread_repeat}"
        )
        threads.append(_threads(suite, settings, rng))
    return {
        "schema": SCHEMA,
        "date": _measure.now_iso(),
        "duration_s": round(time.perf_counter() - started, 2),
        "machine": _measure.machine_info(),
        "e2ee": {
            "version": crypto.__version__,
            "backend": crypto.BACKEND,
            "cpu_features": dict(crypto.cpu_features()),
        },
        "settings": {
            "suites": list(settings.suites),
            "sizes": list(settings.sizes),
            "implementations": list(IMPLEMENTATIONS),
            "operations": list(OPERATIONS),
            "repeat": settings.repeat,
            "batch_s": settings.batch,
            "thread_counts": list(THREAD_COUNTS),
            "thread_repeat": settings.thread_repeat,
            "thread_batch_s": settings.thread_batch,
            "quick": settings.quick,
            "clear_bytes": CLEAR,
            "harness_overhead_us": overhead["noop"][0].median * 1e6,
            "malloc": malloc or "as is",
        },
        "results": results,
        "threads": threads,
        "summary": _summary(results, threads),
    }


def _find(results: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in results if all(r[k] == v for k, v in match.items())]


def _summary(results: list[dict[str, Any]], threads: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the project's targets are about (whatever was measured of them)."""
    summary: dict[str, Any] = {}
    for suite in sorted({r["suite"] for r in results}):
        rows = _find(results, suite=suite)
        sizes = sorted({r["size"] for r in rows})
        entry: dict[str, Any] = {}
        for size in (sizes[0], sizes[-1]):
            entry[f"e2ee_ratio_to_baseline_{size}B"] = {
                r["op"]: r["ratio_to_baseline"] for r in _find(rows, size=size, impl="e2ee")
            }
        entry["media_minus_e2ee_us"] = {
            str(size): {
                m["op"]: m["us"]["median"] - e["us"]["median"]
                for m in _find(rows, impl="media", size=size)
                for e in _find(rows, impl="e2ee", size=size, op=m["op"])
            }
            for size in sizes
        }
        summary[f"suite{suite}"] = entry
    for t in threads:
        summary[f"suite{t['suite']}"]["speedup_2_threads"] = t["speedup_2_threads"]
    return summary


# -- output ------------------------------------------------------------------------------


def _num(value: float, digits: int = 2) -> str:
    """``digits`` decimals below 100, none from 100 on (thousands separated)."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (columns aligned, so also readable as plain text)."""
    head = [
        "suite",
        "size",
        "op",
        "e2ee µs",
        "e2ee MB/s",
        "media µs",
        "media - e2ee µs",
        "baseline µs",
        "baseline MB/s",
        "e2ee vs baseline",
        "media vs baseline",
    ]
    rows: list[list[str]] = []
    results = doc["results"]
    for suite in doc["settings"]["suites"]:
        for size in doc["settings"]["sizes"]:
            for op in OPERATIONS:
                r = {x["impl"]: x for x in _find(results, suite=suite, size=size, op=op)}
                e, m, b = r["e2ee"], r["media"], r["baseline"]
                rows.append(
                    [
                        str(suite),
                        _label(size),
                        op,
                        _num(e["us"]["median"]),
                        _num(e["mb_per_s"]["median"], 1),
                        _num(m["us"]["median"]),
                        f"{m['us']['median'] - e['us']['median']:+.2f}",
                        _num(b["us"]["median"]),
                        _num(b["mb_per_s"]["median"], 1),
                        f"{e['ratio_to_baseline']:.1f}x",
                        f"{m['ratio_to_baseline']:.1f}x",
                    ]
                )
    lines = [_markdown(head, rows, right=set(range(len(head))) - {2})]
    thread_rows = [
        [
            str(t["suite"]),
            _label(t["size"]),
            _num(t["mb_per_s"]["1"]["median"]),
            _num(t["mb_per_s"]["2"]["median"]),
            f"{t['speedup_2_threads']:.2f}x",
        ]
        for t in doc["threads"]
    ]
    if thread_rows:
        head2 = ["suite", "size", "1 thread MB/s", "2 threads MB/s", "2 / 1"]
        lines += ["", "e2ee encrypt, one Encryptor per thread:", ""]
        lines.append(_markdown(head2, thread_rows, right=set(range(len(head2)))))
    m = doc["machine"]
    lines += [
        "",
        f"Medians of {doc['settings']['repeat']} interleaved timings; ratio = baseline time / "
        f"time.  {m['cpu']['model']}, {m['cpus_usable']} CPUs, Python {m['python']}, "
        f"e2ee {doc['e2ee']['version']}.",
    ]
    return "\n".join(lines)


def _markdown(head: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    return "\n".join([line(head), "|" + "|".join(rule) + "|", *(line(r) for r in rows)])


STYLE = {
    "e2ee": {"color": "tab:blue"},
    "media": {"color": "tab:green"},
    "baseline": {"color": "tab:red"},
    "encrypt": {"linestyle": "-"},
    "decrypt": {"linestyle": "--"},
}
NAMES = {"e2ee": "e2ee core", "media": "e2ee media layer", "baseline": "cryptography baseline"}


def plot(doc: dict[str, Any], path: Path) -> None:
    """Throughput against frame size, log-log, one panel per suite."""
    panels = []
    for suite in doc["settings"]["suites"]:
        series = []
        for impl in IMPLEMENTATIONS:
            for op in OPERATIONS:
                rows = sorted(
                    _find(doc["results"], suite=suite, impl=impl, op=op), key=lambda r: r["size"]
                )
                series.append(
                    Series(
                        f"{NAMES[impl]}, {op}",
                        [r["size"] for r in rows],
                        [r["mb_per_s"]["median"] for r in rows],
                        STYLE[impl] | STYLE[op],
                    )
                )
        panels.append((f"suite {suite} ({CipherSuite(suite).name})", series))
    m = doc["machine"]
    _measure.loglog_plot(
        path,
        panels,
        xlabel="frame size (bytes)",
        ylabel="MB/s (median)",
        title=f"SFrame from Python: e2ee {doc['e2ee']['version']} vs cryptography; "
        f"{m['cpu']['model']}, Python {m['python']}",
        xticks={s: _label(s) for s in doc["settings"]["sizes"]},
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error(f"--plot: the file name must end in .png: {args.plot}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            parser.error("--plot needs matplotlib (pip install 'e2ee-media[bench]')")
    try:
        import cryptography  # noqa: F401
    except ModuleNotFoundError:
        parser.error("the baseline needs `cryptography` (pip install 'e2ee-media[bench]')")
    doc = run(_settings(args))
    print(table(doc))
    if args.json is not None:
        _measure.write_json(args.json, doc)
        _progress(f"wrote {args.json}")
    if args.plot is not None:
        plot(doc, args.plot)
        _progress(f"wrote {args.plot}")
    return 0
