"""The `Ledger`: one SQLite file, its transactions, and every change to it, each with
its event in the same transaction. Its queries are `queries.LedgerQueries`."""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

from bcmanager.errors import Conflict, CorruptState
from bcmanager.generations import Generation
from bcmanager.ledger.counts import Tally
from bcmanager.ledger.queries import LedgerQueries
from bcmanager.ledger.rows import NewFile
from bcmanager.ledger.schema import UNSETTLED, connect, create_or_migrate
from bcmanager.ledger.slices import SliceLedger
from bcmanager.states import FILE_TRANSITIONS, JOB_TRANSITIONS, FileState, JobState


class Ledger(LedgerQueries, SliceLedger):
    """One SQLite ledger file. Not thread-safe: the manager serialises access."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(self.path)
        self._depth = 0
        self._tally = Tally()
        self._read_sizes = OrderedDict()
        self._running_rows = {}
        with self.transaction():
            create_or_migrate(self._db)
        self._tally.load(self._db)

    @property
    def unsettled(self) -> bool:
        """New, or its first start did not get through a rebuild from OUTPUT (`settle`)."""
        return self.get_meta(UNSETTLED) is not None

    def settle(self) -> None:
        """A start has rebuilt it from OUTPUT, or found nothing to rebuild from."""
        with self.transaction():
            self._db.execute("DELETE FROM meta WHERE key = ?", (UNSETTLED,))

    def checkpoint_elsewhere(self) -> None:
        """Commits no longer checkpoint the log (a background `checkpoint` does)."""
        self._db.execute("PRAGMA wal_autocheckpoint=0")

    def close(self) -> None:
        self._db.close()

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Re-entrant write transaction: the outermost one commits or rolls back, the
        in-memory counts and leases with it."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
            self._tally.begin()
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
            self._tally.commit()

    def _roll_back(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL, I/O errors): then ROLLBACK fails
        with suppress(sqlite3.OperationalError):
            self._db.execute("ROLLBACK")
        self._tally.roll_back()
        self._running_rows.clear()  # a job created in the transaction may be among them

    # -- meta -------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- generations -----------------------------------------------------------------

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
            "INSERT OR IGNORE INTO files(path, size, state, run, mtime, discovered_at, gen, reads,"
            " samples) SELECT path, size, ?, run, mtime, ?, ?, reads, samples FROM files"
            " WHERE gen = 0",
            (FileState.QUEUED.value, now, gen),
        )
        added = self._db.total_changes - before
        if added:
            size = self._db.execute(
                "SELECT coalesce(sum(size), 0) FROM files WHERE gen = ?", (gen,)
            ).fetchone()[0]
            self._tally.add_queued(gen, added, size)
            self._event(now, "files", None, None, FileState.QUEUED, added, f"generation {gen}")

    # -- yields -----------------------------------------------------------------------

    def put_yield_totals(self, totals: Iterable[dict], gen: int = 0) -> None:
        """Replace the totals of the (run, barcode) pairs given; inside the caller's
        transaction, so they change exactly when the job they count is done."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO yields(gen, run, barcode, totals) VALUES (?, ?, ?, ?)",
                [(gen, t["run"], t["barcode"], json.dumps(t)) for t in totals],
            )

    # -- files ------------------------------------------------------------------------

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
                if new:
                    self._tally.add_queued(gen, new, sum(f.size for f in files))
                if 0 < new < len(rows):  # some were known already: ask what is queued now
                    self._tally.queued_bytes = self._db.execute(
                        "SELECT coalesce(sum(size), 0) FROM files WHERE state = ?",
                        (FileState.QUEUED.value,),
                    ).fetchone()[0]
                if new:
                    self._event(now, "files", None, None, FileState.QUEUED, new, "discovered")
                added = added or new
            self._db.executemany(
                "INSERT OR IGNORE INTO runs(name, first_seen) VALUES (?, ?)",
                [(run, now) for run in {f.run or "." for f in files}],
            )
            self._db.executemany(  # a large file's reads' sizes, to cut its slices by
                "INSERT OR REPLACE INTO read_sizes(path, samples) VALUES (?, ?)",
                [(f.path, f.read_samples) for f in files if f.read_samples],
            )
        return added

    def set_attempts(self, file_id: int, attempts: int) -> None:
        """Restore a file's attempt count (rebuild from the layout); not a state change."""
        with self.transaction():
            self._db.execute("UPDATE files SET attempts = ? WHERE id = ?", (attempts, file_id))

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
                self._tally.move(gen, from_state, to_state, n, size)
            self._event(now, "files", job_id, from_state, to_state, len(file_ids), reason)

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
        """A new job (id `job_id`, or the next free one) and its event; an assigned one
        holds a lease of `lease_s` from `now`. Returns its id."""
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
                self._tally.set_lease(new_id, (now + lease_s, lease_s))
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

    def renew_lease(self, job_id: int, now: float) -> float:
        """Extend an assigned job's lease from `now`; returns the new expiry.

        Lease deadlines live in memory (see `counts.Tally`): a heartbeat costs no disk
        write. The jobs table keeps the deadline given at assignment."""
        return self._tally.renew(job_id, now)

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
        self._running_rows.pop(job_id, None)
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
                self._tally.set_lease(job_id, None)
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
