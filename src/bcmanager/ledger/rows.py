"""The ledger's rows as Python values, and the converters from SQL rows to them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bcmanager.states import FileState, JobState


@dataclass(frozen=True, slots=True)
class NewFile:
    """A complete pod5 file found on disk and not yet in the ledger."""

    path: str
    size: int
    mtime: float = 0.0
    run: str | None = None
    reads: int | None = None
    samples: int | None = None
    read_samples: bytes | None = None  # each read's samples (`read_sizes_blob`), large files


@dataclass(frozen=True, slots=True)
class Part:
    """A slice of a file: reads `first` to `first + count - 1` of its `of` reads, in the
    order of its read table (`bcmanager.slicing`)."""

    first: int
    count: int
    of: int
    # samples before each read of the file and after its last (`of + 1` values), where
    # the ledger has them: a slice's bytes are its reads' share of the file's samples
    cum: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def end(self) -> int:
        return self.first + self.count

    def to_dict(self) -> dict[str, int]:
        return {"first": self.first, "count": self.count, "of": self.of}


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
    part: Part | None = None  # a job's slice of the file; None: the whole file


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


FILE_COLS = "id, path, size, state, attempts, job_id, reads, samples, reason, gen"
JOB_COLS = (
    "id, engine, state, token, api, lease_s, lease_expires, created, updated, ended,"
    " n_files, reason, merge_plan, gen"
)
EVENT_COLS = "id, at, entity, job_id, from_state, to_state, count, detail"


def file_row(row: Sequence) -> FileRow:
    """A files-table row (its columns in `FILE_COLS` order) as a FileRow."""
    return FileRow(row[0], row[1], row[2], FileState(row[3]), *row[4:])


def job_row(row: Sequence, leases: dict[int, tuple[float, float]] | None = None) -> JobRow:
    """A jobs-table row (its columns in `JOB_COLS` order) as a JobRow, with the lease
    expiry from `leases` (job -> (expires, lease_s)) when given."""
    lease = leases.get(row[0]) if leases else None
    expires = row[6] if lease is None else lease[0]
    return JobRow(row[0], row[1], JobState(row[2]), *row[3:6], expires, *row[7:])


def read_sizes_blob(samples: Sequence[int] | np.ndarray) -> bytes:
    """Each read's samples as the ledger keeps them (little-endian uint32, read table order)."""
    return np.asarray(samples, dtype="<u4").tobytes()


def cumulative_samples(blob: bytes) -> np.ndarray:
    """Samples before each read and after the last, from `read_sizes_blob`'s bytes."""
    sizes = np.frombuffer(blob, dtype="<u4").astype(np.int64)
    return np.concatenate(([0], np.cumsum(sizes)))
