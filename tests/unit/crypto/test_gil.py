"""The core releases the GIL around slow work, so other Python threads run meanwhile.

Each test runs one long call in a worker thread and counts how often the main thread gets
to run Python code while that call is in progress.  With the GIL held for the whole call
the count stays near zero; these assert it grew, which does not depend on machine speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import e2ee
from e2ee.crypto import sframe


def _main_thread_progress_during(work: Callable[[], object]) -> int:
    # A real thread, not a task: the point is a second OS thread competing for the GIL.
    started = threading.Event()

    def run() -> None:
        started.set()
        work()

    t = threading.Thread(target=run)
    t.start()
    started.wait()
    ticks = 0
    while t.is_alive():
        ticks += 1
    t.join()
    return ticks


def test_pbkdf2_releases_the_gil() -> None:
    ticks = _main_thread_progress_during(
        lambda: e2ee.derive_secret_key("a long enough secret", "s", iterations=3_000_000)
    )
    assert ticks > 10_000


def test_large_frames_release_the_gil() -> None:
    suite = sframe.CipherSuite.AES_256_CTR_HMAC_SHA512_80
    enc = sframe.Encryptor(suite, b"k" * 32, 1)
    dec = sframe.Decryptor(suite, replay_window=0)
    dec.add_key(1, b"k" * 32)
    frame = bytes(16 << 20)

    def work() -> None:
        for _ in range(4):
            dec.decrypt(enc.encrypt(frame))

    assert _main_thread_progress_during(work) > 10_000
