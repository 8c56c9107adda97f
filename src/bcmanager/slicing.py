"""Slices of large files: which files are handed out in parts, how many reads each part
holds, and when a sliced file is done.

A complete file above `Policy.slice_above` bytes whose read count is known is never
handed out whole to an engine that takes slices (`Basecaller.slices`): its reads are
handed out in parts, each sized like the batch the claiming engine would get (its speed,
the tail rule: `scheduler.batch_limit`), so that several engines basecall one file at
once. Engines that take whole files only (original engines, `script`) still get it
whole while no slice of it is out; once its first slice is out it is `assigned`, so it
is never also handed out whole.

Pure core: the ledger and `now`, no filesystem. The ledger's half is
`bcmanager.ledger.slices`; the read list an engine gets is written by the manager.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bcmanager.ledger import FileRow, Ledger
from bcmanager.states import FileState

# A probe's slice (an engine not measured yet) holds at least this share of `slice_above`
# (and what is left of a file after a slice is never less): a GPU's start-up is paid per
# slice. A measured engine's least slice is one worth its start-up (`scheduler`).
MIN_SLICE_SHARE = 0.25


def sliceable(file: FileRow, slice_above: float) -> bool:
    """Whether a queued file goes out in slices (to engines that take them)."""
    return 0 < slice_above < file.size and (file.reads or 0) >= 2


def slice_reads(piece: FileRow, budget: float | None, least: float, engines: int = 0) -> int:
    """How many reads of a queued slice to hand out for a budget of bytes: at least
    `least` bytes' worth, and never leaving less: where the rest would be a sliver, all
    of it or all but the least slice, whichever is nearer the budget (a tail part taken
    whole past its budget would end after the others' parts).

    For a probe (engines not measured yet: the fleet's `engines`, else 0), where the least
    binds the file is cut into a number of equal slices that is a multiple of `engines`
    (counted on the whole file, so every claim cuts alike): 8 idle engines get 8 slices
    of a file, not 9 with the ninth left for whoever ends first."""
    part = piece.part
    assert part is not None
    per_read = piece.size / part.count if piece.size else 1.0
    want = budget if budget is not None else piece.size
    if want < least:
        reads = math.ceil(least / per_read)
        want = (_even_share(part.of, reads, engines) if engines else reads) * per_read
    count = min(part.count, max(1, math.ceil(want / per_read)))
    if (part.count - count) * per_read >= least:
        return count
    # what is left would be a sliver: take it all, or leave the least slice, which is nearer
    fewer = part.count - math.ceil(least / per_read)
    if fewer >= 1 and fewer * per_read >= least and count - fewer < part.count - count:
        return fewer
    return part.count


def _even_share(reads: int, least: int, engines: int) -> int:
    """Reads per slice when a file of `reads` is cut into as many slices of at least
    `least` reads as it holds, rounded down to a multiple of `engines`."""
    pieces = max(1, reads // max(1, least))
    if engines > 1 and pieces >= engines:
        pieces -= pieces % engines
    return math.ceil(reads / pieces)


def next_slice(queued: Sequence[FileRow], budget: float | None) -> FileRow | None:
    """Of the `queued` slices (`Ledger.queued_slices`, oldest first), the one to cut from
    for a tail part of `budget` bytes (None: not a tail part): a slice that failed before
    (alone and first, as a retried file goes), else the oldest that holds the budget;
    None when none does (`fill_slice`). Outside the tail the oldest, so that a file's
    last reads are never passed over for long while new files keep coming."""
    retried = [p for p in queued if p.attempts > 0]
    if retried:
        return retried[0]
    return next((p for p in queued if budget is None or p.size >= budget), None)


def fill_slice(queued: Sequence[FileRow], head: FileRow | None) -> FileRow | None:
    """When no queued slice holds a budget: the large file at the head of the queue
    (`head`, to start slicing) where it holds more than any, else the largest queued
    slice. A tail part cut short at a file's end would take its engine a batch more."""
    largest = max(queued, key=lambda p: p.size, default=None)
    if head is not None and (largest is None or head.size > largest.size):
        return head
    return largest


def of_generations(queued: Sequence[FileRow], before_gen: int | None) -> list[FileRow]:
    """The queued slices of a generation up to `before_gen` (the one whole files would
    come from; None: any)."""
    return [p for p in queued if before_gen is None or p.gen <= before_gen]


def start(ledger: Ledger, file: FileRow, now: float) -> FileRow:
    """Begin handing out `file` in slices; returns its one queued slice (all its reads)."""
    assert file.reads is not None
    ledger.start_slicing(file, file.reads, now)
    return next(p for p in ledger.queued_slices([file.gen]) if p.id == file.id)


def settle(ledger: Ledger, piece: FileRow, now: float) -> None:
    """After one of a file's slices ended: the file is done once every read of it is in
    a merged slice (in the transaction of that merge)."""
    file = ledger.get_file(piece.path, piece.gen)
    if file is None or file.state is not FileState.ASSIGNED:
        return
    states = {s.state for s in ledger.slices_of_file(file.id)}
    if states == {FileState.DONE}:
        ledger.set_file_state([file.id], FileState.ASSIGNED, FileState.DONE, now)


def quarantine_file(ledger: Ledger, piece: FileRow, reason: str, now: float) -> FileRow | None:
    """A slice ran out of attempts: its file is quarantined at once (its other slices
    are not handed out any more; those out may still be merged). Returns the file, or
    None when it was quarantined already."""
    file = ledger.get_file(piece.path, piece.gen)
    if file is None or file.state is not FileState.ASSIGNED:
        return None
    part = piece.part
    assert part is not None
    why = f"reads {part.first}-{part.end - 1} of {part.of}: {reason}"
    ledger.set_file_state([file.id], FileState.ASSIGNED, FileState.QUARANTINED, now, reason=why)
    ledger.quarantine_queued_slices(file.id, why, now)
    return file
