"""Test-wide setup: WebRTC traffic stays on loopback; benches/baseline.py is importable.

aioice would offer every interface's address as an ICE candidate (and skips loopback);
tests may only talk to 127.0.0.1.  The environment variable is inherited by server
processes the tests start, which apply it on import.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from e2ee import net

# The `cryptography` baseline in benches/ is the tests' independent reference.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))

os.environ[net.ENV_VAR] = "127.0.0.1"
net.apply_environment()
