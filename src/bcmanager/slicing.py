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

# A slice holds at least this share of `slice_above` (and what is left of a file after
# a slice is never less): a GPU's start-up is paid per slice.
MIN_SLICE_SHARE = 0.25


def sliceable(file: FileRow, slice_above: float) -> bool:
    """Whether a queued file goes out in slices (to engines that take them)."""
    return 0 < slice_above < file.size and (file.reads or 0) >= 2


def slice_reads(piece: FileRow, budget: float | None, slice_above: float, engines: int = 1) -> int:
    """How many reads of a queued slice to hand out for a budget of bytes: at least a
    MIN_SLICE_SHARE of `slice_above`'s worth, and all of it rather than leave less.

    Where that least binds (engines not measured yet get small probes), the file is
    cut into a number of equal slices that is a multiple of the fleet's `engines`
    (counted on the whole file, so every claim cuts alike): 8 idle engines get 8 slices
    of a file, not 9 with the ninth left for whoever ends first."""
    part = piece.part
    assert part is not None
    per_read = piece.size / part.count if piece.size else 1.0
    least = slice_above * MIN_SLICE_SHARE
    want = budget if budget is not None else piece.size
    if want < least:
        want = _even_share(part.of, math.ceil(least / per_read), engines) * per_read
    count = min(part.count, max(1, math.ceil(want / per_read)))
    if (part.count - count) * per_read < least:
        return part.count
    return count


def _even_share(reads: int, least: int, engines: int) -> int:
    """Reads per slice when a file of `reads` is cut into as many slices of at least
    `least` reads as it holds, rounded down to a multiple of `engines`."""
    pieces = max(1, reads // max(1, least))
    if engines > 1 and pieces >= engines:
        pieces -= pieces % engines
    return math.ceil(reads / pieces)


def next_slice(
    ledger: Ledger, gens: Sequence[int] | None, before_gen: int | None
) -> FileRow | None:
    """The queued slice to hand out first, of a generation up to `before_gen` (the one
    whole files would come from; None: any): a slice that failed before goes out alone
    and first, as a retried file does."""
    pieces = [p for p in ledger.queued_slices(gens) if before_gen is None or p.gen <= before_gen]
    if not pieces:
        return None
    retried = [p for p in pieces if p.attempts > 0]
    return (retried or pieces)[0]


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
