"""Checkpointing the ledger's write-ahead log in the background, off the event loop.

SQLite copies its write-ahead log into the database file once the log reaches 1,000
pages, in whichever call commits then, and fsyncs the file. The manager commits on its
event loop (a claim, a complete), so on a busy disk every few seconds one request, and
every request queued behind it, waited for that fsync. The manager turns that off
(`Ledger.checkpoint_elsewhere`) and this thread checkpoints every second instead, on a
connection of its own: SQLite's PASSIVE checkpoint runs beside commits without blocking
them, and Python's sqlite3 lets go of the interpreter while it waits on the disk.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from bcmanager.ledger import checkpoint

log = logging.getLogger("bcmanager.checkpointer")

CHECKPOINT_EVERY_S = 1.0


class Checkpointer:
    """One thread checkpointing the ledger at `path` every `every_s` seconds."""

    def __init__(self, path: Path, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self._path = path
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bcm-checkpoint", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                checkpoint(self._path)
            except sqlite3.Error as exc:  # e.g. the disk is full: commits still work
                log.warning("could not checkpoint the ledger (%s); will try again", exc)
