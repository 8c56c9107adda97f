"""What the ledger answers without changing anything: files, jobs, generations, runs,
yields and events from its tables, counts and leases from memory. `Ledger` (in
`store`) inherits these and adds transactions and every change."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence

from bcmanager.generations import Generation
from bcmanager.ledger.counts import Tally
from bcmanager.ledger.readers import run_table
from bcmanager.ledger.rows import (
    EVENT_COLS,
    FILE_COLS,
    JOB_COLS,
    Event,
    FileRow,
    JobRow,
    file_row,
    job_row,
)
from bcmanager.states import FileState, JobState


class LedgerQueries:
    """The read-only half of `Ledger`, on its connection and its in-memory `Tally`."""

    _db: sqlite3.Connection
    _tally: Tally
    _running_rows: dict[int, tuple]  # running jobs' rows, as read (`get_job`)

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- generations -----------------------------------------------------------------

    def generations(self) -> list[Generation]:
        """Every generation, the live one first, then backfill in the order added."""
        rows = self._db.execute("SELECT id, name, model, options FROM generations ORDER BY id")
        return [
            Generation.from_dict({"id": i, "name": n, "model": m, "options": json.loads(o)})
            for i, n, m, o in rows
        ]

    def _gen_ids(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT id FROM generations ORDER BY id")]

    # -- yields -----------------------------------------------------------------------

    def yield_totals(self) -> list[dict]:
        """Reads, bases and more per generation, run and barcode (`Yield.to_dict`, plus
        `gen`, the generation's id)."""
        rows = self._db.execute("SELECT gen, totals FROM yields ORDER BY gen, run, barcode")
        return [{**json.loads(totals), "gen": gen} for gen, totals in rows]

    # -- file counts (in memory) -------------------------------------------------------

    def queued_bytes(self) -> int:
        """The pod5 bytes waiting for an engine (all generations), kept in memory."""
        return self._tally.queued_bytes

    def mean_queued_size(self) -> float:
        """The mean size of a queued file (0 with none queued)."""
        queued = self.queued_count()
        return self._tally.queued_bytes / queued if queued else 0.0

    def queued_count(self, gens: Iterable[int] | None = None) -> int:
        """Files queued in the generations given (all by default)."""
        return self._tally.queued_count(gens)

    def file_counts(self, gen: int | None = None) -> dict[FileState, int]:
        """Files per state, of one generation or summed over all; kept in memory so
        status calls cost nothing at a million files."""
        return self._tally.file_counts(gen)

    def counts_by_generation(self) -> dict[int, dict[FileState, int]]:
        return {gen: dict(counts) for gen, counts in sorted(self._tally.counts.items())}

    def next_generation(self, gens: Iterable[int] | None = None) -> int:
        """The generation a claim allowed `gens` would get files of: the first with files
        queued (the first allowed when none has)."""
        return self._tally.next_generation(gens)

    # -- files ------------------------------------------------------------------------

    def known_paths(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT path FROM files WHERE gen = 0")}

    def get_file(self, path: str, gen: int = 0) -> FileRow | None:
        row = self._db.execute(
            f"SELECT {FILE_COLS} FROM files WHERE path = ? AND gen = ?", (path, gen)
        ).fetchone()
        return file_row(row) if row else None

    def files_by_paths(self, paths: Iterable[str], gen: int = 0) -> list[FileRow]:
        return [row for row in (self.get_file(path, gen) for path in paths) if row is not None]

    def queued_files(self, limit: int, gens: Iterable[int] | None = None) -> list[FileRow]:
        """The first generation's queued files (of those allowed) with any queued, oldest
        first (discovery order), all of the oldest one's run: a batch never mixes
        generations or runs (flow cells, kits, samples)."""
        gen = self.next_generation(gens)
        if not self.queued_count([gen]):
            return []
        first = self._db.execute(
            "SELECT run FROM files WHERE state = ? AND gen = ? ORDER BY id LIMIT 1",
            (FileState.QUEUED.value, gen),
        ).fetchone()
        if first is None:
            return []
        rows = self._db.execute(
            f"SELECT {FILE_COLS} FROM files WHERE state = ? AND gen = ? AND run = ?"
            " ORDER BY id LIMIT ?",
            (FileState.QUEUED.value, gen, first[0], limit),
        )
        return [file_row(r) for r in rows]

    def files_of_job(self, job_id: int) -> list[FileRow]:
        rows = self._db.execute(
            f"SELECT {FILE_COLS} FROM files WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [file_row(r) for r in rows]

    def files_in_state(self, state: FileState, limit: int = 1000) -> list[FileRow]:
        rows = self._db.execute(
            f"SELECT {FILE_COLS} FROM files WHERE state = ? ORDER BY id LIMIT ?",
            (state.value, limit),
        )
        return [file_row(r) for r in rows]

    def _gens_and_sizes_of(self, file_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """{generation: (files, bytes)} of the rows given."""
        out: dict[int, tuple[int, int]] = {}
        for i in range(0, len(file_ids), 500):  # SQLite's bound on variables
            chunk = file_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for gen, n, size in self._db.execute(
                f"SELECT gen, count(*), coalesce(sum(size), 0) FROM files WHERE id IN ({marks})"
                " GROUP BY gen",
                chunk,
            ):
                had = out.get(gen, (0, 0))
                out[gen] = (had[0] + n, had[1] + size)
        return out

    # -- runs (flow cells) -------------------------------------------------------------

    def runs_open(self) -> tuple[int, int]:
        """(runs known, runs not yet ended): cheap, unlike `runs()`."""
        total, open_ = self._db.execute(
            "SELECT count(*), count(*) - count(ended) FROM runs"
        ).fetchone()
        return int(total), int(open_)

    def runs(self) -> list[dict[str, object]]:
        """Each run with its end and its files by state (in the live generation)."""
        return run_table(lambda sql: self._db.execute(sql).fetchall())

    # -- jobs -------------------------------------------------------------------------

    def max_job_id(self) -> int:
        row = self._db.execute("SELECT max(id) FROM jobs").fetchone()
        return int(row[0] or 0)

    def get_job(self, job_id: int) -> JobRow | None:
        """The job, or None. A running job's row is read once and kept until its state
        changes (`set_job_state`, the only change to a job's row; a rollback drops them
        all): its heartbeats and its report each read it (two reads a batch of an
        original engine, issue 23)."""
        row = self._running_rows.get(job_id)
        if row is None:
            row = self._db.execute(
                f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                return None
            if row[2] == JobState.ASSIGNED.value:
                self._running_rows[job_id] = row
        return job_row(row, self._tally.leases)

    def jobs_in(self, states: Iterable[JobState]) -> list[JobRow]:
        values = [s.value for s in states]
        marks = ",".join("?" * len(values))
        rows = self._db.execute(
            f"SELECT {JOB_COLS} FROM jobs WHERE state IN ({marks}) ORDER BY id", values
        )
        return [job_row(r, self._tally.leases) for r in rows]

    def all_jobs(self) -> Iterator[JobRow]:
        for row in self._db.execute(f"SELECT {JOB_COLS} FROM jobs ORDER BY id"):
            yield job_row(row, self._tally.leases)

    def job_counts(self) -> dict[JobState, int]:
        counts = {s: 0 for s in JobState}
        for state, n in self._db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = n
        return counts

    def overdue_jobs(self, now: float) -> list[JobRow]:
        overdue = self._tally.overdue(now)
        return [job for job in map(self.get_job, overdue) if job is not None]

    def lease_expiries(self) -> dict[int, float]:
        """Each running job's lease expiry (a copy of the in-memory table)."""
        return {job_id: lease[0] for job_id, lease in self._tally.leases.items()}

    # -- events -----------------------------------------------------------------------

    def events(self, after_id: int = 0, limit: int = 100) -> list[Event]:
        rows = self._db.execute(
            f"SELECT {EVENT_COLS} FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [Event(*r) for r in rows]

    def last_events(self, limit: int = 20) -> list[Event]:
        rows = self._db.execute(
            f"SELECT {EVENT_COLS} FROM events ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [Event(*r) for r in rows][::-1]
