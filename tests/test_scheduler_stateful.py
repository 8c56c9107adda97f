"""The scheduling core under any order of calls (Hypothesis stateful testing).

A real Ledger in a temporary SQLite file and the `bcmanager.scheduler` functions,
called in any order with a clock the test moves: claim, renew, begin_merge and
finish_merge, fail, release, expire_overdue, mark_late. A call the rules forbid
(say, finishing the merge of a job that never began one) must be refused with
CorruptState or LeaseLost and change nothing. After every step the invariants hold:

- a file is never in two live jobs, and every assigned file is in exactly one;
- done is final (a done file or job never changes again; failed, released, late too);
- attempts only grow;
- the in-memory counts of `Ledger.file_counts()` equal a fresh count in SQL;
- a file is quarantined only once it has failed `max_attempts` times.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bcmanager import scheduler
from bcmanager.errors import CorruptState, InvalidInput, LeaseLost
from bcmanager.ledger import Ledger, NewFile
from bcmanager.scheduler import Policy
from bcmanager.states import FileState, JobState

POLICY = Policy(lease_s=10.0, default_batch=3, max_batch=5, max_attempts=3)
FINAL_JOB_STATES = {JobState.DONE, JobState.FAILED, JobState.RELEASED, JobState.LATE}
LIVE = (JobState.ASSIGNED, JobState.MERGING)
REFUSED = (CorruptState, LeaseLost)

Snapshot = tuple[dict[str, tuple], dict[int, tuple]]


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.ledger = Ledger(Path(self._dir.name) / "ledger.sqlite3")
        self.now = 1_000.0
        self.n_files = 0
        self.claimed: dict[int, set[int]] = {}  # job id -> file ids handed out with it
        self.attempts: dict[int, int] = {}  # file id -> highest attempts seen
        self.final_files: dict[int, tuple] = {}  # done file id -> its row, frozen
        self.final_jobs: dict[int, JobState] = {}

    def teardown(self) -> None:
        self.ledger.close()
        self._dir.cleanup()

    # -- helpers --------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        db = self.ledger._db
        files = {r[0]: tuple(r[1:]) for r in db.execute("SELECT path, * FROM files")}
        jobs = {r[0]: tuple(r) for r in db.execute("SELECT * FROM jobs")}
        return files, jobs

    def job(self, pick: int):  # type: ignore[no-untyped-def]
        ids = sorted(self.claimed)
        return self.ledger.get_job(ids[pick % len(ids)])

    def refused_unchanged(self, call) -> None:  # type: ignore[no-untyped-def]
        """`call()` must raise one of REFUSED and leave the ledger exactly as it was."""
        before = self.snapshot()
        counts = self.ledger.file_counts()
        try:
            call()
        except REFUSED:
            pass
        else:
            raise AssertionError("a forbidden call was accepted")
        assert self.snapshot() == before
        assert self.ledger.file_counts() == counts

    # -- rules ----------------------------------------------------------------------

    @rule(n=st.integers(1, 6))
    def discover(self, n: int) -> None:
        new = [NewFile(f"run/f{self.n_files + i:04d}.pod5", 100 + i) for i in range(n)]
        assert self.ledger.add_files(new, self.now) == n
        self.n_files += n

    @rule(engine=st.sampled_from(["a", "b", "c"]), requested=st.integers(-2, 7))
    def claim(self, engine: str, requested: int) -> None:
        queued = self.ledger.file_counts()[FileState.QUEUED]
        try:
            got = scheduler.claim(self.ledger, engine, requested, self.now, POLICY, "v1")
        except InvalidInput:
            assert requested > POLICY.max_batch
            return
        if got is None:
            assert queued == 0
            return
        # nothing measured: at least the default (or the size asked) when queued, more
        # from a large queue, never more than asked
        ceiling = POLICY.max_batch if requested <= 0 else requested
        assert 1 <= len(got.files) <= min(ceiling, queued)
        assert all(f.state is FileState.ASSIGNED and f.job_id == got.job.id for f in got.files)
        self.claimed[got.job.id] = {f.id for f in got.files}

    @rule(dt=st.sampled_from([0.5, 3.0, 9.0, 11.0, 25.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.claimed)
    @rule(pick=st.integers(0, 10**6))
    def renew(self, pick: int) -> None:
        job = self.job(pick)
        if job.state is JobState.ASSIGNED:
            assert scheduler.renew(self.ledger, job, self.now) == self.now + job.lease_s
        else:
            self.refused_unchanged(lambda: scheduler.renew(self.ledger, job, self.now))

    @precondition(lambda self: self.claimed)
    @rule(pick=st.integers(0, 10**6))
    def begin_merge(self, pick: int) -> None:
        job = self.job(pick)
        plan = {"job_id": job.id, "engine": job.engine, "inputs": [], "outputs": []}
        call = lambda: scheduler.begin_merge(self.ledger, job, plan, self.now)  # noqa: E731
        if job.state is JobState.ASSIGNED:
            call()
        else:
            self.refused_unchanged(call)

    @precondition(lambda self: self.claimed)
    @rule(pick=st.integers(0, 10**6))
    def finish_merge(self, pick: int) -> None:
        job = self.job(pick)
        call = lambda: scheduler.finish_merge(self.ledger, job, self.now)  # noqa: E731
        if job.state in LIVE:  # journaled in the ledger (merging) or in its manifest
            call()
            assert {f.state for f in self.ledger.files_of_job(job.id)} <= {FileState.DONE}
        else:
            self.refused_unchanged(call)

    @precondition(lambda self: self.claimed)
    @rule(pick=st.integers(0, 10**6))
    def fail(self, pick: int) -> None:
        job = self.job(pick)
        call = lambda: scheduler.fail(self.ledger, job, "boom", self.now, POLICY)  # noqa: E731
        if job.state is JobState.ASSIGNED:
            call()
        else:
            self.refused_unchanged(call)

    @precondition(lambda self: self.claimed)
    @rule(pick=st.integers(0, 10**6))
    def release(self, pick: int) -> None:
        job = self.job(pick)
        before = {f.id: f.attempts for f in self.ledger.files_of_job(job.id)}
        call = lambda: scheduler.release(self.ledger, job, self.now)  # noqa: E731
        if job.state is JobState.ASSIGNED:
            call()
            after = {f.id: f.attempts for f in self.ledger.files_of_job(job.id)}
            assert after == before  # a hand-back costs no attempt
        else:
            self.refused_unchanged(call)

    @rule()
    def expire(self) -> None:
        overdue = {j.id for j in self.ledger.overdue_jobs(self.now)}
        expired = scheduler.expire_overdue(self.ledger, self.now, POLICY)
        assert {job.id for job, _ in expired} == overdue
        for job_id in overdue:
            assert self.ledger.get_job(job_id).state is JobState.EXPIRED

    @precondition(lambda self: self.claimed)
    @rule(pick=st.integers(0, 10**6))
    def late_report(self, pick: int) -> None:
        job = self.job(pick)
        call = lambda: scheduler.mark_late(self.ledger, job, self.now)  # noqa: E731
        if job.state is JobState.EXPIRED:
            call()
        else:
            self.refused_unchanged(call)

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def a_file_is_in_at_most_one_live_job(self) -> None:
        live = self.ledger.jobs_in(LIVE)
        owner: dict[int, int] = {}
        for job in live:
            for fid in self.claimed[job.id]:
                assert fid not in owner, f"file {fid} in live jobs {owner[fid]} and {job.id}"
                owner[fid] = job.id
        for f in self.ledger.files_in_state(FileState.ASSIGNED, 10**6):
            assert owner.get(f.id) == f.job_id, f"assigned file {f.path} outside its live job"

    @invariant()
    def done_is_final(self) -> None:
        db = self.ledger._db
        for fid, row in self.final_files.items():
            assert db.execute("SELECT * FROM files WHERE id = ?", (fid,)).fetchone() == row
        for row in db.execute("SELECT * FROM files WHERE state = 'done'"):
            self.final_files.setdefault(row[0], row)
        for job in self.ledger.all_jobs():
            if job.id in self.final_jobs:
                assert job.state is self.final_jobs[job.id]
            elif job.state in FINAL_JOB_STATES:
                self.final_jobs[job.id] = job.state
            if job.state is JobState.DONE:
                assert all(f.state is FileState.DONE for f in self.ledger.files_of_job(job.id))

    @invariant()
    def attempts_only_grow(self) -> None:
        for fid, attempts in self.ledger._db.execute("SELECT id, attempts FROM files"):
            assert attempts >= self.attempts.get(fid, 0)
            self.attempts[fid] = attempts

    @invariant()
    def counts_match_a_fresh_count(self) -> None:
        fresh = {s: 0 for s in FileState}
        for state, n in self.ledger._db.execute("SELECT state, count(*) FROM files GROUP BY 1"):
            fresh[FileState(state)] = n
        assert self.ledger.file_counts() == fresh
        assert sum(fresh.values()) == self.n_files
        (queued_bytes,) = self.ledger._db.execute(
            "SELECT coalesce(sum(size), 0) FROM files WHERE state = 'queued'"
        ).fetchone()
        assert self.ledger.queued_bytes() == queued_bytes

    @invariant()
    def quarantined_only_after_max_attempts(self) -> None:
        for f in self.ledger.files_in_state(FileState.QUARANTINED, 10**6):
            assert f.attempts >= POLICY.max_attempts, f"{f.path} quarantined at {f.attempts}"
            assert f.reason and f.reason.startswith(f"failed {f.attempts} attempts")
        for f in self.ledger.files_in_state(FileState.QUEUED, 10**6):
            assert f.attempts < POLICY.max_attempts


SchedulerMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestScheduler = SchedulerMachine.TestCase
