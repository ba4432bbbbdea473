"""The cluster package's optional dependency: without the ``redis`` package, the error
type still imports (code outside cluster mode may name it), and the names that need Redis
fail with the plain ImportError only when used."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter where ``import redis`` fails, as on an install without the extra.
    probe = "import sys\nsys.modules['redis'] = None\n" + code
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )


def test_error_type_needs_no_redis() -> None:
    done = _run(
        "from e2ee.server.cluster import ClusterUnavailable\n"
        "from e2ee.server.errors import ApiError\n"
        "e = ClusterUnavailable()\n"
        "assert isinstance(e, ApiError) and e.code == 'cluster_unavailable' and e.status == 503\n"
        "assert 'redis' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
        "print('ok')"
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_redis_names_fail_only_when_used() -> None:
    done = _run("import e2ee.server.cluster as c\nc.RedisStore")
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr or "ImportError" in done.stderr
