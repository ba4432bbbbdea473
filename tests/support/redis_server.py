"""A real ``redis-server`` (the Debian package) for the cluster tests, in a child process:
the product's :class:`e2ee.tools.redis_proc.RedisProcess` (stop, ``kill -9``, restart on
the same port and directory), with the tests' default of ``appendonly=True``: every
write is in the append-only file before Redis replies, so a restart, even after
``kill -9``, keeps the data; ``restart(appendonly=False)`` is how the tests make "Redis
came back empty" happen.
"""

from __future__ import annotations

import os

from e2ee.tools.redis_proc import RedisProcess, redis_server_binary

__all__ = ["RedisServer", "redis_server_binary"]


class RedisServer(RedisProcess):
    """:class:`~e2ee.tools.redis_proc.RedisProcess`, durable unless told otherwise."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int | None = None,
        appendonly: bool = True,
        binary: str | None = None,
    ) -> None:
        super().__init__(directory, binary, port=port, appendonly=appendonly)
