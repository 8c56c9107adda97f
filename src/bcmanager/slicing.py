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

import numpy as np

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

    Bytes are counted read by read where the ledger knows each read's samples (reads
    differ in length several times over, so a count of reads is a poor measure of a
    slice's work), else as an even share per read.

    For a probe (engines not measured yet: the fleet's `engines`, else 0), where the least
    binds the file is cut into a number of equal slices that is a multiple of `engines`
    (counted on the whole file, so every claim cuts alike): 8 idle engines get 8 slices
    of a file, not 9 with the ninth left for whoever ends first."""
    part = piece.part
    assert part is not None
    sizes = PieceBytes(piece)
    want = budget if budget is not None else piece.size
    if want < least:
        want = _even_share(sizes.whole, least, engines) if engines else least
    count = min(part.count, max(1, sizes.reads_for(want)))
    if piece.size - sizes.head(count) >= least:
        return count
    # what is left would be a sliver: take it all, or leave the least slice, which is nearer
    fewer = sizes.leaving(least)
    nearer = sizes.head(count) - sizes.head(fewer) < piece.size - sizes.head(count)
    if fewer >= 1 and sizes.head(fewer) >= least and nearer:
        return fewer
    return part.count


class PieceBytes:
    """Bytes of a queued slice's reads, counted from its first read."""

    def __init__(self, piece: FileRow) -> None:
        part = piece.part
        assert part is not None
        self.size = float(piece.size)
        self.count = part.count
        self._first = part.first
        self._cum = part.cum
        if self._cum is None:
            self.whole = self.size * part.of / max(1, part.count)
            return
        span = float(self._cum[part.end] - self._cum[part.first])
        if span <= 0:  # reads of no samples: count them evenly
            self._cum, self.whole = None, self.size
            return
        self._per_sample = self.size / span
        self.whole = float(self._cum[part.of]) * self._per_sample

    def head(self, reads: int) -> float:
        """Bytes of the slice's first `reads` reads."""
        if self._cum is None:
            return self.size * reads / max(1, self.count)
        first = self._first
        return float(self._cum[first + reads] - self._cum[first]) * self._per_sample

    def reads_for(self, want: float) -> int:
        """The fewest reads from the first whose bytes reach `want` (all: `count`)."""
        if self._cum is None:
            return math.ceil(want * self.count / self.size) if self.size else self.count
        target = self._cum[self._first] + want / self._per_sample
        end = int(np.searchsorted(self._cum, target - 1e-9, side="left"))
        return min(self.count, end - self._first)

    def leaving(self, least: float) -> int:
        """The most reads from the first that leave at least `least` bytes after them."""
        if self._cum is None:
            return self.count - math.ceil(least * self.count / self.size) if self.size else 0
        target = self._cum[self._first + self.count] - least / self._per_sample
        end = int(np.searchsorted(self._cum, target + 1e-9, side="right")) - 1
        return max(0, min(self.count, end - self._first))


def _even_share(whole: float, least: float, engines: int) -> float:
    """Bytes per slice when a file of `whole` bytes is cut into as many slices of at
    least `least` bytes as it holds, rounded down to a multiple of `engines`."""
    pieces = max(1, int(whole // max(least, 1.0)))
    if engines > 1 and pieces >= engines:
        pieces -= pieces % engines
    return whole / pieces


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
