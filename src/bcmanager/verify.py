"""`bcm verify`: is every read of the input in the output exactly once?

Reads the read ids of every complete pod5 under INPUT (job folders and symlinks
skipped, as the scanner does) and the header of every FASTQ record directly under
OUTPUT/pass and OUTPUT/fail (`.fastq`, `.fastq.gz`), then reports, per input file, the
read ids that are missing or duplicated, and the FASTQ read ids that come from no pod5.
Files listed in OUTPUT/QUARANTINE/quarantined.tsv are expected to be missing; their
reads are still checked for duplicates.

Built for a PromethION-sized run: pod5 read ids and FASTQ headers are read by a process
pool, read ids are kept as 16-byte values in numpy arrays (not Python strings), FASTQ
sequences are streamed past and never held. A FASTQ record split by Dorado (a `pi:Z:`
parent tag in its header) counts for its parent read.
"""

from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bcmanager.layout import MERGED_SUBDIRS, Layout, is_complete_pod5
from bcmanager.scanner import walk_pod5

log = logging.getLogger("bcmanager.verify")

ID_DTYPE = np.dtype("S16")  # a UUID's 16 bytes
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PARENT_TAG = b"pi:Z:"
_POD5_CHUNK = 256  # pod5 files per pool task
_INLINE_BELOW = 64  # fewer files than this: no process pool, its start-up costs more

Progress = Callable[[int, int], None]  # (units done, units in all)


@dataclass
class FileReport:
    """What is wrong with one input pod5 (only files with something to say are listed)."""

    path: str  # relative to INPUT
    reads: int = 0
    missing: int = 0
    duplicated: int = 0
    missing_ids: list[str] = field(default_factory=list)  # at most `max_listed`
    duplicated_ids: list[str] = field(default_factory=list)
    quarantined: str | None = None  # the reason, when the file is in quarantined.tsv
    error: str | None = None  # could not be read


