"""An archive's record (what the REST API shows and the catalog keeps), its JSON
manifest, and the zip of the whole archive.

Statuses: ``started`` (recording), ``stopped`` (no longer recording, files being
finished), ``available`` (files, ``manifest.json`` and the zip are ready), ``failed``
(``reason`` says why; whatever was written is kept for download if the zip could be
made).  The manifest lists one entry per archived track: stream and connection ids, the
connection's data, the stream name, kind, file name, start offset from the archive's
start and duration (seconds).
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_NAME",
    "STATUSES",
    "ZIP_NAME",
    "ArchiveRecord",
    "new_archive_id",
    "write_manifest_and_zip",
]

STATUSES = ("started", "stopped", "available", "failed")
MANIFEST_NAME = "manifest.json"
ZIP_NAME = "archive.zip"


def new_archive_id() -> str:
    """A fresh archive id: 128 random bits, base64url (22 characters)."""
    return secrets.token_urlsafe(16)


@dataclass
class ArchiveRecord:
    id: str
    session_id: str
    name: str
    has_audio: bool
    has_video: bool
    output_mode: str
    created_at: float
    status: str = "started"
    reason: str | None = None
    stopped_at: float | None = None
    duration: float = 0.0
    size: int = 0
    expires_at: float | None = None
    streams: list[dict[str, Any]] = field(default_factory=list)
    #: Cluster mode: the node whose data directory holds the files (``None`` on a
    #: single node).
    node_id: str | None = None

    def public(self) -> dict[str, Any]:
        """The REST view (the manifest's entries under ``streams``)."""
        return asdict(self)

    def event(self) -> dict[str, Any]:
        """What clients in the session are told (``archive_started``/``archive_stopped``)."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArchiveRecord:
        return cls(**data)


def write_manifest_and_zip(directory: Path, record: ArchiveRecord) -> int:
    """Writes ``manifest.json`` and ``archive.zip`` (the manifest and every track file)
    into ``directory``; the zip's size.  Blocking: run it off the event loop."""
    manifest = {
        "archive_id": record.id,
        "session_id": record.session_id,
        "name": record.name,
        "output_mode": record.output_mode,
        "created_at": record.created_at,
        "stopped_at": record.stopped_at,
        "duration": record.duration,
        "status": record.status,
        "reason": record.reason,
        "streams": record.streams,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True)
    _atomic_write(directory / MANIFEST_NAME, text.encode())
    partial = directory / (ZIP_NAME + ".part")
    # WebM is already compressed: stored, not deflated.
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(MANIFEST_NAME, text)
        for entry in record.streams:
            path = directory / str(entry["file"])
            if entry.get("frames") and path.is_file():
                zf.write(path, entry["file"])
    os.replace(partial, directory / ZIP_NAME)
    return (directory / ZIP_NAME).stat().st_size


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
