"""Benchmarks that run WebRTC between processes re-run themselves in a network namespace
whose only interface is loopback (``unshare --net``, then ``ip link set lo up``), so that
no packet can leave the machine even when a stack picks another address.  Used by
``e2ee bench soak`` and ``e2ee bench cluster``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["only_loopback", "rerun_in_netns"]


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but ``lo``
    (/proc/net/dev is per namespace; /sys/class/net is not)."""
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return {line.split(":", 1)[0].strip() for line in lines} <= {"lo"}


def rerun_in_netns(module: str, argv: list[str], *, marker: str, label: str) -> int | None:
    """Runs ``python -m module argv`` again in a new network namespace with only
    loopback and returns its exit code; ``None`` where that is not possible (not root,
    no ``unshare``) or not needed (already inside one: the ``marker`` environment variable
    is set, or there is only loopback)."""
    if os.environ.get(marker) or only_loopback():
        return None
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        return None
    print(f"[{label}] re-running in a network namespace with only loopback", file=sys.stderr)
    inner = [sys.executable, "-m", module, *argv]
    script = 'ip link set lo up && exec "$@"'
    env = dict(os.environ, **{marker: "1"})
    return subprocess.call(["unshare", "--net", "--", "bash", "-c", script, label, *inner], env=env)
