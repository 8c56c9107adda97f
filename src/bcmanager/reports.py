"""What an engine reports of a batch and what the manager tells of it.

`Outcome` and `Timing` come with an engine's reports (`Manager.complete`,
`Manager.keepalive`); `Completion` is the manager's answer; a `Happening` is what it tells
its hearers (metrics, progress) of every finished batch, merge, failure and expiry. Kept
apart from the manager so that those hearers need not import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bcmanager.ledger import FileRow, JobRow


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    RELEASED = "released"


@dataclass(frozen=True)
class Completion:
    """What a report did: the job in the state it left it in (after a first report its
    other fields are as the report found them), and whether it came late or again."""

    job: JobRow
    late: bool = False
    repeated: bool = False


@dataclass(frozen=True)
class Happening:
    """A moment the metrics count; the ledger keeps the durable story, this feeds rates."""

    kind: str  # claimed | done | merged | failed | expired | late
    at: float
    engine: str
    files: int = 0
    bytes: int = 0
    reads: int | None = None  # None: not known for every file of the batch
    samples: int | None = None
    seconds: float = 0.0  # done: claim to report; merged: the merge; claimed: the hand-out
    quarantined: int = 0


@dataclass(frozen=True)
class Timing:
    """An engine's account of one batch: its basecaller's start-up, then basecalling."""

    startup_s: float
    basecall_s: float
    output_bytes: int | None = None  # what the basecaller wrote (not said by every engine)
    filing_s: float | None = None  # filing its output, after basecalling (DONE reports)
    # of a batch so far (heartbeats): reads filed out of the batch's, where the engine knows
    reads_done: int | None = None
    reads_total: int | None = None
    reads_at_s: float | None = None  # basecalling seconds when reads_done was reached

    def share_done(self) -> float | None:
        """The part of its batch basecalled, by its reads (None where not said)."""
        if self.reads_done is None or not self.reads_total:
            return None
        return min(1.0, self.reads_done / self.reads_total)


def batch_done(job: JobRow, files: list[FileRow], now: float) -> Happening:
    """A merged batch as the metrics see it; reads/samples None unless known for every file."""
    known = all(f.reads is not None for f in files)
    return Happening(
        "done",
        now,
        job.engine,
        len(files),
        sum(f.size for f in files),
        sum(f.reads or 0 for f in files) if known else None,
        sum(f.samples or 0 for f in files) if all(f.samples is not None for f in files) else None,
        now - job.created,
    )
