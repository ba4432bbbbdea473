"""What ``e2ee bench crypto`` measures, and how; :func:`run` returns the JSON document.

For each cipher suite and frame size it times one-frame encrypt and decrypt of these
implementations:

* ``e2ee``: the Rust core, :class:`e2ee.sframe.Encryptor` / :class:`~e2ee.sframe.Decryptor`;
* ``e2ee_into``: the same writing into a buffer reused from call to call
  (``encrypt_into`` / ``decrypt_into``), as the floor does;
* ``media``: the media layer, :class:`e2ee.FrameEncryptor` / :class:`e2ee.FrameDecryptor`
  on VP8 delta frames (3 clear bytes; codec framing, KID, events and stats included);
* ``baseline``: SFrame written on Python's ``cryptography`` (:mod:`e2ee.tools.bench.baseline`),
  what a Python user would write without e2ee;
* ``floor``: the same work done by the system's libcrypto, keyed once, into a reused buffer
  (:mod:`e2ee.tools.bench.crypto_floor`), with ``floor_stub``, the same Python and ctypes
  calls doing nothing, so that the floor less its stub is libcrypto's own time.  e2ee's
  ratio to that net floor (``vs_floor``, time / floor time: 1.1 means 10% slower) is what
  the goals are about: at most 1.1 at 1 MB and 1.3 at 100 B.  Left out, and the reason
  said, when no libcrypto can be loaded.

All of them do the same SFrame work on the same frames: key, 8-byte KID, the 3 clear bytes
as metadata, and each is checked to do it before it is timed.  The decryptors have no
replay window, so one frame is decrypted again and again.  Every figure is a median over
``repeat`` timings; each timing is a batch of calls lasting a few milliseconds, divided by
the number of calls, and every repetition times all candidates of a suite and size once,
in shuffled order (:func:`e2ee.tools.bench._measure.interleaved`).  Ratios are baseline
time / candidate time (above 1: faster than the baseline).

Then multi-threaded throughput: 1 and 2 threads, each encrypting 100 KB frames with its own
``Encryptor`` (the core releases the GIL for 4 KiB and more), the two runs interleaved.
"""

from __future__ import annotations

import functools
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from e2ee import crypto
from e2ee.crypto.frames import FrameDecryptor, FrameEncryptor
from e2ee.crypto.keyring import KeyRing
from e2ee.crypto.sframe import CipherSuite, Decryptor, Encryptor
from e2ee.tools.bench import _measure, crypto_floor
from e2ee.tools.bench._measure import Stats

__all__ = [
    "CLEAR",
    "FLOOR_GOALS",
    "IMPLEMENTATIONS",
    "OPERATIONS",
    "SCHEMA",
    "THREAD_COUNTS",
    "THREAD_SIZE",
    "Settings",
    "find",
    "label",
    "progress",
    "run",
]

