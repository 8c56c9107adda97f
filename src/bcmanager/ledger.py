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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

from bcmanager.errors import Conflict, CorruptState
from bcmanager.generations import Generation
from bcmanager.states import (
    FILE_TRANSITIONS,
    JOB_TRANSITIONS,
    LIVE_JOB_STATES,
    FileState,
    JobState,
)

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model TEXT,
    options TEXT NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
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
    done_at REAL,
    gen INTEGER NOT NULL DEFAULT 0,
    UNIQUE (path, gen)
);
CREATE INDEX IF NOT EXISTS files_by_state ON files(state, gen, id);
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
    merge_plan TEXT,
    gen INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, lease_expires);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    ended REAL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS yields (
    gen INTEGER NOT NULL DEFAULT 0,
    run TEXT NOT NULL,
    barcode TEXT NOT NULL,
    totals TEXT NOT NULL,
    PRIMARY KEY (gen, run, barcode)
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
    gen: int = 0  # the generation this row tracks the file for


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
    gen: int = 0


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


_FILE_COLS = "id, path, size, state, attempts, job_id, reads, samples, reason, gen"
_JOB_COLS = (
    "id, engine, state, token, api, lease_s, lease_expires, created, updated, ended,"
    " n_files, reason, merge_plan, gen"
)


def _file_row(row: Sequence) -> FileRow:
    return FileRow(row[0], row[1], row[2], FileState(row[3]), *row[4:])


def job_row(row: Sequence, leases: dict[int, tuple[float, float]] | None = None) -> JobRow:
    """A jobs-table row (its columns in `_JOB_COLS` order) as a JobRow, with the lease
    expiry from `leases` (job -> (expires, lease_s)) when given."""
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
        self._counts: dict[int, Counter[FileState]] = {}  # per generation
        self._leases: dict[int, tuple[float, float]] = {}  # job -> (expires, lease_s)
        self._undo: list[tuple[int, tuple[float, float] | None]] = []
        with self.transaction():
            _migrate(self._db)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        self._counts = self._count_files()
        self._leases = self._load_leases()

    def checkpoint_elsewhere(self) -> None:
        """Commits no longer checkpoint the log (a background `checkpoint` does)."""
        self._db.execute("PRAGMA wal_autocheckpoint=0")

    def close(self) -> None:
        self._db.close()

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Re-entrant write transaction: the outermost one commits or rolls back."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
            self._saved_counts = {g: Counter(c) for g, c in self._counts.items()}
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

    # -- generations -----------------------------------------------------------------

    def generations(self) -> list[Generation]:
        """Every generation, the live one first, then backfill in the order added."""
        rows = self._db.execute("SELECT id, name, model, options FROM generations ORDER BY id")
        return [
            Generation.from_dict({"id": i, "name": n, "model": m, "options": json.loads(o)})
            for i, n, m, o in rows
        ]

    def add_generation(self, gen: Generation, now: float) -> Generation:
        """Add a generation after the existing ones and queue every known file for it.

        Adding one that exists with the same recipe returns it unchanged (repeated calls
        are harmless); the same name with another recipe is a Conflict."""
        for known in self.generations():
            if known.name == gen.name:
                if not known.same_recipe(gen):
                    raise Conflict(
                        f"generation {gen.name!r} exists with another recipe"
                        f" ({known.describe()}); choose another name"
                    )
                return known
        with self.transaction():
            row = self._db.execute("SELECT coalesce(max(id), -1) + 1 FROM generations").fetchone()
            gen = replace(gen, id=int(row[0]))
            self._db.execute(
                "INSERT INTO generations(id, name, model, options, added) VALUES (?, ?, ?, ?, ?)",
                (gen.id, gen.name, gen.model, json.dumps(gen.options()), now),
            )
            if gen.id > 0:
                self._queue_known_files_for(gen.id, now)
            self._event(now, "generation", None, None, "added", 1, gen.describe())
        return gen

    def _queue_known_files_for(self, gen: int, now: float) -> None:
        before = self._db.total_changes
        self._db.execute(
            "INSERT OR IGNORE INTO files(path, size, state, run, mtime, discovered_at, gen)"
            " SELECT path, size, ?, run, mtime, ?, ? FROM files WHERE gen = 0",
            (FileState.QUEUED.value, now, gen),
        )
        added = self._db.total_changes - before
        if added:
            size = self._db.execute(
                "SELECT coalesce(sum(size), 0) FROM files WHERE gen = ?", (gen,)
            ).fetchone()[0]
            self._queued_bytes += size
            self._counts_of(gen)[FileState.QUEUED] += added
            self._event(now, "files", None, None, FileState.QUEUED, added, f"generation {gen}")

    def _gen_ids(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT id FROM generations ORDER BY id")]

    # -- yields -----------------------------------------------------------------------

    def yield_totals(self) -> list[dict]:
        """Reads, bases and more per generation, run and barcode (`Yield.to_dict`, plus
        `gen`, the generation's id)."""
        rows = self._db.execute("SELECT gen, totals FROM yields ORDER BY gen, run, barcode")
        return [{**json.loads(totals), "gen": gen} for gen, totals in rows]

    def put_yield_totals(self, totals: Iterable[dict], gen: int = 0) -> None:
        """Replace the totals of the (run, barcode) pairs given; inside the caller's
        transaction, so they change exactly when the job they count is done."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO yields(gen, run, barcode, totals) VALUES (?, ?, ?, ?)",
                [(gen, t["run"], t["barcode"], json.dumps(t)) for t in totals],
            )

    # -- files ------------------------------------------------------------------------

    def _count_files(self) -> dict[int, Counter[FileState]]:
        counts: dict[int, Counter[FileState]] = {}
        self._queued_bytes = 0
        for gen, state, n, size in self._db.execute(
            "SELECT gen, state, count(*), sum(size) FROM files GROUP BY gen, state"
        ):
            counts.setdefault(gen, _zero_counts())[FileState(state)] = n
            if state == FileState.QUEUED.value:
                self._queued_bytes += size or 0
        return counts

    def _counts_of(self, gen: int) -> Counter[FileState]:
        return self._counts.setdefault(gen, _zero_counts())

    def queued_bytes(self) -> int:
        """The pod5 bytes waiting for an engine (all generations), kept in memory."""
        return self._queued_bytes

    def mean_queued_size(self) -> float:
        """The mean size of a queued file (0 with none queued)."""
        queued = self.queued_count()
        return self._queued_bytes / queued if queued else 0.0

    def queued_count(self, gens: Iterable[int] | None = None) -> int:
        """Files queued in the generations given (all by default)."""
        wanted = self._counts.keys() if gens is None else gens
        return sum(self._counts[g][FileState.QUEUED] for g in wanted if g in self._counts)

    def file_counts(self, gen: int | None = None) -> dict[FileState, int]:
        """Files per state, of one generation or summed over all; kept in memory so
        status calls cost nothing at a million files."""
        if gen is not None:
            return dict(self._counts.get(gen) or _zero_counts())
        total = _zero_counts()
        for counts in self._counts.values():
            total.update(counts)
        return dict(total)

    def counts_by_generation(self) -> dict[int, dict[FileState, int]]:
        return {gen: dict(counts) for gen, counts in sorted(self._counts.items())}

    def known_paths(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT path FROM files WHERE gen = 0")}

    def add_files(self, files: Iterable[NewFile], now: float) -> int:
        """Insert newly discovered files, queued for every generation; known paths are
        ignored. Returns how many files were new."""
        files = list(files)
        if not files:
            return 0
        gens = self._gen_ids() or [0]
        with self.transaction():
            added = 0
            for gen in gens:
                rows = [
                    (
                        f.path,
                        f.size,
                        FileState.QUEUED.value,
                        f.reads,
                        f.samples,
                        f.run or ".",
                        f.mtime,
                        now,
                        gen,
                    )
                    for f in files
                ]
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO files(path, size, state, reads, samples, run, mtime,"
                    " discovered_at, gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                new = self._db.total_changes - before
                if new == len(rows):
                    self._queued_bytes += sum(f.size for f in files)
                elif new:  # some were known already: ask the ledger what is queued now
                    self._queued_bytes = self._db.execute(
                        "SELECT coalesce(sum(size), 0) FROM files WHERE state = ?",
                        (FileState.QUEUED.value,),
                    ).fetchone()[0]
                if new:
                    self._counts_of(gen)[FileState.QUEUED] += new
                    self._event(now, "files", None, None, FileState.QUEUED, new, "discovered")
                added = added or new
            self._db.executemany(
                "INSERT OR IGNORE INTO runs(name, first_seen) VALUES (?, ?)",
                [(run, now) for run in {f.run or "." for f in files}],
            )
        return added

    def get_file(self, path: str, gen: int = 0) -> FileRow | None:
        row = self._db.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE path = ? AND gen = ?", (path, gen)
        ).fetchone()
        return _file_row(row) if row else None

    def files_by_paths(self, paths: Iterable[str], gen: int = 0) -> list[FileRow]:
        out = []
        for path in paths:
            row = self.get_file(path, gen)
            if row is not None:
                out.append(row)
        return out

    def next_generation(self, gens: Iterable[int] | None = None) -> int:
        """The generation a claim allowed `gens` would get files of: the first with files
        queued (the first allowed when none has)."""
        allowed = sorted(self._counts) if gens is None else sorted(gens)
        return next((g for g in allowed if self.queued_count([g])), allowed[0] if allowed else 0)

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
            f"SELECT {_FILE_COLS} FROM files WHERE state = ? AND gen = ? AND run = ?"
            " ORDER BY id LIMIT ?",
            (FileState.QUEUED.value, gen, first[0], limit),
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
        moved = self._gens_and_sizes_of(file_ids)
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
            for gen, (n, size) in moved.items():
                counts = self._counts_of(gen)
                counts[from_state] -= n
                counts[to_state] += n
                if FileState.QUEUED in (from_state, to_state) and from_state is not to_state:
                    self._queued_bytes += size if to_state is FileState.QUEUED else -size
            self._event(now, "files", job_id, from_state, to_state, len(file_ids), reason)

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
        """Each run with its end and its files by state (in the live generation)."""
        return run_table(lambda sql: self._db.execute(sql).fetchall())

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
        gen: int = 0,
    ) -> int:
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO jobs(id, engine, state, token, api, lease_s, lease_expires, created,"
                " updated, n_files, gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    gen,
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
        return job_row(row, self._leases) if row else None

    def jobs_in(self, states: Iterable[JobState]) -> list[JobRow]:
        values = [s.value for s in states]
        marks = ",".join("?" * len(values))
        rows = self._db.execute(
            f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ({marks}) ORDER BY id", values
        )
        return [job_row(r, self._leases) for r in rows]

    def recent_jobs(self, limit: int = 100) -> list[JobRow]:
        rows = self._db.execute(f"SELECT {_JOB_COLS} FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        return [job_row(r, self._leases) for r in rows]

    def all_jobs(self) -> Iterator[JobRow]:
        for row in self._db.execute(f"SELECT {_JOB_COLS} FROM jobs ORDER BY id"):
            yield job_row(row, self._leases)

    def job_counts(self) -> dict[JobState, int]:
        counts = {s: 0 for s in JobState}
        for state, n in self._db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = n
        return counts

    def overdue_jobs(self, now: float) -> list[JobRow]:
        overdue = sorted(j for j, (expires, _) in self._leases.items() if expires < now)
        return [job for job in map(self.get_job, overdue) if job is not None]

    def lease_expiries(self) -> dict[int, float]:
        """Each running job's lease expiry (a copy of the in-memory table)."""
        return {job_id: lease[0] for job_id, lease in self._leases.items()}

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


def checkpoint(path: Path | str) -> tuple[int, int]:
    """Copy the write-ahead log into the ledger file, on a connection of its own, without
    blocking writers (SQLite's PASSIVE checkpoint); (frames in the log, frames copied).

    With the ledger's `checkpoint_elsewhere`, this is the only checkpoint: SQLite's own
    runs in the committing call and fsyncs the file, which on a busy disk is a stall of
    whatever thread committed (the event loop, for a claim)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        _busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames), int(copied)
    finally:
        db.close()


def _zero_counts() -> Counter[FileState]:
    return Counter({s: 0 for s in FileState})


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a ledger of schema 1 (one state per file, before generations) to schema 2:
    every file row and job becomes the live generation's (id 0)."""
    files = _columns(db, "files")
    if not files or "gen" in files:
        return
    db.execute("ALTER TABLE files RENAME TO files_v1")
    db.execute("DROP INDEX IF EXISTS files_by_state")
    db.execute("DROP INDEX IF EXISTS files_by_job")
    db.execute(_SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS files") :].split(";")[0])
    cols = "id, path, size, state, attempts, job_id, reads, samples, reason, run, mtime,"
    cols += " discovered_at, done_at"
    db.execute(f"INSERT INTO files({cols}, gen) SELECT {cols}, 0 FROM files_v1")
    db.execute("DROP TABLE files_v1")
    db.execute("ALTER TABLE jobs ADD COLUMN gen INTEGER NOT NULL DEFAULT 0")
    if _columns(db, "yields"):
        db.execute("ALTER TABLE yields RENAME TO yields_v1")
        db.execute(_SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS yields") :].split(";")[0])
        db.execute("INSERT INTO yields(gen, run, barcode, totals) SELECT 0, * FROM yields_v1")
        db.execute("DROP TABLE yields_v1")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


_LIVE = ", ".join(f"'{state.value}'" for state in sorted(LIVE_JOB_STATES))
LIVE_JOBS_SQL = f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ({_LIVE}) ORDER BY id"


def run_table(query: Callable[[str], list]) -> list[dict[str, object]]:
    """Each run with its end and its live generation's files by state, from `query`
    (SQL -> rows), so that a read-only connection can ask it as well as the ledger's own."""
    out: dict[str, dict[str, object]] = {}
    for name, first_seen, ended, summary in query(
        "SELECT name, first_seen, ended, summary FROM runs ORDER BY first_seen, name"
    ):
        out[name] = {
            "run": name,
            "first_seen": first_seen,
            "ended": ended,
            "summary": summary,
            "files": {s.value: 0 for s in FileState},
        }
    for run, state, n in query(
        "SELECT run, state, count(*) FROM files WHERE gen = 0 GROUP BY run, state"
    ):
        if run in out:
            out[run]["files"][state] = n  # type: ignore[index]
    return list(out.values())
