"""The archive settings: how long an archive may run, how long it is kept, how often the
retention sweep runs, and how many frames a track's writer may fall behind."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ArchiveConfig"]

#: Environment variables read by :meth:`ArchiveConfig.from_env` (``e2ee serve``).
ENV_MAX_DURATION = "E2EE_ARCHIVE_MAX_DURATION"
ENV_RETENTION = "E2EE_ARCHIVE_RETENTION"
ENV_SWEEP_INTERVAL = "E2EE_ARCHIVE_SWEEP_INTERVAL"


@dataclass(frozen=True)
class ArchiveConfig:
    """``max_duration``: seconds after which an archive stops by itself
    (``max_duration``).  ``retention``: seconds an archive is kept after it stopped
    (default 72 h), then the sweep deletes it.  ``sweep_interval``: seconds between two
    sweeps.  ``queue_frames``: frames a track may have waiting for its writer thread;
    beyond it frames are dropped (counted and logged), never buffered without bound."""

    max_duration: float = 4 * 3600.0
    retention: float = 72 * 3600.0
    sweep_interval: float = 300.0
    queue_frames: int = 256

    def __post_init__(self) -> None:
        if self.max_duration <= 0 or self.retention <= 0 or self.sweep_interval <= 0:
            raise ValueError("archive durations must be positive")
        if self.queue_frames < 1:
            raise ValueError("queue_frames must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ArchiveConfig:
        """The defaults, overridden by ``E2EE_ARCHIVE_MAX_DURATION``,
        ``E2EE_ARCHIVE_RETENTION`` and ``E2EE_ARCHIVE_SWEEP_INTERVAL`` (seconds)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, field_name in (
            (ENV_MAX_DURATION, "max_duration"),
            (ENV_RETENTION, "retention"),
            (ENV_SWEEP_INTERVAL, "sweep_interval"),
        ):
            raw = env.get(name)
            if raw:
                try:
                    values[field_name] = float(raw)
                except ValueError:
                    raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
        return cls(**values)