SCHEMA = "e2ee-bench-crypto/1"
IMPLEMENTATIONS = ("e2ee", "e2ee_into", "media", "baseline", "floor")
#: (frame size, most e2ee_into time / net floor time) from the project's targets.
FLOOR_GOALS = ((100, 1.3), (1_000_000, 1.1))
OPERATIONS = ("encrypt", "decrypt")
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


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def label(size: int) -> str:
    """A frame size as people write it: ``1,200 B``, ``10 KB``, ``1 MB``."""
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if size >= scale and size % (scale // 10) == 0:
            return f"{size / scale:g} {unit}"
    return f"{size:,} B"


def find(results: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The result rows whose fields equal ``match``."""
    return [r for r in results if all(r[k] == v for k, v in match.items())]


# -- the candidates ----------------------------------------------------------------------


def _frame(size: int) -> bytes:
    """A VP8 delta frame of ``size`` bytes: the 3-byte payload header, then filler."""
    return VP8_DELTA + bytes(i & 0xFF for i in range(size - CLEAR))


class _Setup:
    """One suite's key material and the implementations' objects, all on one KID."""

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
        self.floor: dict[str, tuple[crypto_floor.FloorEncryptor, crypto_floor.FloorDecryptor]]
        self.floor = {}
        if crypto_floor.load() is not None:
            for name, stub in (("floor", False), ("floor_stub", True)):
                fenc = crypto_floor.FloorEncryptor(suite, self.key, kid, stub=stub)
                fdec = crypto_floor.FloorDecryptor(suite, stub=stub)
                fdec.add_key(kid, self.key)
                self.floor[name] = (fenc, fdec)

    def close(self) -> None:
        for fenc, fdec in self.floor.values():
            fenc.close()
            fdec.close()

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
        # Reused output buffers, with room for the header to grow as the CTR does.
        room = len(body) + 64
        bufs = {name: bytearray(room) for name in ("e2ee_into", "floor", "floor_stub")}
        ops[("e2ee_into", "encrypt")] = functools.partial(
            self.core_enc.encrypt_into, body, bufs["e2ee_into"], clear
        )
        ops[("e2ee_into", "decrypt")] = functools.partial(
            self.core_dec.decrypt_into, sealed, bufs["e2ee_into"], clear
        )
        for name, (fenc, fdec) in self.floor.items():
            ops[(name, "encrypt")] = functools.partial(fenc.encrypt_into, body, bufs[name], clear)
            ops[(name, "decrypt")] = functools.partial(fdec.decrypt_into, sealed, bufs[name], clear)
        # Every candidate must do the real work: decrypt what the encryptors produce.
        for (impl, op), call in ops.items():
            if impl == "floor_stub":
                continue
            if impl in ("e2ee_into", "floor"):
                n = call()
                assert isinstance(n, int)
                got = bytes(bufs[impl][:n])
                ok = got == body if op == "decrypt" else self.core_dec.decrypt(got, clear) == body
                if not ok:
                    raise RuntimeError(f"suite {int(self.suite)}, {size} B: {impl} {op} is wrong")
                continue
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


def _time_size(
    suite: int, setup: _Setup, size: int, settings: Settings, rng: random.Random
) -> list[dict[str, Any]]:
    """The result rows of one suite and size: every implementation and operation."""
    ops = setup.candidates(size)
    named = {f"{impl}/{op}": call for (impl, op), call in ops.items()}
    timed = _measure.interleaved(named, settings.repeat, target=settings.batch, rng=rng)
    rows: list[dict[str, Any]] = []
    for op in OPERATIONS:
        base = timed[f"baseline/{op}"][0].median
        floor = _net_floor(timed, op)
        for impl in IMPLEMENTATIONS:
            if f"{impl}/{op}" not in timed:
                continue  # no floor without libcrypto
            stats, calls = timed[f"{impl}/{op}"]
            row = {
                "suite": suite,
                "size": size,
                "op": op,
                "impl": impl,
                "calls_per_timing": calls,
                "us": stats.scaled(1e6).as_dict(),
                "mb_per_s": stats.inverse(size / 1e6).as_dict(),
                "ratio_to_baseline": base / stats.median,
            }
            if impl == "floor":
                # ``us`` is the floor as called from Python; these are libcrypto's share.
                row["net_us"] = floor * 1e6 if floor else None
                row["call_overhead_us"] = timed[f"floor_stub/{op}"][0].median * 1e6
            elif impl.startswith("e2ee") and floor:
                row["vs_floor"] = stats.median / floor
            rows.append(row)
    return rows


def _net_floor(timed: dict[str, tuple[Stats, int]], op: str) -> float | None:
    """libcrypto's own seconds per frame: the floor less its stub (``None`` if unresolved:
    no libcrypto, or timing noise larger than the difference)."""
    if f"floor/{op}" not in timed:
        return None
    net = timed[f"floor/{op}"][0].median - timed[f"floor_stub/{op}"][0].median
    return net if net > 0 else None


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


def run(settings: Settings) -> dict[str, Any]:
    """Measure everything ``settings`` asks for; returns the JSON document."""
    rng = random.Random(settings.seed)
    started = time.perf_counter()
    malloc = _measure.steady_malloc() if settings.steady_malloc else None
    overhead = _measure.interleaved({"noop": functools.partial(len, b"")}, 5, target=0.001)
    results: list[dict[str, Any]] = []
    if crypto_floor.load() is None:
        progress(f"no floor column: {crypto_floor.unavailable_reason()}")
    for suite in settings.suites:
        setup = _Setup(suite)
        try:
            # Each implementation once per operation; the floor comes with its stub.
            count = len(OPERATIONS) * (len(IMPLEMENTATIONS) - 1 + len(setup.floor))
            for size in settings.sizes:
                progress(
                    f"suite {suite}, {label(size)}: {count} candidates x {settings.repeat} timings"
                )
                results += _time_size(suite, setup, size, settings, rng)
        finally:
            setup.close()
    threads: list[dict[str, Any]] = []
    for suite in settings.suites:
        progress(f"suite {suite}, {label(THREAD_SIZE)}: 1 and 2 threads x {settings.thread_repeat}")
        threads.append(_threads(suite, settings, rng))
    return {
        "schema": SCHEMA,
        "date": _measure.now_iso(),
        "duration_s": round(time.perf_counter() - started, 2),
        "machine": _measure.machine_info(),
        "e2ee": {
            "version": crypto.__version__,
            "backend": crypto.BACKEND,
            "backend_info": dict(crypto.backend_info()),
            "cpu_features": dict(crypto.cpu_features()),
        },
        "floor": _floor_doc(results),
        "settings": _settings_doc(settings, overhead["noop"][0].median * 1e6, malloc),
        "results": results,
        "threads": threads,
        "summary": _summary(results, threads),
    }


def _settings_doc(settings: Settings, overhead_us: float, malloc: Any) -> dict[str, Any]:
    return {
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
        "harness_overhead_us": overhead_us,
        "malloc": malloc or "as is",
    }


def _floor_doc(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Which libcrypto the floor used, and the goals against it (whatever was measured)."""
    lib = crypto_floor.load()
    goals = []
    for suite in sorted({r["suite"] for r in results}):
        for size, limit in FLOOR_GOALS:
            for op in OPERATIONS:
                rows = find(results, suite=suite, size=size, op=op, impl="e2ee_into")
                if not rows or lib is None:
                    continue
                ratio = rows[0].get("vs_floor")
                goals.append(
                    {
                        "suite": suite,
                        "size": size,
                        "op": op,
                        "limit": limit,
                        "vs_floor": ratio,
                        "met": None if ratio is None else ratio <= limit,
                    }
                )
    return {
        "available": lib is not None,
        "reason": crypto_floor.unavailable_reason(),
        "library": lib.path if lib else None,
        "version": lib.version if lib else None,
        "goals": goals,
    }


def _summary(results: list[dict[str, Any]], threads: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the project's targets are about (whatever was measured of them)."""
    summary: dict[str, Any] = {}
    for suite in sorted({r["suite"] for r in results}):
        rows = find(results, suite=suite)
        sizes = sorted({r["size"] for r in rows})
        entry: dict[str, Any] = {}
        for size in (sizes[0], sizes[-1]):
            entry[f"e2ee_ratio_to_baseline_{size}B"] = {
                r["op"]: r["ratio_to_baseline"] for r in find(rows, size=size, impl="e2ee")
            }
        entry["media_minus_e2ee_us"] = {
            str(size): {
                m["op"]: m["us"]["median"] - e["us"]["median"]
                for m in find(rows, impl="media", size=size)
                for e in find(rows, impl="e2ee", size=size, op=m["op"])
            }
            for size in sizes
        }
        summary[f"suite{suite}"] = entry
    for t in threads:
        summary[f"suite{t['suite']}"]["speedup_2_threads"] = t["speedup_2_threads"]
    return summary
