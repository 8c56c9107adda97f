"""The ledger: bcmanager's durable truth, one SQLite file in WAL mode.

It records every input file (path relative to INPUT, size, state, attempts, job),
every job (engine, state, lease, fencing token, merge plan) and an append-only
event log. Running leases' deadlines are kept in memory (see `renew_lease`). Two functions change states, `set_file_state` and `set_job_state`;
each checks the transition against `bcmanager.states` and writes an event in the
same transaction. Time is always passed in (`now`), never read here.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

from bcmanager.errors import CorruptState
from bcmanager.states import FILE_TRANSITIONS, JOB_TRANSITIONS, FileState, JobState

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    job_id INTEGER,
    reads INTEGER,
    samples INTEGER,
    reason TEXT,
    run TEXT,
    mtime REAL,
    discovered_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS files_by_state ON files(state, id);
CREATE INDEX IF NOT EXISTS files_by_job ON files(job_id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    engine TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT NOT NULL,
    api TEXT NOT NULL,
    lease_s REAL NOT NULL,
    lease_expires REAL NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    ended REAL,
    n_files INTEGER NOT NULL,
    reason TEXT,
    merge_plan TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, lease_expires);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    ended REAL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS yields (
    run TEXT NOT NULL,
    barcode TEXT NOT NULL,
    totals TEXT NOT NULL,
    PRIMARY KEY (run, barcode)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    entity TEXT NOT NULL,
    job_id INTEGER,
    from_state TEXT,
    to_state TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    detail TEXT
);
"""


@dataclass(frozen=True, slots=True)
class NewFile:
    """A complete pod5 file found on disk and not yet in the ledger."""

    path: str
    size: int
    mtime: float = 0.0
    run: str | None = None
    reads: int | None = None
    samples: int | None = None


@dataclass(frozen=True, slots=True)
class FileRow:
    id: int
    path: str
    size: int
    state: FileState
    attempts: int
    job_id: int | None
    reads: int | None
    samples: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    engine: str
    state: JobState
    token: str
    api: str
    lease_s: float
    lease_expires: float
    created: float
    updated: float
    ended: float | None
    n_files: int
    reason: str | None
    merge_plan: str | None


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: float
    entity: str
    job_id: int | None
    from_state: str | None
    to_state: str | None
    count: int
    detail: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at,
            "entity": self.entity,
            "job_id": self.job_id,
            "from": self.from_state,
            "to": self.to_state,
            "count": self.count,
            "detail": self.detail,
        }


_FILE_COLS = "id, path, size, state, attempts, job_id, reads, samples, reason"
_JOB_COLS = (
    "id, engine, state, token, api, lease_s, lease_expires, created, updated, ended,"
    " n_files, reason, merge_plan"
)


def _file_row(row: Sequence) -> FileRow:
    return FileRow(row[0], row[1], row[2], FileState(row[3]), *row[4:])


def _job_row(row: Sequence, leases: dict[int, tuple[float, float]] | None = None) -> JobRow:
    job = JobRow(row[0], row[1], JobState(row[2]), *row[3:])
    lease = leases.get(job.id) if leases else None
    return job if lease is None else replace(job, lease_expires=lease[0])


