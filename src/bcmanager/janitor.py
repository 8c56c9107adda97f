"""Removing finished job folders in the background, off the event loop and the lock.

A job's `INPUT/ASSIGNED_<job>_<engine>/` of symlinks is no longer needed once the job is
merged, expired or handed back, but removing it costs a system call per file and one for
the folder (milliseconds on a network or overlay filesystem), and the merge that frees it
runs on the event loop under the manager's lock. Nothing waits for the removal: a crash
before it leaves a folder that start-up recovery drops (`Recovery.reconcile`), and job ids
are never reused, so a folder on its way out is never mistaken for a new job's.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("bcmanager.janitor")


class Janitor:
    """One thread removing folders handed to `remove`, in order."""

    def __init__(self, remove_now: Callable[[Path], None]) -> None:
        self._remove_now = remove_now
        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="bcm-janitor", daemon=True)
        self._thread.start()

    def remove(self, path: Path) -> None:
        """Remove `path` soon (from any thread); returns at once."""
        self._queue.put(path)

    def close(self, timeout: float = 10.0) -> None:
        """Remove what is still queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (path := self._queue.get()) is not None:
            try:
                self._remove_now(path)
            except Exception:  # a folder left behind is dropped at the next start
                log.exception("could not remove %s; it is dropped at the next start", path)