@dataclass
class VerifyReport:
    input: str
    output: str
    pod5_files: int = 0  # complete pod5 files found under INPUT
    input_reads: int = 0  # distinct read ids in them
    fastq_files: int = 0
    fastq_records: int = 0
    missing: int = 0  # input read ids without a FASTQ record (quarantined files excepted)
    duplicated: int = 0  # read ids with more than one FASTQ record
    extra_records: int = 0  # records beyond the first of each duplicated read id
    unexpected: int = 0  # read ids in FASTQ but in no pod5
    unexpected_ids: list[str] = field(default_factory=list)
    unreadable: int = 0  # pod5 files that could not be read and are not quarantined
    input_duplicates: int = 0  # read ids found in more than one pod5 (reported, not failed)
    incomplete: list[str] = field(default_factory=list)  # pod5 still being written
    quarantined: dict[str, str] = field(default_factory=dict)  # relpath -> reason
    duplicate_locations: dict[str, list[str]] = field(default_factory=dict)  # id -> FASTQs
    fastq_errors: dict[str, str] = field(default_factory=dict)  # FASTQ path -> problem
    files: list[FileReport] = field(default_factory=list)
    max_listed: int = 100

    @property
    def ok(self) -> bool:
        """Every read id there exactly once, and nothing that could not be checked."""
        return not (
            self.missing
            or self.duplicated
            or self.unexpected
            or self.unreadable
            or self.fastq_errors
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ok"] = self.ok
        return out


# -- workers (run in a process pool) ---------------------------------------------------


def _pod5_ids(root: str, relpaths: Sequence[str]) -> list[tuple[str, np.ndarray | None, str]]:
    """(relpath, read ids, error) for each file."""
    import pod5

    out: list[tuple[str, np.ndarray | None, str]] = []
    for rel in relpaths:
        try:
            with pod5.Reader(os.path.join(root, rel)) as reader:
                ids = _raw_ids(reader)
            out.append((rel, ids, ""))
        except Exception as exc:  # pod5 raises RuntimeError, OSError, arrow errors...
            out.append((rel, None, f"{type(exc).__name__}: {exc}"))
    return out


def _raw_ids(reader: object) -> np.ndarray:
    try:
        parts = [
            np.frombuffer(
                chunk.buffers()[1], dtype=ID_DTYPE, count=len(chunk), offset=chunk.offset * 16
            )
            for chunk in reader.read_ids_raw.chunks  # type: ignore[attr-defined]
        ]
        return np.concatenate(parts) if parts else np.empty(0, ID_DTYPE)
    except (AttributeError, TypeError, ValueError, IndexError):  # another pod5/arrow version
        ids = [uuid.UUID(str(r)).bytes for r in reader.read_ids]  # type: ignore[attr-defined]
        return np.array(ids, dtype=ID_DTYPE)


@dataclass
class _FastqScan:
    path: str
    records: int
    own: np.ndarray  # each record's read id (UUID records)
    present: np.ndarray  # the read it stands for: its parent when split, else `own`
    odd: list[str]  # read ids that are not UUIDs (no pod5 has them)
    error: str = ""


def _scan_fastq(path: str) -> _FastqScan:
    own = bytearray()
    present = bytearray()
    odd: list[str] = []
    records = 0
    error = ""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            lines = iter(fh)
            for header in lines:
                seq = next(lines, None)
                plus = next(lines, None)
                qual = next(lines, None)
                line = 4 * records + 1
                if not header.startswith(b"@"):
                    error = f"line {line}: a record must start with '@'"
                    break
                if qual is None or seq is None or plus is None:
                    error = f"line {line}: record cut short (truncated file?)"
                    break
                if not plus.startswith(b"+"):
                    error = f"line {line + 2}: expected '+' (multi-line FASTQ is not supported)"
                    break
                records += 1
                tokens = header[1:].split()
                if not tokens:
                    error = f"line {line}: header without a read id"
                    break
                rid = tokens[0]
                parent = next((t[5:] for t in tokens[1:] if t.startswith(_PARENT_TAG)), rid)
                if _UUID.fullmatch(rid) and _UUID.fullmatch(parent):
                    own += bytes.fromhex(rid.replace(b"-", b"").decode("ascii"))
                    present += bytes.fromhex(parent.replace(b"-", b"").decode("ascii"))
                else:
                    odd.append(rid.decode("utf-8", "replace"))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return _FastqScan(
        path,
        records,
        np.frombuffer(bytes(own), dtype=ID_DTYPE),
        np.frombuffer(bytes(present), dtype=ID_DTYPE),
        odd,
        error,
    )


def _scan_fastqs(paths: Sequence[str]) -> list[_FastqScan]:
    return [_scan_fastq(p) for p in paths]


# -- the check -------------------------------------------------------------------------


def fastq_files(output: Path) -> list[Path]:
    """The FASTQ files directly under OUTPUT/pass and OUTPUT/fail."""
    found = []
    for sub in MERGED_SUBDIRS:
        folder = output / sub
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.name.endswith((".fastq", ".fastq.gz", ".fq", ".fq.gz")) and entry.is_file():
                found.append(Path(entry.path))
    return found


def verify_run(
    input_dir: Path,
    output_dir: Path,
    *,
    workers: int | None = None,
    max_listed: int = 100,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check that OUTPUT holds every read of INPUT exactly once (see the module docstring).

    `workers`: processes reading files (default: one per CPU; 0 or 1: in this process).
    `max_listed`: read ids listed per file and category (the counts are always exact).
    `progress(done, total)` is called as files are read.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    report = VerifyReport(str(input_dir), str(output_dir), max_listed=max_listed)
    report.quarantined = Layout(input_dir, output_dir).read_quarantine_list()

    pod5_rel: list[str] = []
    for rel in sorted(walk_pod5(input_dir)):
        if is_complete_pod5(input_dir / rel):
            pod5_rel.append(rel)
        else:
            report.incomplete.append(rel)
    fastqs = [str(p) for p in fastq_files(output_dir)]
    report.pod5_files = len(pod5_rel)
    report.fastq_files = len(fastqs)
    total = len(pod5_rel) + len(fastqs)
    done = 0
    if progress is not None:
        progress(0, total)

    pod5_results: dict[str, tuple[np.ndarray | None, str]] = {}
    scans: list[_FastqScan] = []
    tasks: list[tuple[Callable, tuple]] = [
        (_pod5_ids, (str(input_dir), pod5_rel[i : i + _POD5_CHUNK]))
        for i in range(0, len(pod5_rel), _POD5_CHUNK)
    ]
    tasks += [(_scan_fastqs, ([p],)) for p in fastqs]
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    pool: Executor | None = None
    if n_workers > 1 and total >= _INLINE_BELOW:
        pool = ProcessPoolExecutor(
            max_workers=min(n_workers, len(tasks)),
            mp_context=multiprocessing.get_context("forkserver"),
        )
    try:
        for result in _run_tasks(tasks, pool):
            for item in result:
                if isinstance(item, _FastqScan):
                    scans.append(item)
                else:
                    rel, ids, err = item
                    pod5_results[rel] = (ids, err)
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    scans.sort(key=lambda s: s.path)
    _compare(report, pod5_rel, pod5_results, scans)
    return report


def _run_tasks(tasks: list[tuple[Callable, tuple]], pool: Executor | None) -> Iterable[list]:
    """Each task's result, in any order; in this process if the pool cannot run them."""
    finished: set[int] = set()
    if pool is not None:
        futures = {pool.submit(func, *args): i for i, (func, args) in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                result = future.result()
                finished.add(futures[future])
                yield result
        except BrokenProcessPool as exc:  # e.g. a worker cannot re-import the caller's __main__
            log.warning("process pool failed (%s); reading the remaining files here", exc)
    for i, (func, args) in enumerate(tasks):
        if i not in finished:
            yield func(*args)


def _compare(
    report: VerifyReport,
    pod5_rel: list[str],
    pod5_results: dict[str, tuple[np.ndarray | None, str]],
    scans: list[_FastqScan],
) -> None:
    limit = report.max_listed
    by_file: dict[str, FileReport] = {}

    def file_report(rel: str) -> FileReport:
        if rel not in by_file:
            by_file[rel] = FileReport(rel)
        return by_file[rel]

    # The input side: one array of ids, and the file each came from.
    arrays: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    quarantined_idx: list[int] = []
    for idx, rel in enumerate(pod5_rel):
        ids, err = pod5_results[rel]
        reason = report.quarantined.get(rel)
        if reason is not None:
            quarantined_idx.append(idx)
            file_report(rel).quarantined = reason
        if ids is None:
            file_report(rel).error = err
            if reason is None:
                report.unreadable += 1
            continue
        arrays.append(ids)
        owners.append(np.full(len(ids), idx, dtype=np.int32))
        if len(ids) and reason is not None:
            file_report(rel).reads = len(ids)
    in_ids = np.concatenate(arrays) if arrays else np.empty(0, ID_DTYPE)
    in_owner = np.concatenate(owners) if owners else np.empty(0, np.int32)
    in_unique, in_counts = np.unique(in_ids, return_counts=True)
    report.input_reads = len(in_unique)
    report.input_duplicates = int(np.count_nonzero(in_counts > 1))

    # The output side.
    own = np.concatenate([s.own for s in scans]) if scans else np.empty(0, ID_DTYPE)
    present = np.concatenate([s.present for s in scans]) if scans else np.empty(0, ID_DTYPE)
    where = (
        np.concatenate([np.full(len(s.own), i, dtype=np.int32) for i, s in enumerate(scans)])
        if scans
        else np.empty(0, np.int32)
    )
    report.fastq_records = sum(s.records for s in scans)
    report.fastq_errors = {s.path: s.error for s in scans if s.error}
    odd = Counter(rid for s in scans for rid in s.odd)

    own_unique, own_counts = np.unique(own, return_counts=True)
    dup_ids = own_unique[own_counts > 1]
    odd_dups = {rid: n for rid, n in odd.items() if n > 1}
    report.duplicated = len(dup_ids) + len(odd_dups)
    report.extra_records = int(own_counts[own_counts > 1].sum()) - len(dup_ids)
    report.extra_records += sum(n - 1 for n in odd_dups.values())
    dup_mask = np.isin(own, dup_ids)
    dup_rows = np.flatnonzero(dup_mask)
    for rid, rows in _groups(own[dup_rows], dup_rows, limit):
        report.duplicate_locations[_as_uuid(rid)] = [scans[where[r]].path for r in rows]
    for rid in list(odd_dups)[: max(0, limit - len(report.duplicate_locations))]:
        report.duplicate_locations[rid] = [s.path for s in scans for r in s.odd if r == rid]

    present_unique = np.unique(present)
    unexpected = present_unique[~np.isin(present_unique, in_unique)]
    report.unexpected = len(unexpected) + len(odd)
    report.unexpected_ids = [_as_uuid(r) for r in unexpected[:limit]]
    report.unexpected_ids += list(odd)[: max(0, limit - len(report.unexpected_ids))]

    # Per input file: missing (unless quarantined) and duplicated reads.
    is_present = np.isin(in_ids, present_unique)
    in_quarantine = np.isin(in_owner, np.array(quarantined_idx, dtype=np.int32))
    missing_mask = ~is_present & ~in_quarantine
    # A duplicated record stands for its parent read (the same id unless split).
    dup_reads = np.unique(present[dup_mask])
    duplicated_mask = np.isin(in_ids, dup_reads)
    report.missing = len(np.unique(in_ids[missing_mask]))
    reads_per_file = np.bincount(in_owner, minlength=len(pod5_rel))
    for mask, attr in ((missing_mask, "missing"), (duplicated_mask, "duplicated")):
        rows = np.flatnonzero(mask)
        for owner, hit in _groups(in_owner[rows], rows, None):
            entry = file_report(pod5_rel[int(owner)])
            setattr(entry, attr, len(hit))
            getattr(entry, f"{attr}_ids").extend(_as_uuid(r) for r in in_ids[hit[:limit]])
    for idx, rel in enumerate(pod5_rel):
        if rel in by_file and not by_file[rel].reads and idx < len(reads_per_file):
            by_file[rel].reads = int(reads_per_file[idx])
    report.files = sorted(by_file.values(), key=lambda f: f.path)


def _groups(
    keys: np.ndarray, rows: np.ndarray, limit: int | None
) -> Iterable[tuple[object, np.ndarray]]:
    """(key, its rows) for each distinct key, in key order; at most `limit` groups."""
    if not len(rows):
        return
    order = np.argsort(keys, kind="stable")
    keys, rows = keys[order], rows[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    for n, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if limit is not None and n >= limit:
            return
        yield keys[start], rows[start:end]


def _as_uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(raw).ljust(16, b"\0")))
