"""The package's layers hold: import contracts on the real import graph, the Rust core
behind e2ee.crypto, and every private aiortc name in e2ee.rtc.compat."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]  # tests/unit/test_layers.py
PACKAGE = ROOT / "python" / "e2ee"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# Private aiortc attributes (name-mangled or underscored) this project has needed.
PRIVATE_AIORTC = re.compile(
    r"_RTC[A-Za-z]+__|\b_next_encoded_frame\b|\b_send_keyframe\b|\b_send_rtcp_pli\b"
    r"|\b_packetize\b|\._stream_id\b|\b_handle_rtp_packet\b|\b_run_rtp\b|\b_send_rtp\b"
    r"|\bpacket\._data\b|\b_headerExtensions\b|\._ssrc\b|\._rtx_ssrc\b"
)
COMPAT = PACKAGE / "rtc" / "compat"  # a package: one module per seam
# compat's own tests (tests/unit/rtc/test_compat.py) break its seams on purpose, by name;
# exempt by base name, wherever they live.
EXEMPT = {"test_compat.py", Path(__file__).name}


def _lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None
    if pythonpath is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_hold() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("sfu/router.py", "import e2ee.crypto.keyring", "never load key handling"),
        ("server/rest.py", "from e2ee.server import signaling", "siblings over the rooms"),
        ("wire/codecs.py", "import e2ee.rtc.net", "Layers"),
        ("client/session.py", "import e2ee.sfu", "never imports the server"),
    ],
)
def test_a_broken_contract_fails_the_check(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    copy = tmp_path / "e2ee"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}  # broken on purpose\n")
    result = _lint_imports(pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def test_only_the_crypto_package_imports_the_core() -> None:
    # The extension has no Python source, so the graph resolves `from e2ee import _core`
    # to the package e2ee itself; the import's own line tells which it was.
    graph = grimp.build_graph("e2ee", cache_dir=None)
    importers = set()
    for importer in graph.find_modules_that_directly_import("e2ee"):
        for detail in graph.get_import_details(importer=importer, imported="e2ee"):
            if "_core" in detail["line_contents"]:
                importers.add(importer)
    assert importers, "the crypto package should import the core"
    assert all(m.startswith("e2ee.crypto") for m in importers), importers
    # and nothing spells it another way
    for path in PACKAGE.rglob("*.py"):
        if "crypto" in path.relative_to(PACKAGE).parts:
            continue
        for number, text in enumerate(path.read_text().splitlines(), 1):
            assert not re.search(r"^\s*(from|import)\s+e2ee\._core\b", text), (path, number)


def test_only_the_srtp_facade_imports_the_srtp_extension() -> None:
    # The router's SRTP sender (e2ee._srtp) is reached through e2ee.rtc.srtp alone, and
    # that module's import of the package, which the contracts let pass, is only that.
    graph = grimp.build_graph("e2ee", cache_dir=None)
    importers = {
        importer
        for importer in graph.find_modules_that_directly_import("e2ee")
        for detail in graph.get_import_details(importer=importer, imported="e2ee")
        if "_srtp" in detail["line_contents"]
    }
    assert importers == {"e2ee.rtc.srtp"}
    details = graph.get_import_details(importer="e2ee.rtc.srtp", imported="e2ee")
    assert [d["line_contents"] for d in details] == ["from e2ee import _srtp"]


def test_private_aiortc_names_live_only_in_the_compat_module() -> None:
    offenders = []
    for top in ("python", "tests", "benches"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name in EXEMPT or COMPAT in path.parents:
                continue
            for number, text in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE_AIORTC.search(text):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {text.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_compat_module_names_them() -> None:
    # The pattern above is not vacuous: the compatibility module matches it.
    modules = sorted(COMPAT.glob("*.py"))
    assert len(modules) > 1
    assert any(PRIVATE_AIORTC.search(m.read_text()) for m in modules)
