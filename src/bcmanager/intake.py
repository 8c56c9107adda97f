"""Intake: the manager's feed of new pod5 files from INPUT into the ledger.

Full scans (at start, then every `rescan_s` or longer when a scan itself is slow), quick
checks of files still being written and of inotify hints, and the threads that run
them. Found files reach the ledger in chunks, a chunk per hold of the manager's lock,
and wake waiting claims. `expecting` says whether files may still come from what is
being looked at, which `Manager.work_expected` asks before it lets an engine go home.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bcmanager.backfill import LiveDemand
from bcmanager.ledger import Ledger, NewFile
from bcmanager.readlists import with_read_counts
from bcmanager.runstats import LedgerReader
from bcmanager.scanner import Discovery, ScanResult

log = logging.getLogger("bcmanager.manager")

SCAN_CHUNK = 2000
PENDING_CHECK_S = 0.25
RESCAN_COST_FACTOR = 30
# A scan whose files the ledger could not take (its disk full) is tried again this soon,
# however long a scan takes: those files are found again only by a scan.
FAILED_SCAN_RETRY_S = 5.0


def rescan_pause(rescan_s: float, last_scan_s: float) -> float:
    """Seconds until the next full rescan: the configured interval, or longer when a scan
    itself is slow (a flat folder of a million files), so rescans never take more than a
    few percent of the manager's time. inotify hints and new folders still wake it early."""
    return max(rescan_s, RESCAN_COST_FACTOR * last_scan_s)


class Intake:
    """Discovery of INPUT's pod5 files, fed into the ledger under the manager's lock."""

    def __init__(
        self,
        lock: threading.RLock,
        db: Callable[[], Ledger],
        clock: Callable[[], float],
        live: LiveDemand,
        notify: Callable[[bool], None],
        slice_above: float = 0.0,
    ) -> None:
        self._lock = lock
        self._slice_above = slice_above
        self._db = db
        self._clock = clock
        self._live = live
        self._notify = notify
        self.discovery: Discovery | None = None
        self.scan_done = threading.Event()
        self.last_scan: dict[str, float | int] = {}
        self._reader: LedgerReader | None = None
        self._looking_lock = threading.Lock()
        self._looking_now = 0
        self.scan_wake = threading.Event()
        self.pending_wake = threading.Event()

    def open(self, input_dir: Path, settle_s: float) -> None:
        self.discovery = Discovery(input_dir, self._known_in, settle_s=settle_s, clock=self._clock)

    def close(self) -> None:
        """Wake the loops (they stop on the manager's stop event) and close the reader.
        Called with the manager's lock held."""
        self.scan_wake.set()
        self.pending_wake.set()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def pending_count(self) -> int:
        """Files seen but still being written (or hinted), not yet in the ledger."""
        return self.discovery.pending_count if self.discovery is not None else 0

    def _known_in(self, folder: str) -> set[str]:
        if self._reader is None:
            self._reader = LedgerReader(self._db().path)
        return self._reader.known_names_in(folder)  # no manager lock: its own connection

    def scan(self) -> int:
        """Look for new complete pod5 files once; returns how many were added.

        Files go to the ledger in chunks as the walk finds them, so engines get work
        within a second of a large copy landing, not once the whole tree is walked."""
        assert self.discovery is not None
        started = time.monotonic()
        added, result = self._discover(self.discovery.scan)
        self.last_scan = {
            "at": self._clock(),
            "seconds": round(time.monotonic() - started, 3),
            "added": added,
            "incomplete": len(result.incomplete),
            "folders_listed": result.folders_listed,
        }
        if not self.scan_done.is_set():
            self.scan_done.set()
            self._notify(True)  # claims held until the first scan may answer empty
        return added

    def check_pending(self) -> int:
        """Look only at files still being written and at inotify hints (cheap, frequent)."""
        assert self.discovery is not None
        added, _ = self._discover(self.discovery.check_pending)
        if not added and not self.discovery.pending_count:
            self._notify(True)  # nothing settles any more: held claims may answer
        return added

    def _discover(
        self, look: Callable[[Callable[[list[NewFile]], object]], ScanResult]
    ) -> tuple[int, ScanResult]:
        """Run one look (a scan or a pending check) that hands found files over in chunks,
        queue what it found, and say how many were added."""
        early = 0

        def queue_now(files: list[NewFile]) -> None:
            nonlocal early
            early += self._queue(files)

        with self._looking():
            result = look(queue_now)
            return self._take(result) + early, result

    @contextmanager
    def _looking(self) -> Iterator[None]:
        """Files found while this is open may not be in the ledger yet: work is expected."""
        with self._looking_lock:
            self._looking_now += 1
        try:
            yield
        finally:
            with self._looking_lock:
                self._looking_now -= 1

    def expecting(self) -> bool:
        """Whether files may still come without anyone adding any: the first scan since
        start has not finished, a look is under way, or files are settling."""
        return not self.scan_done.is_set() or bool(self._looking_now) or self.pending_count > 0

    def hint(self, rel: str, closed: bool = False) -> None:
        """An inotify event named `rel` (a pod5 path relative to INPUT)."""
        assert self.discovery is not None
        self.discovery.hint(rel, closed)
        self.pending_wake.set()

    def rescan_soon(self, rel_dir: str | None = None) -> None:
        """A folder appeared or a run summary was written: scan again now."""
        assert self.discovery is not None
        if rel_dir is not None:
            self.discovery.forget(rel_dir)
        self.scan_wake.set()

    def _take(self, result: ScanResult) -> int:
        """Queue what a scan found and record runs that ended."""
        added = self._queue(result.new)
        for run, summary in result.ended_runs:
            with self._lock:
                if self._db().end_run(run, summary, self._clock()):
                    log.info("run %s ended (%s)", run, summary)
        return added

    def counted(self, files: list[NewFile]) -> list[NewFile]:
        """`files` with the read counts of those large enough to be sliced."""
        if self.discovery is None or not self._slice_above:
            return files
        return with_read_counts(self.discovery.root, files, self._slice_above)

    def _queue(self, files: list[NewFile]) -> int:
        """Add found files to the ledger, a chunk per lock hold, and wake waiting engines."""
        files = self.counted(files)  # outside the lock: a large file's read table
        added = 0
        for i in range(0, len(files), SCAN_CHUNK):
            try:
                with self._lock:
                    now = self._clock()
                    new = self._db().add_files(files[i : i + SCAN_CHUNK], now)
                    self._live.arrived(now, new)
                    added += new
            except Exception:  # e.g. the ledger's disk is full: look for them again soon
                if self.discovery is not None:
                    self.discovery.unfound(f.path for f in files[i:])
                self.scan_wake.set()
                raise
        if added:
            log.info("%d new file(s) queued", added)
            self._notify(False)
        return added

    def scan_loop(self, stop: threading.Event, rescan_s: float) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.scan()
                pause = rescan_pause(rescan_s, time.monotonic() - started)
            except Exception:
                log.exception("scan failed; will try again in %g s", FAILED_SCAN_RETRY_S)
                pause = FAILED_SCAN_RETRY_S
                time.sleep(min(pause, 1.0))  # a wake set by the failure itself: not at once
            self.scan_wake.wait(pause)
            self.scan_wake.clear()

    def pending_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.pending_wake.wait(PENDING_CHECK_S)
            self.pending_wake.clear()
            try:
                if self.pending_count:
                    self.check_pending()
            except Exception:
                log.exception("pending check failed; will try again")
