"""Read-only questions to the ledger file: totals per run and state, timelines, job spans.

Used by the live status (on its own read-only SQLite connection, so the manager's lock
and its writes are never held up: WAL lets readers and the writer run side by side) and
by `bcm report` after the manager has stopped. It reads the ledger's schema
(`bcmanager.ledger`) and never writes.

The files table's `reads`/`samples` may be NULL (not counted yet): every total says how
many files it knows them for (`known_reads`, `known_samples`) so callers can fall back
to sizes and say so.

The files table holds one row per file and model generation (`bcmanager.generations`):
every question about files takes the generation it is about, `gen`, an id (0 is the
live generation) or `ALL`, which counts each file once per generation. Nothing sums
generations unless asked to. A ledger from before generations reads as one, id 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.errors import ConfigError
from bcmanager.generations import Generation, implicit
from bcmanager.ledger import LIVE_JOBS_SQL, run_table
from bcmanager.states import FileState

ALL = None  # `gen=ALL`: every generation, each file counted once per generation


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
    gen: int = 0


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
    gen: int = 0


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
            file_cols = {r[1] for r in self._db.execute("PRAGMA table_info(files)")}
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot read the ledger {self.path}: {exc}") from exc
        if not {"files", "jobs", "events"} <= tables:
            raise ConfigError(f"{self.path} is not a bcmanager ledger")
        self._has_runs = "runs" in tables
        self._has_generations = "generations" in tables
        self._has_gen = "gen" in file_cols  # schema 2; before it every row is generation 0
        self._has_slices = "slices" in tables  # large files handed out in slices
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def live_job_rows(self) -> list[tuple]:
        """Jobs assigned or merging, as the ledger file has them (leases as at assignment):
        rows that `ledger.job_row` reads, the id first."""
        return self._rows(LIVE_JOBS_SQL)

    def run_table(self) -> list[dict[str, object]]:
        """`Ledger.runs`, asked on this connection."""
        return run_table(self._rows)

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _gen(self, alias: str = "") -> str:
        """The generation column of files or jobs (`alias` like "f."), 0 before schema 2."""
        return f"{alias}gen" if self._has_gen else "0"

    def _of(self, gen: int | None, alias: str = "") -> tuple[str, tuple]:
        """A WHERE condition (and its arguments) for generation `gen` (ALL: every one)."""
        if gen is ALL:
            return "1", ()
        return f"{self._gen(alias)} = ?", (gen,)

    # -- generations ----------------------------------------------------------------------

    def generations(self) -> list[Generation]:
        """Every generation, the live one (id 0) first; an OUTPUT that was never given
        any has the implicit one."""
        if not self._has_generations:
            return [implicit()]
        rows = self._rows("SELECT id, name, model, options FROM generations ORDER BY id")
        gens = [
            Generation.from_dict(
                {"id": i, "name": name, "model": model, "options": json.loads(options or "{}")}
            )
            for i, name, model, options in rows
        ]
        return gens or [implicit()]

    def known_names_in(self, folder: str) -> set[str]:
        """Names of the known files directly inside `folder` (relative to INPUT, "" = top).

        Every file is in the live generation (0), so only its rows are read. Streamed into
        the set: a flat folder may hold a million names."""
        live = f" AND {self._gen()} = 0"
        if folder:
            prefix = folder + "/"
            sql, args = (
                f"SELECT path FROM files WHERE path >= ? AND path < ?{live}",
                (prefix, folder + "0"),
            )
        else:
            prefix, sql, args = "", f"SELECT path FROM files WHERE 1{live}", ()
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
        """Per generation, run and barcode (`output.yields.Yield.to_dict` plus `gen`, the
        generation's id); empty for an older ledger."""
        gen = "gen" if self._has_gen else "0"
        try:
            rows = self._rows(f"SELECT {gen}, totals FROM yields ORDER BY 1, run, barcode")
        except sqlite3.OperationalError:  # a ledger of bcmanager 0.1: no yields table
            return []
        return [{**json.loads(totals), "gen": g} for g, totals in rows]

    # -- totals ---------------------------------------------------------------------------

    def runs(self, gen: int | None) -> list[RunTotals]:
        """Every run with the files of generation `gen` by state (ALL: summed over the
        generations, each file counted once per generation)."""
        if gen is not ALL:
            return self._runs_where(gen).get(gen, [])
        merged: dict[str, RunTotals] = {}
        for runs in self._runs_where(ALL).values():
            for run in runs:
                into = merged.setdefault(run.run, RunTotals(run.run, {}, run.first_seen, run.ended))
                for state, totals in run.by_state.items():
                    into.by_state.setdefault(state, Totals()).add(totals)
                if run.first_seen is not None:
                    into.first_seen = min(into.first_seen or run.first_seen, run.first_seen)
        return _in_order(merged.values())

    def runs_by_generation(self) -> dict[int, list[RunTotals]]:
        """`runs(gen)` of every generation that has files, in one pass over the files."""
        return self._runs_where(ALL)

    def _runs_where(self, gen: int | None) -> dict[int, list[RunTotals]]:
        where, args = self._of(gen)
        by_gen: dict[int, dict[str, RunTotals]] = {}
        for row in self._rows(
            f"SELECT {self._gen()}, coalesce(run, '.'), state, count(*), sum(size), sum(reads),"
            " sum(samples), count(reads), count(samples), min(done_at), max(done_at),"
            f" min(discovered_at) FROM files WHERE {where} GROUP BY 1, 2, 3",
            args,
        ):
            run = by_gen.setdefault(row[0], {}).setdefault(row[1], RunTotals(row[1]))
            run.by_state[row[2]] = _totals(row[3:11])
            run.first_seen = row[11] if run.first_seen is None else min(run.first_seen, row[11])
        if self._has_runs:
            self._add_run_ends(by_gen, 0 if gen is ALL else gen)
        return {g: _in_order(runs.values()) for g, runs in sorted(by_gen.items())}

    def _add_run_ends(self, by_gen: dict[int, dict[str, RunTotals]], home: int) -> None:
        """When each run began and ended (the runs table); a run that has no files yet
        (its final summary came first) is listed under generation `home`."""
        for name, first_seen, ended in self._rows("SELECT name, first_seen, ended FROM runs"):
            holders = [runs[name] for runs in by_gen.values() if name in runs]
            if not holders and (home == 0 or home in by_gen):
                holders = [by_gen.setdefault(home, {}).setdefault(name, RunTotals(name))]
            for run in holders:
                run.first_seen = first_seen if run.first_seen is None else run.first_seen
                run.ended = ended

    def done_timeline(self, bucket_s: float, gen: int | None) -> list[tuple[float, Totals]]:
        """Files of generation `gen` (or ALL) basecalled per time bucket: (bucket start,
        totals), oldest first."""
        where, args = self._of(gen)
        rows = self._rows(
            "SELECT CAST(done_at / ? AS INTEGER), count(*), sum(size), sum(reads), sum(samples),"
            " count(reads), count(samples), min(done_at), max(done_at) FROM files"
            f" WHERE state = ? AND done_at IS NOT NULL AND {where} GROUP BY 1 ORDER BY 1",
            (bucket_s, FileState.DONE.value, *args),
        )
        return [(r[0] * bucket_s, _totals(r[1:])) for r in rows]

    def done_timelines(self, bucket_s: float) -> dict[int, list[tuple[float, Totals]]]:
        """`done_timeline` of every generation that has basecalled files, in one pass."""
        out: dict[int, list[tuple[float, Totals]]] = {}
        for r in self._rows(
            f"SELECT {self._gen()}, CAST(done_at / ? AS INTEGER), count(*), sum(size), sum(reads),"
            " sum(samples), count(reads), count(samples), min(done_at), max(done_at) FROM files"
            " WHERE state = ? AND done_at IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
            (bucket_s, FileState.DONE.value),
        ):
            out.setdefault(r[0], []).append((r[1] * bucket_s, _totals(r[2:])))
        return out

    def recent_done(self, since: float) -> dict[int, Totals]:
        """Files basecalled at or after `since`, per generation."""
        return {
            r[0]: _totals(r[1:])
            for r in self._rows(
                f"SELECT {self._gen()}, count(*), sum(size), sum(reads), sum(samples),"
                " count(reads), count(samples), min(done_at), max(done_at) FROM files"
                " WHERE state = ? AND done_at >= ? GROUP BY 1",
                (FileState.DONE.value, since),
            )
        }

    def work_started(self) -> dict[int, float]:
        """When the first batch of each generation was handed out (jobs of any outcome)."""
        return dict(self._rows(f"SELECT {self._gen()}, min(created) FROM jobs GROUP BY 1"))

    def done_span(self, gen: int | None) -> tuple[float, float] | None:
        """(first, last) time a file of generation `gen` (or ALL) was basecalled, or None."""
        where, args = self._of(gen)
        rows = self._rows(
            f"SELECT min(done_at), max(done_at) FROM files WHERE state = ? AND {where}",
            (FileState.DONE.value, *args),
        )
        first, last = rows[0]
        return None if first is None else (first, last)

    def slice_totals(self, gen: int | None) -> tuple[int, int, int]:
        """(files that went out in slices, their slices, those files not done yet)."""
        if not self._has_slices:
            return 0, 0, 0
        where, args = self._of(gen, "f.")
        (files, pieces, going), *_ = self._rows(
            "SELECT count(DISTINCT f.id), count(*),"
            " count(DISTINCT CASE WHEN f.state = 'assigned' THEN f.id END)"
            f" FROM slices s JOIN files f ON f.id = s.file_id WHERE {where}",
            args,
        )
        return int(files), int(pieces), int(going)

    def job_counts(self, gen: int | None) -> dict[str, int]:
        where, args = self._of(gen)
        return dict(
            self._rows(f"SELECT state, count(*) FROM jobs WHERE {where} GROUP BY state", args)
        )

    def jobs(self, gen: int | None) -> list[JobSpan]:
        where, args = self._of(gen)
        rows = self._rows(
            f"SELECT id, engine, state, created, ended, n_files, {self._gen()} FROM jobs"
            f" WHERE {where} ORDER BY id",
            args,
        )
        return [JobSpan(*r) for r in rows]

    def engine_totals(self, gen: int | None) -> dict[str, Totals]:
        """Basecalled files of generation `gen` (or ALL) per engine (the engine of the job
        that merged them)."""
        where, args = self._of(gen, "f.")
        out: dict[str, Totals] = {}
        for r in self._rows(
            "SELECT j.engine, count(*), sum(f.size), sum(f.reads), sum(f.samples),"
            " count(f.reads), count(f.samples), min(f.done_at), max(f.done_at)"
            f" FROM files f JOIN jobs j ON f.job_id = j.id WHERE f.state = ? AND {where}"
            " GROUP BY j.engine",
            (FileState.DONE.value, *args),
        ):
            out[r[0]] = _totals(r[1:])
        return out

    def files(self, gen: int | None) -> list[FileTimes]:
        where, args = self._of(gen)
        rows = self._rows(
            "SELECT path, size, state, attempts, reads, samples, mtime, discovered_at, done_at,"
            f" reason, {self._gen()} FROM files WHERE {where} ORDER BY id",
            args,
        )
        return [FileTimes(*r) for r in rows]

    def quarantined(self, gen: int | None) -> list[tuple[str, str | None, int]]:
        """(path, reason, attempts) of each quarantined file of generation `gen` (or ALL)."""
        where, args = self._of(gen)
        return self._rows(
            f"SELECT path, reason, attempts FROM files WHERE state = ? AND {where} ORDER BY id",
            (FileState.QUARANTINED.value, *args),
        )

    def attempts(self, gen: int | None) -> tuple[int, int]:
        """(files of generation `gen` (or ALL) that needed more than one attempt, failed
        attempts in all)."""
        where, args = self._of(gen)
        rows = self._rows(
            "SELECT count(*), coalesce(sum(attempts), 0) FROM files"
            f" WHERE attempts > 0 AND {where}",
            args,
        )
        return rows[0][0], rows[0][1]


def _in_order(runs: Iterable[RunTotals]) -> list[RunTotals]:
    return sorted(runs, key=lambda r: (r.first_seen or 0.0, r.run))
