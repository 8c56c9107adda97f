"""What the ledger keeps in memory beside its tables: files per state per generation,
the bytes queued, and running jobs' lease deadlines, with their undo when a
transaction rolls back."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable

from bcmanager.errors import CorruptState
from bcmanager.states import FileState, JobState

Lease = tuple[float, float]  # (expires, lease_s)


def zero_counts() -> Counter[FileState]:
    return Counter({s: 0 for s in FileState})


class Tally:
    """The in-memory counts and leases of one ledger.

    Counts are kept so that status calls cost nothing at a million files. Lease
    deadlines live only here: a restart renews every running lease anyway (engines
    could not report while the manager was down), so a heartbeat costs no disk write.
    The ledger calls `begin`, `commit` and `roll_back` with its outermost transaction,
    so a rolled-back transaction leaves this as it found it."""

    def __init__(self) -> None:
        self.counts: dict[int, Counter[FileState]] = {}  # per generation
        self.queued_bytes = 0  # sum of the queued files' sizes, all generations
        self.leases: dict[int, Lease] = {}  # running job -> lease
        self._saved: tuple[dict[int, Counter[FileState]], int] | None = None
        self._undo: list[tuple[int, Lease | None]] = []  # lease changes, oldest first

    def load(self, db: sqlite3.Connection) -> None:
        """Count the files and read the running leases from the tables."""
        self.counts, self.queued_bytes = {}, 0
        for gen, state, n, size in db.execute(
            "SELECT gen, state, count(*), sum(size) FROM files GROUP BY gen, state"
        ):
            self.counts.setdefault(gen, zero_counts())[FileState(state)] = n
            if state == FileState.QUEUED.value:
                self.queued_bytes += size or 0
        rows = db.execute(
            "SELECT id, lease_expires, lease_s FROM jobs WHERE state = ?",
            (JobState.ASSIGNED.value,),
        )
        self.leases = {job_id: (expires, lease_s) for job_id, expires, lease_s in rows}

    # -- transactions -----------------------------------------------------------------

    def begin(self) -> None:
        self._saved = ({g: Counter(c) for g, c in self.counts.items()}, self.queued_bytes)
        self._undo = []

    def commit(self) -> None:
        self._saved, self._undo = None, []

    def roll_back(self) -> None:
        if self._saved is not None:
            self.counts, self.queued_bytes = self._saved
        for job_id, lease in reversed(self._undo):
            if lease is None:
                self.leases.pop(job_id, None)
            else:
                self.leases[job_id] = lease
        self._saved, self._undo = None, []

    # -- files ------------------------------------------------------------------------

    def of(self, gen: int) -> Counter[FileState]:
        counts = self.counts.get(gen)  # not setdefault: a fresh Counter a call costs
        if counts is None:
            counts = self.counts[gen] = zero_counts()
        return counts

    def add_queued(self, gen: int, n: int, size: int) -> None:
        self.of(gen)[FileState.QUEUED] += n
        self.queued_bytes += size

    def move(self, gen: int, from_state: FileState, to_state: FileState, n: int, size: int) -> None:
        """`n` files of `size` bytes in all moved from one state to another."""
        counts = self.of(gen)
        counts[from_state] -= n
        counts[to_state] += n
        if FileState.QUEUED in (from_state, to_state) and from_state is not to_state:
            self.queued_bytes += size if to_state is FileState.QUEUED else -size

    def queued_count(self, gens: Iterable[int] | None = None) -> int:
        wanted = self.counts.keys() if gens is None else gens
        return sum(self.counts[g][FileState.QUEUED] for g in wanted if g in self.counts)

    def file_counts(self, gen: int | None = None) -> dict[FileState, int]:
        if gen is not None:
            return dict(self.counts.get(gen) or zero_counts())
        total = zero_counts()
        for counts in self.counts.values():
            total.update(counts)
        return dict(total)

    def next_generation(self, gens: Iterable[int] | None = None) -> int:
        allowed = sorted(self.counts) if gens is None else sorted(gens)
        return next((g for g in allowed if self.queued_count([g])), allowed[0] if allowed else 0)

    # -- leases -----------------------------------------------------------------------

    def set_lease(self, job_id: int, lease: Lease | None) -> None:
        """Set (None: clear) a job's lease, undone if the open transaction rolls back."""
        if self._saved is not None:
            self._undo.append((job_id, self.leases.get(job_id)))
        if lease is None:
            self.leases.pop(job_id, None)
        else:
            self.leases[job_id] = lease

    def renew(self, job_id: int, now: float) -> float:
        """Extend a running job's lease by its length from `now`; the new expiry."""
        lease = self.leases.get(job_id)
        if lease is None:
            raise CorruptState(f"job {job_id} has no running lease to renew")
        self.set_lease(job_id, (now + lease[1], lease[1]))
        return now + lease[1]

    def overdue(self, now: float) -> list[int]:
        """The running jobs whose lease expired before `now`, by id."""
        return sorted(j for j, (expires, _) in self.leases.items() if expires < now)
