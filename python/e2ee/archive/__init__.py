"""Archiving of routed sessions without E2EE: the router's encoded frames remuxed into
WebM, one file per archived track, without decoding or re-encoding.

Between the server and the router (import-linter ``layers``): it takes frames from the
router's :class:`e2ee.sfu.ingress.Forwarder` as one more subscriber
(:class:`~e2ee.archive.recorder.TrackRecorder`), strips the RTP payload framing
(:mod:`e2ee.archive.depacketize`), and writes the frames on a worker thread per track
(:mod:`e2ee.archive.webm`, PyAV's muxer only).  :mod:`e2ee.archive.live` is one archive in
progress, :mod:`e2ee.archive.manifest` its record, manifest and zip,
:mod:`e2ee.archive.catalog` where records are kept (SQLite in the data directory, behind
the :class:`~e2ee.archive.catalog.ArchiveCatalog` protocol), :mod:`e2ee.archive.retention`
the sweep that deletes expired archives.  Never imports key handling: an E2EE session is
refused before anything here runs, and its frames could not be read anyway.

The recorder and the writer import :mod:`e2ee.sfu` and PyAV; import them only once a
session has a media router (:mod:`e2ee.archive.live` does it lazily).
"""

from __future__ import annotations

from e2ee.archive.catalog import ArchiveCatalog, SQLiteArchiveCatalog
from e2ee.archive.config import ArchiveConfig
from e2ee.archive.manifest import ArchiveRecord, new_archive_id

__all__ = [
    "ArchiveCatalog",
    "ArchiveConfig",
    "ArchiveRecord",
    "SQLiteArchiveCatalog",
    "new_archive_id",
]
