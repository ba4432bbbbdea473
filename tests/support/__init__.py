"""Shared test helpers, imported as ``support`` (tests/ is on ``sys.path``: pytest puts the
directory of the root conftest.py there).

* :mod:`support.media`: synthetic tracks, in-process signaling between aiortc peers, and
  collectors of decoded frames.
* :mod:`support.router`: signaling through an in-process :class:`e2ee.sfu.Router` and
  recorders of the encoded frames sent and received.
* :mod:`support.server`: the real server in a child process, REST and WebSocket clients,
  and a fake media router.
* :mod:`support.cli`: the ``e2ee`` command in a child process.

The fixtures built on them live in tests/conftest.py.  This module stays light (paths
only): the server's child process imports :mod:`support.server` through it.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"  # captured VP8 / Opus frames (fixtures/make_codec_fixtures.py)
VECTORS = TESTS / "vectors"  # the published SFrame test vectors
