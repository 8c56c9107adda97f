"""An engine's check of its batch before it reports DONE.

The engine knows the read ids of the pod5 files it was given (their read tables, read on
the GPU node, never on the manager's hand-out path). After filing, every one of them must
be in the filed outputs exactly once, counted as `bcm verify` counts them (split reads
for their parent, secondary and supplementary records never), no output may hold a read
of no pod5 of the batch, and every output must be whole: read to its end by pysam with
its truncation check on (a BAM's every block and its EOF block), or by gzip to its
trailer. A batch that fails is reported FAILED with what is wrong, retried and in the
end quarantined, never DONE.

A basecaller may leave reads out on purpose: Dorado drops every read whose basecalled
sequence is shorter than 5 bases and says how many in its log ("Simplex reads filtered:
N"). Missing reads are accepted up to the number the basecaller says it filtered; their
ids are then listed in `filtered_reads_<job>.txt` beside the run's outputs, which `bcm
verify` reads and counts as filtered, not missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bcmanager.output.naming import filtered_list_name, join
from bcmanager.readids import ID_DTYPE, as_uuid, copies_over, pod5_read_ids, scan_read_file

MAX_LISTED = 5  # ids named in a problem's message


@dataclass
class BatchCheck:
    """What a batch's filed outputs hold against its pod5 files."""

    reads: int = 0  # distinct read ids in the batch's pod5 files
    records: int = 0  # primary records in its outputs
    missing: dict[str, list[str]] = field(default_factory=dict)  # pod5 name -> read ids
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)  # output -> what is wrong
    unreadable: dict[str, str] = field(default_factory=dict)  # pod5 name -> error
    filtered_by_basecaller: int = 0  # what the basecaller says it left out

    @property
    def n_missing(self) -> int:
        return sum(len(ids) for ids in self.missing.values())

    @property
    def filtered(self) -> bool:
        """Whether the missing reads are the ones the basecaller says it filtered."""
        return 0 < self.n_missing <= self.filtered_by_basecaller

    def problem(self) -> str | None:
        """Why the batch must not be reported DONE, in one line; None when it may."""
        parts = []
        if self.broken:
            path, why = next(iter(self.broken.items()))
            parts.append(f"{len(self.broken)} output(s) not whole, e.g. {path}: {why}")
        if self.unreadable:
            name, why = next(iter(self.unreadable.items()))
            parts.append(f"{len(self.unreadable)} pod5 file(s) unreadable, e.g. {name}: {why}")
        if self.n_missing and not self.filtered:
            ids = [i for ids in self.missing.values() for i in ids][:MAX_LISTED]
            said = self.filtered_by_basecaller
            parts.append(
                f"{self.n_missing} of {self.reads} read(s) missing from the outputs"
                f" (the basecaller says it filtered {said}), e.g. {', '.join(ids)}"
            )
        if self.duplicated:
            parts.append(
                f"{len(self.duplicated)} read(s) filed more than once, e.g."
                f" {', '.join(self.duplicated[:MAX_LISTED])}"
            )
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} read(s) of no pod5 of the batch, e.g."
                f" {', '.join(self.unexpected[:MAX_LISTED])}"
            )
        return "; ".join(parts) or None


def check_batch(
    pod5_files: Mapping[str, Path],
    outputs: Sequence[Path],
    *,
    filtered_by_basecaller: int = 0,
    only: np.ndarray | None = None,
) -> BatchCheck:
    """Check the filed `outputs` against the batch's `pod5_files` ({name: path}); with
    `only` (sorted 16-byte ids: a slice's read list), against those of their reads only."""
    check = BatchCheck(filtered_by_basecaller=filtered_by_basecaller)
    expected: dict[str, np.ndarray] = {}
    for name, path in pod5_files.items():
        try:
            ids = pod5_read_ids(str(path))
            expected[name] = ids if only is None else ids[np.isin(ids, only)]
        except Exception as exc:  # pod5 raises RuntimeError, OSError, arrow errors...
            check.unreadable[name] = f"{type(exc).__name__}: {exc}"
    scans = [scan_read_file(str(p)) for p in outputs]
    for scan in scans:
        if scan.error:
            check.broken[scan.path] = scan.error
        check.records += scan.records
    check.unexpected = [odd for scan in scans for odd in scan.odd]
    parents, copies = copies_over(scans)
    names = list(expected)
    ids = np.concatenate(list(expected.values())) if expected else np.empty(0, ID_DTYPE)
    owner = np.repeat(np.arange(len(names)), [len(expected[n]) for n in names])
    all_expected, wanted = np.unique(ids, return_counts=True)
    check.reads = len(all_expected)
    found = _copies_of(all_expected, parents, copies)
    lost = _beyond_found(ids, found[np.searchsorted(all_expected, ids)])
    for k in np.unique(owner[lost]):
        check.missing[names[k]] = [as_uuid(raw) for raw in ids[lost & (owner == k)]]
    over = _copies_of(parents, all_expected, wanted)
    check.duplicated = [as_uuid(p) for p in parents[(copies > over) & (over > 0)]]
    check.unexpected += [as_uuid(p) for p in parents[over == 0]]
    return check


def _copies_of(ids: np.ndarray, known: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """How many copies `counts` gives each of `ids` (sorted `known`; 0 where absent)."""
    if not len(known):
        return np.zeros(len(ids), dtype=np.int64)
    at = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return np.where(known[at] == ids, counts[at], 0)


def _beyond_found(ids: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Which occurrences of the batch's read ids (in file order) no output record covers:
    a read in two pod5 files of the batch (hard links of one file, say) must be filed
    twice, and the later files' copies are the ones counted missing when it is not."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if not len(ids):
        return np.zeros(0, dtype=bool)
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    rank_sorted = np.arange(len(ids)) - np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = rank_sorted
    return rank >= found


def write_filtered_lists(
    dest: Path, missing: Mapping[str, list[str]], run_folder_of: Mapping[str, str], job_id: int
) -> list[str]:
    """List the reads the basecaller filtered, one file per run folder (DEST-relative
    paths written): `<run folder>/filtered_reads_<job>.txt`, one read id a line."""
    by_folder: dict[str, list[str]] = {}
    for name, ids in missing.items():
        by_folder.setdefault(run_folder_of.get(name, "."), []).extend(ids)
    written = []
    for folder, ids in sorted(by_folder.items()):
        rel = join(folder, filtered_list_name(job_id))
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".partial-{path.name}")
        partial.write_text("".join(f"{rid}\n" for rid in sorted(ids)), encoding="ascii")
        partial.replace(path)
        written.append(rel)
    return written