class Ledger:
    """One SQLite ledger file. Not thread-safe: the manager serialises access."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = not self.path.exists()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives any process crash (kill -9); only power loss
        # can drop the last commits, which the layout-based rebuild then covers.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._depth = 0
        self._queued_bytes = 0  # sum of the queued files' sizes (see queued_bytes)
        self._counts: Counter[FileState] = Counter()
        self._leases: dict[int, tuple[float, float]] = {}  # job -> (expires, lease_s)
        self._undo: list[tuple[int, tuple[float, float] | None]] = []
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        self._counts = self._count_files()
        self._leases = self._load_leases()

    def close(self) -> None:
        self._db.close()

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Re-entrant write transaction: the outermost one commits or rolls back."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
            self._saved_counts = Counter(self._counts)
            self._saved_bytes = self._queued_bytes
            self._undo = []
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._roll_back()
            raise
        self._depth -= 1
        if self._depth == 0:
            try:
                self._db.execute("COMMIT")
            except BaseException:  # e.g. SQLITE_FULL: nothing was written, counts included
                self._roll_back()
                raise

    def _roll_back(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL, I/O errors): then ROLLBACK fails
        with suppress(sqlite3.OperationalError):
            self._db.execute("ROLLBACK")
        self._counts = self._saved_counts
        self._queued_bytes = self._saved_bytes
        for job_id, lease in reversed(self._undo):
            if lease is None:
                self._leases.pop(job_id, None)
            else:
                self._leases[job_id] = lease
        self._undo = []

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- yields -----------------------------------------------------------------------

    def yield_totals(self) -> list[dict]:
        """Reads, bases and more per run and barcode (`output.yields.Yield.to_dict`)."""
        rows = self._db.execute("SELECT totals FROM yields ORDER BY run, barcode")
        return [json.loads(r[0]) for r in rows]

    def put_yield_totals(self, totals: Iterable[dict]) -> None:
        """Replace the totals of the (run, barcode) pairs given; inside the caller's
        transaction, so they change exactly when the job they count is done."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO yields(run, barcode, totals) VALUES (?, ?, ?)",
                [(t["run"], t["barcode"], json.dumps(t)) for t in totals],
            )

    # -- files ------------------------------------------------------------------------

    def _count_files(self) -> Counter[FileState]:
        counts: Counter[FileState] = Counter({s: 0 for s in FileState})
        self._queued_bytes = 0
        for state, n, size in self._db.execute(
            "SELECT state, count(*), sum(size) FROM files GROUP BY state"
        ):
            counts[FileState(state)] = n
            if state == FileState.QUEUED.value:
                self._queued_bytes = size or 0
        return counts

    def queued_bytes(self) -> int:
        """The pod5 bytes waiting for an engine, kept in memory like the counts."""
        return self._queued_bytes

    def mean_queued_size(self) -> float:
        """The mean size of a queued file (0 with none queued)."""
        queued = self._counts[FileState.QUEUED]
        return self._queued_bytes / queued if queued else 0.0

    def file_counts(self) -> dict[FileState, int]:
        """Files per state, kept in memory so status calls cost nothing at a million files."""
        return dict(self._counts)

    def known_paths(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT path FROM files")}

    def add_files(self, files: Iterable[NewFile], now: float) -> int:
        """Insert newly discovered files as queued; already known paths are ignored."""
        files = list(files)
        rows = [
            (f.path, f.size, FileState.QUEUED.value, f.reads, f.samples, f.run or ".", f.mtime, now)
            for f in files
        ]
        if not rows:
            return 0
        with self.transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO files(path, size, state, reads, samples, run, mtime,"
                " discovered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = self._db.total_changes - before
            if added == len(rows):
                self._queued_bytes += sum(f.size for f in files)
            elif added:  # some were known already: ask the ledger what is queued now
                self._queued_bytes = self._db.execute(
                    "SELECT coalesce(sum(size), 0) FROM files WHERE state = ?",
                    (FileState.QUEUED.value,),
                ).fetchone()[0]
            self._db.executemany(
                "INSERT OR IGNORE INTO runs(name, first_seen) VALUES (?, ?)",
                [(run, now) for run in {f.run or "." for f in files}],
            )
            if added:
                self._counts[FileState.QUEUED] += added
                self._event(now, "files", None, None, FileState.QUEUED, added, "discovered")
        return added

    def get_file(self, path: str) -> FileRow | None:
        row = self._db.execute(f"SELECT {_FILE_COLS} FROM files WHERE path = ?", (path,)).fetchone()
        return _file_row(row) if row else None

    def files_by_paths(self, paths: Iterable[str]) -> list[FileRow]:
        out = []
        for path in paths:
            row = self.get_file(path)
            if row is not None:
                out.append(row)
        return out

    def queued_files(self, limit: int) -> list[FileRow]:
        """The oldest queued files first (discovery order), all of the oldest one's run:
        a batch never mixes runs (flow cells, kits, samples)."""
        first = self._db.execute(
            "SELECT run FROM files WHERE state = ? ORDER BY id LIMIT 1", (FileState.QUEUED.value,)
        ).fetchone()
        if first is None:
            return []
        rows = self._db.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE state = ? AND run = ? ORDER BY id LIMIT ?",
            (FileState.QUEUED.value, first[0], limit),
        )
        return [_file_row(r) for r in rows]

    def files_of_job(self, job_id: int) -> list[FileRow]:
        rows = self._db.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [_file_row(r) for r in rows]

    def files_in_state(self, state: FileState, limit: int = 1000) -> list[FileRow]:
        rows = self._db.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE state = ? ORDER BY id LIMIT ?",
            (state.value, limit),
        )
        return [_file_row(r) for r in rows]

    def set_attempts(self, file_id: int, attempts: int) -> None:
        """Restore a file's attempt count (rebuild from the layout); not a state change."""
        with self.transaction():
            self._db.execute("UPDATE files SET attempts = ? WHERE id = ?", (attempts, file_id))

    def set_file_reads(self, file_id: int, reads: int, samples: int | None) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE files SET reads = ?, samples = ? WHERE id = ?", (reads, samples, file_id)
            )

    def set_file_state(
        self,
        file_ids: Sequence[int],
        from_state: FileState,
        to_state: FileState,
        now: float,
        *,
        job_id: int | None = None,
        reason: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        """The one function that changes file states; writes one event for the group."""
        if to_state not in FILE_TRANSITIONS[from_state]:
            raise CorruptState(f"file transition {from_state} -> {to_state} is not allowed")
        if not file_ids:
            return
        done_at = now if to_state is FileState.DONE else None
        with self.transaction():
            cur = self._db.executemany(
                "UPDATE files SET state = ?, job_id = coalesce(?, job_id), reason = ?,"
                " attempts = attempts + ?, done_at = ? WHERE id = ? AND state = ?",
                [
                    (to_state.value, job_id, reason, int(count_attempt), done_at, fid, from_state)
                    for fid in file_ids
                ],
            )
            if cur.rowcount != len(file_ids):
                raise CorruptState(
                    f"{len(file_ids) - cur.rowcount} of {len(file_ids)} files were not"
                    f" {from_state} for the move to {to_state}"
                )
            self._counts[from_state] -= len(file_ids)
            self._counts[to_state] += len(file_ids)
            if FileState.QUEUED in (from_state, to_state) and from_state is not to_state:
                moved = self._sizes_of(file_ids)
                self._queued_bytes += moved if to_state is FileState.QUEUED else -moved
            self._event(now, "files", job_id, from_state, to_state, len(file_ids), reason)

    def _sizes_of(self, file_ids: Sequence[int]) -> int:
        total = 0
        for i in range(0, len(file_ids), 500):  # SQLite's bound on variables
            chunk = file_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            row = self._db.execute(
                f"SELECT coalesce(sum(size), 0) FROM files WHERE id IN ({marks})", chunk
            ).fetchone()
            total += row[0]
        return total

    # -- runs (flow cells) -------------------------------------------------------------

    def end_run(self, name: str, summary: str, now: float) -> bool:
        """Record a run's end (its final summary appeared); False if already recorded."""
        with self.transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO runs(name, first_seen) VALUES (?, ?)", (name, now)
            )
            cur = self._db.execute(
                "UPDATE runs SET ended = ?, summary = ? WHERE name = ? AND ended IS NULL",
                (now, summary, name),
            )
            if cur.rowcount:
                self._event(now, "run", None, None, "ended", 1, name)
        return bool(cur.rowcount)

    def runs_open(self) -> tuple[int, int]:
        """(runs known, runs not yet ended): cheap, unlike `runs()`."""
        total, open_ = self._db.execute(
            "SELECT count(*), count(*) - count(ended) FROM runs"
        ).fetchone()
        return int(total), int(open_)

    def runs(self) -> list[dict[str, object]]:
        """Each run with its end and its files by state."""
        out: dict[str, dict[str, object]] = {}
        for name, first_seen, ended, summary in self._db.execute(
            "SELECT name, first_seen, ended, summary FROM runs ORDER BY first_seen, name"
        ):
            files = {s.value: 0 for s in FileState}
            out[name] = {
                "run": name,
                "first_seen": first_seen,
                "ended": ended,
                "summary": summary,
                "files": files,
            }
        for run, state, n in self._db.execute(
            "SELECT run, state, count(*) FROM files GROUP BY run, state"
        ):
            if run in out:
                out[run]["files"][state] = n  # type: ignore[index]
        return list(out.values())

    # -- jobs -------------------------------------------------------------------------

    def create_job(
        self,
        engine: str,
        token: str,
        api: str,
        lease_s: float,
        n_files: int,
        now: float,
        job_id: int | None = None,
        state: JobState = JobState.ASSIGNED,
    ) -> int:
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO jobs(id, engine, state, token, api, lease_s, lease_expires, created,"
                " updated, n_files) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    engine,
                    state.value,
                    token,
                    api,
                    lease_s,
                    now + lease_s,
                    now,
                    now,
                    n_files,
                ),
            )
            new_id = int(cur.lastrowid or 0)
            if state is JobState.ASSIGNED:
                self._set_lease(new_id, (now + lease_s, lease_s))
            self._event(now, "job", new_id, None, state, 1, engine)
        return new_id

    def reserve_job_ids(self, above: int) -> None:
        """Make every new job id larger than `above` (ids seen on disk after a ledger loss)."""
        with self.transaction():
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO sqlite_sequence(name, seq) VALUES ('jobs', ?)", (above,)
                )
            elif row[0] < above:
                self._db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'jobs'", (above,))

    def max_job_id(self) -> int:
        row = self._db.execute("SELECT max(id) FROM jobs").fetchone()
        return int(row[0] or 0)

    def get_job(self, job_id: int) -> JobRow | None:
        row = self._db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job_row(row, self._leases) if row else None

    def jobs_in(self, states: Iterable[JobState]) -> list[JobRow]:
        values = [s.value for s in states]
        marks = ",".join("?" * len(values))
        rows = self._db.execute(
            f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ({marks}) ORDER BY id", values
        )
        return [_job_row(r, self._leases) for r in rows]

    def recent_jobs(self, limit: int = 100) -> list[JobRow]:
        rows = self._db.execute(f"SELECT {_JOB_COLS} FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        return [_job_row(r, self._leases) for r in rows]

    def all_jobs(self) -> Iterator[JobRow]:
        for row in self._db.execute(f"SELECT {_JOB_COLS} FROM jobs ORDER BY id"):
            yield _job_row(row, self._leases)

    def job_counts(self) -> dict[JobState, int]:
        counts = {s: 0 for s in JobState}
        for state, n in self._db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = n
        return counts

    def overdue_jobs(self, now: float) -> list[JobRow]:
        overdue = sorted(j for j, (expires, _) in self._leases.items() if expires < now)
        return [job for job in map(self.get_job, overdue) if job is not None]

    def renew_lease(self, job_id: int, now: float) -> float:
        """Extend an assigned job's lease from `now`; returns the new expiry.

        Lease deadlines live in memory: a restart renews every running lease anyway
        (engines could not report while the manager was down), so a heartbeat costs no
        disk write. The jobs table keeps the deadline given at assignment."""
        lease = self._leases.get(job_id)
        if lease is None:
            raise CorruptState(f"job {job_id} has no running lease to renew")
        self._set_lease(job_id, (now + lease[1], lease[1]))
        return now + lease[1]

    def _set_lease(self, job_id: int, lease: tuple[float, float] | None) -> None:
        """Change the in-memory lease table, undone with the transaction if it rolls back."""
        if self._depth:
            self._undo.append((job_id, self._leases.get(job_id)))
        if lease is None:
            self._leases.pop(job_id, None)
        else:
            self._leases[job_id] = lease

    def _load_leases(self) -> dict[int, tuple[float, float]]:
        rows = self._db.execute(
            "SELECT id, lease_expires, lease_s FROM jobs WHERE state = ?",
            (JobState.ASSIGNED.value,),
        )
        return {job_id: (expires, lease_s) for job_id, expires, lease_s in rows}

    def set_job_state(
        self,
        job_id: int,
        from_state: JobState,
        to_state: JobState,
        now: float,
        *,
        reason: str | None = None,
        merge_plan: object | None = None,
    ) -> None:
        """The one function that changes job states; writes the event in the same transaction."""
        if to_state not in JOB_TRANSITIONS[from_state]:
            raise CorruptState(f"job transition {from_state} -> {to_state} is not allowed")
        ended = None if to_state is JobState.MERGING else now
        plan = None if merge_plan is None else json.dumps(merge_plan)
        with self.transaction():
            cur = self._db.execute(
                "UPDATE jobs SET state = ?, updated = ?, ended = coalesce(?, ended),"
                " reason = coalesce(?, reason), merge_plan = coalesce(?, merge_plan)"
                " WHERE id = ? AND state = ?",
                (to_state.value, now, ended, reason, plan, job_id, from_state.value),
            )
            if cur.rowcount != 1:
                raise CorruptState(f"job {job_id} was not {from_state} for the move to {to_state}")
            if from_state is JobState.ASSIGNED:
                self._set_lease(job_id, None)
            self._event(now, "job", job_id, from_state, to_state, 1, reason)

    # -- events -----------------------------------------------------------------------

    def _event(
        self,
        now: float,
        entity: str,
        job_id: int | None,
        from_state: str | None,
        to_state: str | None,
        count: int,
        detail: str | None,
    ) -> None:
        self._db.execute(
            "INSERT INTO events(at, entity, job_id, from_state, to_state, count, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now, entity, job_id, from_state, to_state, count, detail),
        )

    def record_event(self, now: float, entity: str, detail: str, job_id: int | None = None) -> None:
        """An event that is not a state change (a scan, a restart, a merge error)."""
        with self.transaction():
            self._event(now, entity, job_id, None, None, 1, detail)

    def events(self, after_id: int = 0, limit: int = 100) -> list[Event]:
        rows = self._db.execute(
            "SELECT id, at, entity, job_id, from_state, to_state, count, detail FROM events"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [Event(*r) for r in rows]

    def last_events(self, limit: int = 20) -> list[Event]:
        rows = self._db.execute(
            "SELECT id, at, entity, job_id, from_state, to_state, count, detail FROM events"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Event(*r) for r in rows][::-1]
