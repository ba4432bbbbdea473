"""``e2ee bench crypto``: the command's output is well formed (never its speed), and the
measuring helpers of ``e2ee.tools.bench._measure`` do what they say."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2ee.tools.bench import _measure, crypto, crypto_floor, crypto_report, crypto_timing

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATS_KEYS = {"median", "p25", "p75", "min", "max", "n"}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "e2ee", "bench", "crypto", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_stats(stats: dict[str, Any], repeat: int) -> None:
    assert set(stats) == STATS_KEYS
    assert stats["n"] == repeat
    values = [stats[k] for k in ("min", "p25", "median", "p75", "max")]
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)
    assert values == sorted(values)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, Any], Path]:
    pytest.importorskip("cryptography")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("bench")
    proc = bench("--quick", "--json", str(out / "crypto.json"), "--plot", str(out / "crypto.png"))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr, json.loads((out / "crypto.json").read_text()), out


def test_quick_json_is_complete(quick_run: tuple[str, str, dict[str, Any], Path]) -> None:
    _, _, doc, _ = quick_run
    assert doc["schema"] == crypto_timing.SCHEMA
    settings = doc["settings"]
    assert settings["suites"] == [6, 5]
    assert settings["quick"] is True
    assert len(settings["sizes"]) == 1
    repeat = settings["repeat"]
    cpu = doc["machine"]["cpu"]
    assert cpu["model"]
    assert cpu["flags"] is None or set(cpu["flags"]) <= set(_measure.CPU_FLAGS)
    assert doc["machine"]["python"].count(".") == 2
    assert doc["e2ee"]["version"]
    assert doc["e2ee"]["backend"]
    info = doc["e2ee"]["backend_info"]
    assert any(k.startswith("HMAC-SHA512") for k in info)
    assert all(isinstance(v, str) and v for v in info.values())
    assert isinstance(doc["e2ee"]["cpu_features"], dict)
    assert doc["date"].startswith("20")

    got = {(r["suite"], r["size"], r["op"], r["impl"]) for r in doc["results"]}
    impls = ["e2ee", "e2ee_into", "media", "baseline"]
    if doc["floor"]["available"]:
        impls.append("floor")
    want = {
        (suite, size, op, impl)
        for suite in settings["suites"]
        for size in settings["sizes"]
        for op in ("encrypt", "decrypt")
        for impl in impls
    }
    assert got == want
    assert len(doc["results"]) == len(want)
    for r in doc["results"]:
        check_stats(r["us"], repeat)
        check_stats(r["mb_per_s"], repeat)
        assert r["calls_per_timing"] >= 1
        assert r["ratio_to_baseline"] > 0
        if r["impl"] == "baseline":
            assert r["ratio_to_baseline"] == 1
        if r["impl"] == "floor":
            assert r["call_overhead_us"] > 0
            assert r["net_us"] is None or r["net_us"] > 0
        if r["impl"] in ("e2ee", "e2ee_into") and "vs_floor" in r:
            assert r["vs_floor"] > 0
        # MB/s is bytes per µs.
        assert r["mb_per_s"]["median"] == pytest.approx(r["size"] / r["us"]["median"])

    assert [t["suite"] for t in doc["threads"]] == settings["suites"]
    for t in doc["threads"]:
        assert t["size"] == crypto_timing.THREAD_SIZE
        assert set(t["mb_per_s"]) == {"1", "2"}
        for stats in t["mb_per_s"].values():
            check_stats(stats, settings["thread_repeat"])
        assert t["speedup_2_threads"] > 0
    for suite in settings["suites"]:
        assert doc["summary"][f"suite{suite}"]["speedup_2_threads"] > 0


def test_quick_prints_a_table_and_progress(
    quick_run: tuple[str, str, dict[str, Any], Path],
) -> None:
    stdout, stderr, _, _ = quick_run
    lines = stdout.splitlines()
    assert "e2ee µs" in lines[0]
    assert "baseline µs" in lines[0]
    rows = [line for line in lines if line.startswith("|") and line.split("|")[3].strip()]
    tables = 1 if crypto_floor.load() is None else 2  # against the baseline, the floor
    assert sum(" encrypt " in r or " decrypt " in r for r in rows) == 4 * tables  # 2 suites x 2 ops
    assert "2 threads MB/s" in stdout
    assert "e2ee backend on this CPU: AES-CTR" in stdout
    if crypto_floor.load() is None:
        assert "No libcrypto floor in this run" in stdout
    else:
        assert "Against the floor:" in stdout
        assert "into / floor" in stdout  # the floor table's header
        assert "goal: not measured in this run" in stdout  # --quick times 1,200 B only
    assert "suite 6" in stderr  # progress goes to stderr
    assert "suite 5" in stderr


def test_quick_plot_is_a_png(quick_run: tuple[str, str, dict[str, Any], Path]) -> None:
    _, _, _, out = quick_run
    data = (out / "crypto.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suites", "9"], "invalid choice"),
        (["--sizes", "100,abc"], "not a size"),
        (["--sizes", "2"], "size must be"),
        (["--repeat", "0"], "must be at least 1"),
        (["--plot", "out.svg"], "must end in .png"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        crypto.main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--suites", "9"], "invalid choice"), (["--sizes", "1x"], "not a size")],
)
def test_bad_arguments_from_the_command_line(args: list[str], message: str) -> None:
    proc = bench(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_sizes_parse() -> None:
    assert crypto._sizes("100,1200,10k,100KB,1M") == (100, 1_200, 10_000, 100_000, 1_000_000)
    assert crypto._sizes("1_200, 100, 100") == (100, 1_200)
    assert crypto._sizes("1.2k") == (1_200,)


# -- the measuring helpers -----------------------------------------------------------------


def test_stats() -> None:
    s = _measure.Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.min, s.p25, s.median, s.p75, s.max, s.n) == (1.0, 2.0, 3.0, 4.0, 5.0, 5)
    assert _measure.Stats.of([2.0]).as_dict() == dict.fromkeys(STATS_KEYS - {"n"}, 2.0) | {"n": 1}
    assert s.scaled(10).median == 30.0
    inv = s.inverse(60.0)  # e.g. seconds per call to calls per minute: the order flips
    assert (inv.min, inv.p25, inv.median, inv.p75, inv.max) == (12.0, 15.0, 20.0, 30.0, 60.0)
    with pytest.raises(ValueError, match="no samples"):
        _measure.Stats.of([])


def test_interleaved_times_every_candidate_in_shuffled_rounds() -> None:
    order: list[str] = []
    candidates = {name: (lambda n=name: order.append(n)) for name in "abc"}
    result = _measure.interleaved(candidates, 4, target=0.0002, rng=random.Random(1))
    assert set(result) == {"a", "b", "c"}
    for stats, calls in result.values():
        assert stats.n == 4
        assert calls >= 1
        assert stats.median > 0
    with pytest.raises(ValueError, match="repeat"):
        _measure.interleaved(candidates, 0)


def test_calls_per_batch_scales_with_cost() -> None:
    cheap = _measure.calls_per_batch(lambda: None, target=0.001)
    dear = _measure.calls_per_batch(lambda: sum(range(2000)), target=0.001)
    assert cheap > dear >= 1


def test_machine_info_and_json(tmp_path: Path) -> None:
    info = _measure.machine_info()
    assert info["cpu"]["model"]
    assert info["cpus_usable"] >= 1
    path = tmp_path / "sub" / "out.json"
    _measure.write_json(path, {"machine": info})
    assert json.loads(path.read_text())["machine"] == info
    with pytest.raises(ValueError, match="JSON compliant"):
        _measure.write_json(path, {"x": float("nan")})


def test_floor_goals_are_printed_and_kept(tmp_path: Path) -> None:
    """At the goal sizes every operation gets a goal line and a JSON entry (values free)."""
    pytest.importorskip("cryptography")
    if crypto_floor.load() is None:
        pytest.skip(str(crypto_floor.unavailable_reason()))
    out = tmp_path / "crypto.json"
    proc = bench(
        "--quick", "--suites", "6", "--sizes", "100,1M", "--repeat", "3", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    floor = doc["floor"]
    assert floor["available"] is True
    assert floor["reason"] is None
    assert floor["version"]
    assert floor["library"]
    goals = {(g["size"], g["op"]): g for g in floor["goals"]}
    assert set(goals) == {(s, op) for s in (100, 1_000_000) for op in ("encrypt", "decrypt")}
    for (size, _), g in goals.items():
        assert g["suite"] == 6
        assert g["limit"] == dict(crypto_timing.FLOOR_GOALS)[size]
        assert g["met"] in (True, False, None)
    goal_lines = [line for line in proc.stdout.splitlines() if line.startswith("goal: suite 6")]
    assert len(goal_lines) == 4
    assert all(line.endswith(("met", "NOT MET", "floor not resolved")) for line in goal_lines)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|     6 |")]
    assert sum("x |" in r for r in rows) >= 4  # ratios in the floor table (or n/a)


def test_no_libcrypto_no_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a libcrypto the run still completes and says why the floor is missing."""
    pytest.importorskip("cryptography")
    monkeypatch.setattr(crypto_floor, "_loaded", None)
    monkeypatch.setattr(crypto_floor, "_reason", "no usable libcrypto (test)")
    settings = crypto._settings(crypto.build_parser().parse_args(["--quick", "--suites", "6"]))
    doc = crypto_timing.run(settings)
    assert doc["floor"] == {
        "available": False,
        "reason": "no usable libcrypto (test)",
        "library": None,
        "version": None,
        "goals": [],
    }
    assert {r["impl"] for r in doc["results"]} == {"e2ee", "e2ee_into", "media", "baseline"}
    text = crypto_report.table(doc)
    assert "No libcrypto floor in this run: no usable libcrypto (test)." in text


def test_a_record_from_before_the_floor_still_renders(tmp_path: Path) -> None:
    """docs/bench/crypto.json predates the floor: its table (without a floor section, as
    the README quotes it) and plot are still drawn."""
    record = Path(__file__).resolve().parents[2] / "docs" / "bench" / "crypto.json"
    doc = json.loads(record.read_text())
    doc.pop("floor", None)
    text = crypto_report.table(doc)
    assert "e2ee µs" in text.splitlines()[0]
    assert "floor" not in text
    assert "2 threads MB/s" in text
    pytest.importorskip("matplotlib")
    crypto_report.plot(doc, tmp_path / "old.png")
    assert (tmp_path / "old.png").read_bytes().startswith(PNG_SIGNATURE)
