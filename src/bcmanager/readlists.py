"""What the manager reads of large pod5 files for slicing (`bcmanager.slicing`): their
read counts, once per file when it is found (on the scan thread, off the lock), and a
slice job's read list, written beside the job's links before the engine hears of it
(off the lock and the event loop)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from bcmanager.ledger import FileRow, NewFile
from bcmanager.ledger.rows import read_sizes_blob
from bcmanager.readids import (
    pod5_read_count,
    pod5_read_ids,
    pod5_read_samples,
    write_read_id_list,
)

log = logging.getLogger("bcmanager.manager")


def with_read_counts(input_dir: Path, files: Iterable[NewFile], above: float) -> list[NewFile]:
    """`files` with the read count of each one larger than `above` bytes (0: none), and
    each of its reads' samples, so the scheduler can slice it by its reads' lengths; a
    file whose reads cannot be counted goes whole."""
    out = []
    for f in files:
        if 0 < above < f.size and f.reads is None:
            f = _with_reads(input_dir, f)
        out.append(f)
    return out


def _with_reads(input_dir: Path, f: NewFile) -> NewFile:
    path = input_dir / f.path
    try:
        samples = pod5_read_samples(path)
        return replace(
            f,
            reads=len(samples),
            samples=int(samples.sum()),
            read_samples=read_sizes_blob(samples),
        )
    except Exception as exc:
        log.debug("%s: no read lengths (%s); its slices are cut by read count", f.path, exc)
    try:
        return replace(f, reads=pod5_read_count(path))
    except Exception as exc:
        log.warning("%s: cannot count its reads (%s); it goes out whole", f.path, exc)
    return f


class ReadLists:
    """Read lists of slices, from each large file's read table (the last few kept: the
    slices of one file go out one after another)."""

    def __init__(self, input_dir: Path, keep: int = 4) -> None:
        self._input = input_dir
        self._keep = keep
        self._ids: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def ids_of(self, relpath: str) -> np.ndarray:
        """A file's read ids in the order of its read table (the order slices count in)."""
        with self._lock:
            if relpath in self._ids:
                self._ids.move_to_end(relpath)
                return self._ids[relpath]
        ids = pod5_read_ids(str(self._input / relpath))
        with self._lock:
            self._ids[relpath] = ids
            while len(self._ids) > self._keep:
                self._ids.popitem(last=False)
        return ids

    def write(self, piece: FileRow, target: Path) -> None:
        """Write the read list of a slice to `target`."""
        part = piece.part
        assert part is not None
        ids = self.ids_of(piece.path)
        if len(ids) != part.of:
            log.warning(
                "%s: %d reads now, %d when it was sliced; its slice lists follow the count it had",
                piece.path,
                len(ids),
                part.of,
            )
        write_read_id_list(target, ids[part.first : part.end])
