"""Scheduling rules over the ledger: claim, lease, expire, retry, quarantine.

Pure code: no filesystem, no HTTP, no clock. Every function takes `now` and a
ledger, and performs its changes in one ledger transaction.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from bcmanager.errors import InvalidInput, LeaseLost, NotFound
from bcmanager.ledger import FileRow, JobRow, Ledger
from bcmanager.states import FileState, JobState


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of scheduling."""

    lease_s: float = 90.0
    default_batch: int = 10
    max_batch: int = 10_000
    max_attempts: int = 3
    target_batch_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Assignment:
    job: JobRow
    files: list[FileRow]


def new_token() -> str:
    """A job's fencing token: only the engine holding it may report on the job (v1 API)."""
    return secrets.token_hex(16)


def batch_size(requested: int | None, policy: Policy) -> int:
    """`None` or `<= 0` means the default (as the original protocol says); above max is refused."""
    if requested is None or requested <= 0:
        return policy.default_batch
    if requested > policy.max_batch:
        raise InvalidInput(f"batch size {requested} is over the maximum of {policy.max_batch}")
    return requested


# A basecaller's start-up takes at most this part of a steady batch. The bound is
# 3 %; a busy share of 97 % needs it well under that, since gaps and the tail come on top.
STARTUP_SHARE = 0.01


@dataclass(frozen=True, slots=True)
class Speed:
    """What the manager has measured of one engine: its basecaller's start-up (loading the
    model, benchmarking the GPU) and its rate once running, in pod5 bytes per second.

    Bytes stand for samples: a pod5 is almost all compressed signal, so its size grows
    with its samples, and the ledger knows every file's size without opening it."""

    startup_s: float = 0.0
    bytes_per_s: float | None = None
    busy_s: float = 0.0  # how much longer the batch it holds is predicted to take

    def batch_s(self, size_bytes: float) -> float:
        """Predicted time of a batch: start-up plus bytes over rate."""
        return self.startup_s + size_bytes / (self.bytes_per_s or math.inf)


@dataclass(frozen=True, slots=True)
class BatchLimit:
    files: int
    bytes: float | None = None  # None: no byte budget (a speed not yet measured)


def steady_bytes(speed: Speed, policy: Policy) -> float:
    """A batch long enough that start-up is at most STARTUP_SHARE of it, and never shorter
    than `target_batch_s` of basecalling."""
    basecall_s = max(policy.target_batch_s, speed.startup_s * (1 - STARTUP_SHARE) / STARTUP_SHARE)
    return (speed.bytes_per_s or 0.0) * basecall_s


@dataclass(frozen=True, slots=True)
class Fleet:
    """The active engines' speeds as the tail rule needs them, summed once: each engine's
    (time until it could start another batch: what it still holds plus a start-up, rate),
    sorted by that time, with their sums. Built at most every second by the manager, not
    per claim: at 5,000 engines a per-claim pass over the fleet is the manager's limit."""

    size: int = 0  # engines, speed known or not
    rates: tuple[tuple[float, float], ...] = ()
    total_rate: float = 0.0
    weighted: float = 0.0  # sum of rate x time

    @classmethod
    def of(cls, speeds: list[Speed]) -> Fleet:
        """Engines whose speed is not known yet count with the fleet's mean rate."""
        known = [e.bytes_per_s for e in speeds if e.bytes_per_s]
        if not known:
            return cls(len(speeds))
        mean = sum(known) / len(known)
        rates = sorted((e.busy_s + e.startup_s, e.bytes_per_s or mean) for e in speeds)
        total, weighted = sum(r for _, r in rates), sum(r * t for t, r in rates)
        return cls(len(speeds), tuple(rates), total, weighted)

    def __len__(self) -> int:
        return self.size


def tail_bytes(speed: Speed, fleet: Fleet, queued_bytes: float) -> float:
    """This engine's part of what is left, so that every engine's predicted finish is the
    same: engine i gets r_i (F - b_i - s_i), where F = (R + sum r_j (b_j + s_j)) / sum r_j
    for what is left R, rates r, start-ups s and the time b each still needs for the batch
    it holds. A slow GPU gets less; none ends a large batch alone. Engines still busy past
    the common finish take no part (dropped from the latest; usually none or a few)."""
    if not speed.bytes_per_s or not fleet.total_rate:
        return queued_bytes
    total, weighted = fleet.total_rate, fleet.weighted
    for t, r in reversed(fleet.rates):
        finish = (queued_bytes + weighted) / total
        if t < finish or total - r <= 0:
            break
        total, weighted = total - r, weighted - r * t
    finish = (queued_bytes + weighted) / total
    return max(0.0, speed.bytes_per_s * (finish - speed.busy_s - speed.startup_s))


