"""Scheduling rules over the ledger: claim, lease, expire, retry, quarantine.

Pure code: no filesystem, no HTTP, no clock. Every function takes `now` and a
ledger, and performs its changes in one ledger transaction.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
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


def adaptive_batch_size(
    requested: int | None,
    rate_files_per_s: float | None,
    queued: int,
    share: float,
    policy: Policy,
) -> int:
    """How many files one claim gets.

    An engine with a measured rate gets about `target_batch_s` of work; one without
    gets the default. An engine's own request is a ceiling (legacy engines always ask
    for a fixed size). Near the end of the queue a batch is at most the engine's
    `share` of what is left (its part of the fleet's speed, or 1/engines while speeds
    are unknown), so all engines finish together instead of one ending a large tail.
    """
    ceiling = batch_size(requested, policy) if requested and requested > 0 else None
    if rate_files_per_s is not None and rate_files_per_s > 0:
        size = max(1, round(rate_files_per_s * policy.target_batch_s))
    else:
        size = ceiling or policy.default_batch
    if ceiling is not None:
        size = min(size, ceiling)
    fair_share = math.ceil(queued * min(1.0, max(share, 0.0)))
    return max(1, min(size, fair_share, policy.max_batch))


def claim(
    ledger: Ledger,
    engine: str,
    requested: int | None,
    now: float,
    policy: Policy,
    api: str,
    rate_files_per_s: float | None = None,
    share: float = 1.0,
) -> Assignment | None:
    """Hand the oldest queued files to `engine` as a new job, or None when nothing is queued."""
    queued = ledger.file_counts()[FileState.QUEUED]
    if api == "legacy":
        # Original engines sleep a minute between batches: they get what they ask for.
        size = batch_size(requested, policy)
    else:
        size = adaptive_batch_size(requested, rate_files_per_s, queued, share, policy)
    if queued == 0:
        return None
    with ledger.transaction():
        files = isolate_retries(ledger.queued_files(size))
        if not files:
            return None
        job_id = ledger.create_job(engine, new_token(), api, policy.lease_s, len(files), now)
        ids = [f.id for f in files]
        ledger.set_file_state(ids, FileState.QUEUED, FileState.ASSIGNED, now, job_id=job_id)
        job = ledger.get_job(job_id)
    assert job is not None
    assigned = [replace(f, state=FileState.ASSIGNED, job_id=job_id) for f in files]
    return Assignment(job, assigned)


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
        ledger.put_yield_totals(yield_totals)


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
