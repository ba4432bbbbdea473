"""The ``e2ee`` command in a child process (``python -m e2ee``), for the tests of the CLI
and of the benchmarks it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["e2ee"]

#: WebRTC of the command (and its children) stays on loopback.
LOOPBACK_ICE = {"E2EE_ICE_ADDRESSES": "127.0.0.1"}


def e2ee(
    *args: str,
    check: bool = True,
    timeout: float = 60,
    cwd: Path | None = None,
    loopback: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Runs ``e2ee ARGS`` to its end, its output captured as text (``check``: raise on a
    non-zero exit; ``loopback``: ICE only on 127.0.0.1)."""
    env = dict(os.environ, **LOOPBACK_ICE) if loopback else None
    return subprocess.run(
        [sys.executable, "-m", "e2ee", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        cwd=cwd,
        env=env,
    )
