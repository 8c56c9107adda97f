"""Read-only questions to the ledger file: totals per run and state, timelines, job spans.

Used by the live status (on its own read-only SQLite connection, so the manager's lock
and its writes are never held up: WAL lets readers and the writer run side by side) and
by `bcm report` after the manager has stopped. It reads the ledger's schema
(`bcmanager.ledger`) and never writes.

The files table's `reads`/`samples` may be NULL (not counted yet): every total says how
many files it knows them for (`known_reads`, `known_samples`) so callers can fall back
to sizes and say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.errors import ConfigError
from bcmanager.states import FileState


@dataclass
class Totals:
    """Sums over a set of files."""

    files: int = 0
    bytes: int = 0
    reads: int = 0
    samples: int = 0
    known_reads: int = 0  # files whose read count is known
    known_samples: int = 0
    first_done_at: float | None = None
    last_done_at: float | None = None

    def add(self, other: Totals) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.reads += other.reads
        self.samples += other.samples
        self.known_reads += other.known_reads
        self.known_samples += other.known_samples
        if other.first_done_at is not None:
            first = self.first_done_at
            self.first_done_at = (
                other.first_done_at if first is None else min(first, other.first_done_at)
            )
        if other.last_done_at is not None:
            self.last_done_at = max(self.last_done_at or 0.0, other.last_done_at)

    @property
    def counts_known(self) -> bool:
        """Reads and samples are known for every file (so they can be trusted as totals)."""
        return self.known_reads == self.files and self.known_samples == self.files

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "reads": self.reads,
            "samples": self.samples,
            "counts_known": self.counts_known,
            "first_done_at": self.first_done_at,
            "last_done_at": self.last_done_at,
        }


@dataclass
class RunTotals:
    """One run (flow cell folder) and its files by state."""

    run: str
    by_state: dict[str, Totals] = field(default_factory=dict)
    first_seen: float | None = None
    ended: float | None = None  # when the sequencer's final summary appeared (if recorded)

    def total(self) -> Totals:
        out = Totals()
        for t in self.by_state.values():
            out.add(t)
        return out

    def remaining(self) -> int:
        return sum(self.by_state.get(s, Totals()).files for s in ("queued", "assigned"))

    @property
    def state(self) -> str:
        """basecalling | caught up (more may come) | ended, basecalling | finished."""
        busy = self.remaining() > 0
        if self.ended is not None:
            return "ended, basecalling" if busy else "finished"
        return "basecalling" if busy else "caught up"


@dataclass(frozen=True)
class JobSpan:
    id: int
    engine: str
    state: str
    created: float
    ended: float | None
    n_files: int


@dataclass(frozen=True)
class FileTimes:
    path: str
    size: int
    state: str
    attempts: int
    reads: int | None
    samples: int | None
    mtime: float | None
    discovered_at: float
    done_at: float | None
    reason: str | None


def _totals(row: tuple) -> Totals:
    """Totals from (count, sum size, sum reads, sum samples, count reads, count samples, min, max)."""
    n, size, reads, samples, known_reads, known_samples, first, last = row
    return Totals(n, size or 0, reads or 0, samples or 0, known_reads, known_samples, first, last)


def _uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(str(path)) + "?mode=ro"


class LedgerReader:
    """A read-only connection to a ledger file; safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"no ledger at {self.path}")
        try:
            self._db = sqlite3.connect(_uri(self.path), uri=True, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the ledger {self.path}: {exc}") from exc
        if not {"files", "jobs", "events"} <= tables:
            raise ConfigError(f"{self.path} is not a bcmanager ledger")
        self._has_runs = "runs" in tables
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def known_names_in(self, folder: str) -> set[str]:
        """Names of the known files directly inside `folder` (relative to INPUT, "" = top).

        Streamed into the set: a flat folder may hold a million names."""
        if folder:
            prefix = folder + "/"
            sql, args = (
                "SELECT path FROM files WHERE path >= ? AND path < ?",
                (prefix, folder + "0"),
            )
        else:
            prefix, sql, args = "", "SELECT path FROM files", ()
        cut = len(prefix)
        with self._lock:
            rows = self._db.execute(sql, args)
            return {p[cut:] for (p,) in rows if "/" not in p[cut:]}

    def size_bytes(self) -> int:
        """The ledger on disk: the database file and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def yield_totals(self) -> list[dict]:
        """Per run and barcode (`output.yields.Yield.to_dict`); empty for an older ledger."""
        try:
            rows = self._rows("SELECT totals FROM yields ORDER BY run, barcode")
        except sqlite3.OperationalError:  # a ledger of bcmanager 0.1: no yields table
            return []
        return [json.loads(r[0]) for r in rows]

    def runs(self) -> list[RunTotals]:
        """Every run with its files by state (one pass over the files table)."""
        runs: dict[str, RunTotals] = {}
        for row in self._rows(
            "SELECT coalesce(run, '.'), state, count(*), sum(size), sum(reads), sum(samples),"
            " count(reads), count(samples), min(done_at), max(done_at), min(discovered_at)"
            " FROM files GROUP BY 1, 2"
        ):
            run = runs.setdefault(row[0], RunTotals(row[0]))
            run.by_state[row[1]] = _totals(row[2:10])
            run.first_seen = row[10] if run.first_seen is None else min(run.first_seen, row[10])
        if self._has_runs:
            for name, first_seen, ended in self._rows("SELECT name, first_seen, ended FROM runs"):
                run = runs.setdefault(name, RunTotals(name))
                run.first_seen = first_seen if run.first_seen is None else run.first_seen
                run.ended = ended
        return sorted(runs.values(), key=lambda r: (r.first_seen or 0.0, r.run))

    def done_timeline(self, bucket_s: float) -> list[tuple[float, Totals]]:
        """Files basecalled per time bucket: (bucket start, totals), oldest first."""
        rows = self._rows(
            "SELECT CAST(done_at / ? AS INTEGER), count(*), sum(size), sum(reads), sum(samples),"
            " count(reads), count(samples), min(done_at), max(done_at) FROM files"
            " WHERE state = ? AND done_at IS NOT NULL GROUP BY 1 ORDER BY 1",
            (bucket_s, FileState.DONE.value),
        )
        return [(r[0] * bucket_s, _totals(r[1:])) for r in rows]

    def done_span(self) -> tuple[float, float] | None:
        """(first, last) time a file was basecalled, or None."""
        rows = self._rows(
            "SELECT min(done_at), max(done_at) FROM files WHERE state = ?",
            (FileState.DONE.value,),
        )
        first, last = rows[0]
        return None if first is None else (first, last)

    def job_counts(self) -> dict[str, int]:
        return dict(self._rows("SELECT state, count(*) FROM jobs GROUP BY state"))

    def jobs(self) -> list[JobSpan]:
        rows = self._rows("SELECT id, engine, state, created, ended, n_files FROM jobs ORDER BY id")
        return [JobSpan(*r) for r in rows]

    def engine_totals(self) -> dict[str, Totals]:
        """Basecalled files per engine (the engine of the job that merged them)."""
        out: dict[str, Totals] = {}
        for r in self._rows(
            "SELECT j.engine, count(*), sum(f.size), sum(f.reads), sum(f.samples),"
            " count(f.reads), count(f.samples), min(f.done_at), max(f.done_at)"
            " FROM files f JOIN jobs j ON f.job_id = j.id WHERE f.state = ? GROUP BY j.engine",
            (FileState.DONE.value,),
        ):
            out[r[0]] = _totals(r[1:])
        return out

    def files(self) -> list[FileTimes]:
        rows = self._rows(
            "SELECT path, size, state, attempts, reads, samples, mtime, discovered_at, done_at,"
            " reason FROM files ORDER BY id"
        )
        return [FileTimes(*r) for r in rows]

    def quarantined(self) -> list[tuple[str, str | None, int]]:
        """(path, reason, attempts) of each quarantined file."""
        return self._rows(
            "SELECT path, reason, attempts FROM files WHERE state = ? ORDER BY id",
            (FileState.QUARANTINED.value,),
        )

    def attempts(self) -> tuple[int, int]:
        """(files that needed more than one attempt, failed attempts in all)."""
        rows = self._rows(
            "SELECT count(*), coalesce(sum(attempts), 0) FROM files WHERE attempts > 0"
        )
        return rows[0][0], rows[0][1]
