"""File and job states, and the transitions allowed between them.

The ledger's single state-changing functions consult these tables; nothing else
edits a state.
"""

from __future__ import annotations

from enum import StrEnum


class FileState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    DONE = "done"
    QUARANTINED = "quarantined"


class JobState(StrEnum):
    ASSIGNED = "assigned"  # handed to an engine, lease running
    MERGING = "merging"  # engine reported DONE; the merge waits (a disk error, an earlier one)
    DONE = "done"  # outputs merged (journaled in the job's manifest, then moved)
    FAILED = "failed"  # engine reported failure; files requeued or quarantined
    EXPIRED = "expired"  # lease ran out; files requeued or quarantined
    RELEASED = "released"  # engine handed the batch back unprocessed
    LATE = "late"  # an expired job's engine reported after all; output set aside


FILE_TRANSITIONS: dict[FileState, frozenset[FileState]] = {
    FileState.QUEUED: frozenset({FileState.ASSIGNED, FileState.QUARANTINED}),
    FileState.ASSIGNED: frozenset({FileState.DONE, FileState.QUEUED, FileState.QUARANTINED}),
    FileState.DONE: frozenset(),
    FileState.QUARANTINED: frozenset({FileState.QUEUED}),  # an operator's explicit retry
}

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.ASSIGNED: frozenset(
        {JobState.MERGING, JobState.DONE, JobState.FAILED, JobState.EXPIRED, JobState.RELEASED}
    ),
    JobState.MERGING: frozenset({JobState.DONE}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.EXPIRED: frozenset({JobState.LATE}),
    JobState.RELEASED: frozenset(),
    JobState.LATE: frozenset(),
}

LIVE_JOB_STATES = frozenset({JobState.ASSIGNED, JobState.MERGING})
