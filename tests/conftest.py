"""Test-wide setup: WebRTC traffic stays on loopback.

aioice would offer every interface's address as an ICE candidate (and skips loopback);
tests may only talk to 127.0.0.1.  The environment variable is inherited by server
processes the tests start, which apply it on import.
"""

from __future__ import annotations

import os

from e2ee.rtc import net

os.environ[net.ENV_VAR] = "127.0.0.1"
net.apply_environment()
