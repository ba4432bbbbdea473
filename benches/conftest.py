"""pytest setup for the benchmarks: makes ``benches/baseline.py`` importable as ``baseline``.

``benches`` is not a package, so its directory is put on ``sys.path`` explicitly (this also
works under ``--import-mode=importlib``, which does not do it by itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHES = str(Path(__file__).resolve().parent)
if BENCHES not in sys.path:
    sys.path.insert(0, BENCHES)