def batch_limit(
    requested: int | None,
    speed: Speed,
    fleet: Fleet,
    queued_files: int,
    queued_bytes: float,
    policy: Policy,
) -> BatchLimit:
    """How much one v1 claim gets.

    An engine with a measured speed gets a byte budget: a steady batch (`steady_bytes`),
    or near the end of the queue its equal-finish part of what is left (`tail_bytes`).
    One without gets the default number of files, at most an even part of the queue. An
    engine's own request is a ceiling on files (legacy engines always ask a fixed size)."""
    ceiling = batch_size(requested, policy) if requested and requested > 0 else policy.max_batch
    if speed.bytes_per_s:
        budget = min(steady_bytes(speed, policy), tail_bytes(speed, fleet, queued_bytes))
        return BatchLimit(max(1, min(ceiling, policy.max_batch)), budget)
    even = math.ceil(queued_files / max(1, len(fleet)))
    size = requested if requested and requested > 0 else policy.default_batch
    return BatchLimit(max(1, min(size, ceiling, even, policy.max_batch)))


def take_bytes(files: list[FileRow], budget: float | None) -> list[FileRow]:
    """The oldest files up to `budget` bytes (at least one)."""
    if budget is None:
        return files
    taken, total = [], 0
    for f in files:
        if taken and total + f.size > budget:
            break
        taken.append(f)
        total += f.size
    return taken


def claim(
    ledger: Ledger,
    engine: str,
    requested: int | None,
    now: float,
    policy: Policy,
    api: str,
    speed: Speed | None = None,
    fleet: Fleet | None = None,
    gens: Sequence[int] | None = None,
) -> Assignment | None:
    """Hand the oldest queued files to `engine` as a new job, or None when nothing is queued.

    `speed` is the engine's, `fleet` the active engines' (this one's included); `gens`
    the generations the engine can basecall (None: all), the earliest with files queued
    first."""
    batch_size(requested, policy)  # a request over the maximum is refused, queue or not
    queued = ledger.queued_count(gens)
    if queued == 0:
        return None
    if api == "legacy":
        # Original engines sleep a minute between batches: they get what they ask for.
        limit = BatchLimit(batch_size(requested, policy))
    else:
        speed = speed or Speed()
        limit = batch_limit(
            requested, speed, fleet or Fleet.of([speed]), queued, ledger.queued_bytes(), policy
        )
    with ledger.transaction():
        candidates = ledger.queued_files(_candidates(limit, ledger), gens)
        files = take_bytes(isolate_retries(candidates), limit.bytes)
        if not files:
            return None
        job_id = ledger.create_job(
            engine, new_token(), api, policy.lease_s, len(files), now, gen=files[0].gen
        )
        ids = [f.id for f in files]
        ledger.set_file_state(ids, FileState.QUEUED, FileState.ASSIGNED, now, job_id=job_id)
        job = ledger.get_job(job_id)
    assert job is not None
    assigned = [replace(f, state=FileState.ASSIGNED, job_id=job_id) for f in files]
    return Assignment(job, assigned)


def _candidates(limit: BatchLimit, ledger: Ledger) -> int:
    """How many queued files to read for a byte budget: enough at the mean size, twice over."""
    if limit.bytes is None:
        return limit.files
    mean = max(1.0, ledger.mean_queued_size())
    return max(1, min(limit.files, math.ceil(2 * limit.bytes / mean) + 1))


def isolate_retries(files: list[FileRow]) -> list[FileRow]:
    """A file that failed before goes out alone, so a poison file cannot sink its batch-mates
    and its own failures are its own."""
    if files and files[0].attempts > 0:
        return files[:1]
    return [f for f in files if f.attempts == 0]


def get_job(ledger: Ledger, job_id: int) -> JobRow:
    job = ledger.get_job(job_id)
    if job is None:
        raise NotFound(f"unknown job {job_id}")
    return job


def check_token(job: JobRow, token: str | None) -> None:
    """Legacy calls carry no token (None); v1 calls must carry the job's own."""
    # bytes: compare_digest raises TypeError on a str with non-ASCII characters
    if token is not None and not secrets.compare_digest(token.encode(), job.token.encode()):
        raise LeaseLost(f"job {job.id}: the lease token does not match")


