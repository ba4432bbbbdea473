"""``python -m e2ee.tools.bench.router_worker publisher|subscriber CONFIG_JSON``."""

from __future__ import annotations

import sys

from e2ee.tools.bench.router_worker import main

if __name__ == "__main__":
    sys.exit(main())