def renew(ledger: Ledger, job: JobRow, now: float) -> float:
    """Extend the lease of a running job; raises LeaseLost when it is no longer running."""
    if job.state is not JobState.ASSIGNED:
        raise LeaseLost(f"job {job.id} is {job.state}, its lease is gone")
    return ledger.renew_lease(job.id, now)


def renew_all(ledger: Ledger, now: float) -> int:
    """After a manager restart every running job gets a full lease: engines could not report."""
    jobs = ledger.jobs_in([JobState.ASSIGNED])
    with ledger.transaction():
        for job in jobs:
            ledger.renew_lease(job.id, now)
    return len(jobs)


def begin_merge(ledger: Ledger, job: JobRow, plan: dict, now: float) -> None:
    """Journal a DONE job's merge plan before any output moves."""
    ledger.set_job_state(job.id, JobState.ASSIGNED, JobState.MERGING, now, merge_plan=plan)


def finish_merge(
    ledger: Ledger, job: JobRow, now: float, yield_totals: Iterable[dict] = ()
) -> None:
    """The merge is on disk: the job and its files are done, and the yield totals that
    its reads change are written in the same transaction (counted exactly once)."""
    with ledger.transaction():
        ids = [f.id for f in ledger.files_of_job(job.id) if f.state is FileState.ASSIGNED]
        ledger.set_file_state(ids, FileState.ASSIGNED, FileState.DONE, now, job_id=job.id)
        ledger.set_job_state(job.id, JobState.MERGING, JobState.DONE, now)
        ledger.put_yield_totals(yield_totals, job.gen)


def fail(ledger: Ledger, job: JobRow, reason: str, now: float, policy: Policy) -> list[FileRow]:
    """The engine reported failure: each file is retried or, out of attempts, quarantined.

    Returns the files quarantined by this failure."""
    with ledger.transaction():
        ledger.set_job_state(job.id, JobState.ASSIGNED, JobState.FAILED, now, reason=reason)
        return _return_files(ledger, job, reason, now, policy, count_attempt=True)


def release(ledger: Ledger, job: JobRow, now: float) -> None:
    """The engine handed the batch back untouched (e.g. on SIGTERM): no attempt is counted."""
    with ledger.transaction():
        ledger.set_job_state(job.id, JobState.ASSIGNED, JobState.RELEASED, now, reason="released")
        _return_files(ledger, job, "released by engine", now, policy=None, count_attempt=False)


def expire_overdue(
    ledger: Ledger, now: float, policy: Policy
) -> list[tuple[JobRow, list[FileRow]]]:
    """Expire every running job whose lease ran out before `now`.

    Returns each expired job with the files it quarantined."""
    overdue = ledger.overdue_jobs(now)
    expired = []
    with ledger.transaction():
        for job in overdue:
            ledger.set_job_state(
                job.id, JobState.ASSIGNED, JobState.EXPIRED, now, reason="lease expired"
            )
            poisoned = _return_files(ledger, job, "lease expired", now, policy, count_attempt=True)
            expired.append((job, poisoned))
    return expired


def mark_late(ledger: Ledger, job: JobRow, now: float) -> None:
    ledger.set_job_state(job.id, JobState.EXPIRED, JobState.LATE, now, reason="late report")


def _return_files(
    ledger: Ledger,
    job: JobRow,
    reason: str,
    now: float,
    policy: Policy | None,
    count_attempt: bool,
) -> list[FileRow]:
    """Requeue a job's files, quarantining those out of attempts; returns the quarantined."""
    files = [f for f in ledger.files_of_job(job.id) if f.state is FileState.ASSIGNED]
    poisoned: list[FileRow] = []
    retry: list[FileRow] = []
    alone = len(files) == 1  # only a failure on its own proves it is the file's fault
    for f in files:
        out_of_attempts = policy is not None and f.attempts + 1 >= policy.max_attempts
        (poisoned if count_attempt and alone and out_of_attempts else retry).append(f)
    ledger.set_file_state(
        [f.id for f in retry],
        FileState.ASSIGNED,
        FileState.QUEUED,
        now,
        job_id=job.id,
        reason=reason,
        count_attempt=count_attempt,
    )
    if poisoned:
        ledger.set_file_state(
            [f.id for f in poisoned],
            FileState.ASSIGNED,
            FileState.QUARANTINED,
            now,
            job_id=job.id,
            reason=quarantine_reason(poisoned[0].attempts + 1, reason),
            count_attempt=True,
        )
    return poisoned


def quarantine_reason(attempts: int, last: str) -> str:
    return f"failed {attempts} attempts; last: {last}"
