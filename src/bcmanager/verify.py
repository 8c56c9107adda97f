"""`bcm verify`: is every read of the input in the output exactly once?

Reads the read ids of every complete pod5 under INPUT (job folders and symlinks
skipped, as the scanner does) and every record of every read file (BAM, SAM, FASTQ,
gzipped FASTQ; told by content) anywhere under OUTPUT, in either layout:

- legacy: `OUTPUT/{pass,fail}/job_id_<job>_<name>.fastq`;
- minknow: `OUTPUT/<run folder>/{bam,fastq}_{pass,fail}/[<barcode>/]<name>` and one
  `<run folder>/sequencing_summary_<flowcell>_<prot8>_<run8>.txt` per run.

bcmanager's own folders (`TMPOUTPUT_*`, `LOGOUTPUT_*`, `FAILEDOUTPUT_*`, `QUARANTINE`,
`.bcmanager`) and hidden names are skipped. It then reports, per input file, the reads
that are missing or present more than once, and the records that come from no pod5.
Files listed in OUTPUT/QUARANTINE/quarantined.tsv are expected to be missing; their
reads are still checked for duplicates. Reads a basecaller filtered on purpose (Dorado
drops sequences under 5 bases), which an engine lists in `filtered_reads_<job>.txt`
beside the run's outputs, are reported as filtered, not missing: the engine's check
before DONE (`bcmanager.output.check`) accepts them the same way.

Split reads (Dorado's `pi` tag, in BAM or in a FASTQ header) count for their parent: a
parent is present as many times as its unsplit records plus the most repeated of its
pieces (a piece is a child's `sp` split point, or its own id without `sp`), so a read
basecalled twice is caught even when Dorado drew new child ids the second time.

Where a run folder has a sequencing summary (every `sequencing_summary*.txt` directly
in it), its rows must match the run folder's records one to one: one row per record,
naming the record's file, and no row for a read or a file that is not there. Records
of plain (uncompressed) FASTQ files that no row names are allowed: original engines
write no summary rows ("no summary row (legacy engine)").

Counts per run folder and barcode (records, bases, pass/fail share) come from the
folders the records are in.

Built for a PromethION-sized run: files are read by a process pool, read ids are kept
as 16-byte values in numpy arrays (not Python strings), sequences are streamed past and
never held.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bcmanager.errors import ConfigError
from bcmanager.generations import DEFAULT_NAME, TREE_DIR
from bcmanager.layout import QUARANTINE_DIR, STATE_DIR, Layout, is_complete_pod5
from bcmanager.output.layouts import LEGACY_SUBDIRS
from bcmanager.output.naming import FILTERED_LIST
from bcmanager.readids import (
    ID_DTYPE,
    UUID_STR,
    ReadFileScan,
    as_uuid,
    concat_scans,
    copies_over,
    raw_ids,
    read_copies,
    scan_read_file,
)
from bcmanager.scanner import walk_pod5

log = logging.getLogger("bcmanager.verify")

_POD5_CHUNK = 256  # pod5 files per pool task
_INLINE_BELOW = 64  # fewer files than this: no process pool, its start-up costs more

READ_SUFFIXES = (".bam", ".sam", ".fastq", ".fq", ".fastq.gz", ".fq.gz")
SKIPPED_DIR = re.compile(r"^(?:TMPOUTPUT|LOGOUTPUT|FAILEDOUTPUT)_")
SKIPPED_NAMES = frozenset({QUARANTINE_DIR, STATE_DIR})
_STATUS_DIR = re.compile(r"^(?:(?:bam|fastq)_)?(pass|fail)$")
_SUMMARY = re.compile(r"^sequencing_summary.*\.txt$")

Progress = Callable[[int, int], None]  # (units done, units in all)


@dataclass
class FileReport:
    """What is wrong with one input pod5 (only files with something to say are listed)."""

    path: str  # relative to INPUT
    reads: int = 0
    missing: int = 0
    duplicated: int = 0
    missing_ids: list[str] = field(default_factory=list)  # at most `max_listed`
    # the missing reads' places in the file's read table, as [first, last] ranges (at most
    # `max_listed`): the order slices of a large file count in (`--slice-above`), so a
    # range names the slice whose reads never came
    missing_ranges: list[list[int]] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    quarantined: str | None = None  # the reason, when the file is in quarantined.tsv
    error: str | None = None  # could not be read


@dataclass
class YieldCounts:
    """Records and bases of a run folder or barcode, by the pass/fail folder they are in."""

    files: int = 0
    reads: int = 0  # records (a split read's pieces each count)
    bases: int = 0
    pass_reads: int = 0
    fail_reads: int = 0
    other_reads: int = 0  # in no pass/fail folder
    pass_bases: int = 0
    pass_share: float | None = None  # pass / (pass + fail) records; None without either

    def add(self, status: str | None, records: int, bases: int) -> None:
        self.files += 1
        self.reads += records
        self.bases += bases
        if status == "pass":
            self.pass_reads += records
            self.pass_bases += bases
        elif status == "fail":
            self.fail_reads += records
        else:
            self.other_reads += records
        judged = self.pass_reads + self.fail_reads
        self.pass_share = round(self.pass_reads / judged, 4) if judged else None


@dataclass
class BarcodeReport(YieldCounts):
    barcode: str | None = None  # `barcode01`, `unclassified`; None without a barcode level


@dataclass
class SummaryCheck:
    """A run folder's sequencing summary rows against its records."""

    files: list[str] = field(default_factory=list)  # OUTPUT-relative summary files
    rows: int = 0
    matched: int = 0  # records with exactly their row
    legacy_records: int = 0  # no summary row (legacy engine): plain FASTQ no row names
    records_without_row: int = 0
    rows_without_read: int = 0  # the row's read id is in no record of the run folder
    duplicated_rows: int = 0  # read ids with more than one row
    dangling_rows: int = 0  # rows naming a file that is not in the run folder
    wrong_file_rows: int = 0  # rows naming an existing file that does not hold the read
    records_without_row_ids: list[str] = field(default_factory=list)  # at most max_listed
    rows_without_read_ids: list[str] = field(default_factory=list)
    duplicated_row_ids: list[str] = field(default_factory=list)
    wrong_file_ids: list[str] = field(default_factory=list)
    dangling_files: dict[str, int] = field(default_factory=dict)  # file name -> rows
    errors: dict[str, str] = field(default_factory=dict)  # summary path -> problem

    @property
    def ok(self) -> bool:
        return not (
            self.records_without_row
            or self.rows_without_read
            or self.duplicated_rows
            or self.dangling_rows
            or self.wrong_file_rows
            or self.errors
        )


@dataclass
class RunReport(YieldCounts):
    """A run folder's yield, per barcode, and its summary check (None: no summary)."""

    run_folder: str = "."  # OUTPUT-relative; "." for OUTPUT itself (and the legacy layout)
    barcodes: list[BarcodeReport] = field(default_factory=list)
    summary: SummaryCheck | None = None


@dataclass
class VerifyReport:
    input: str
    output: str
    layout: str = "empty"  # legacy, minknow, mixed or empty: where read files were found
    pod5_files: int = 0  # complete pod5 files found under INPUT
    input_reads: int = 0  # distinct read ids in them
    read_files: int = 0  # BAM/SAM/FASTQ files under OUTPUT
    records: int = 0  # their records
    bases: int = 0
    formats: dict[str, int] = field(default_factory=dict)  # files per format
    missing: int = 0  # input reads without a record (quarantined files excepted)
    filtered: int = 0  # reads without a record that the basecaller filtered (listed)
    duplicated: int = 0  # reads present more than once
    extra_records: int = 0  # copies beyond the first of each duplicated read
    unexpected: int = 0  # read ids in the output but in no pod5
    unexpected_ids: list[str] = field(default_factory=list)
    unreadable: int = 0  # pod5 files that could not be read and are not quarantined
    input_duplicates: int = 0  # read ids found in more than one pod5 (reported, not failed)
    incomplete: list[str] = field(default_factory=list)  # pod5 still being written
    quarantined: dict[str, str] = field(default_factory=dict)  # relpath -> reason
    duplicate_locations: dict[str, list[str]] = field(default_factory=dict)  # id -> files
    read_errors: dict[str, str] = field(default_factory=dict)  # read file path -> problem
    summary_files: int = 0
    summary_rows: int = 0
    summary_problems: int = 0  # run folders whose summary does not match their records
    runs: list[RunReport] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)
    max_listed: int = 100

    # The names of the FASTQ-only days, kept for callers (bcm report, the chaos driver).
    @property
    def fastq_files(self) -> int:
        return self.read_files

    @property
    def fastq_records(self) -> int:
        return self.records

    @property
    def fastq_errors(self) -> dict[str, str]:
        return self.read_errors

    @property
    def ok(self) -> bool:
        """Every read there exactly once, summaries matching, nothing that could not be read."""
        return not (
            self.missing
            or self.duplicated
            or self.unexpected
            or self.unreadable
            or self.read_errors
            or self.summary_problems
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ok"] = self.ok
        out["fastq_files"] = self.read_files
        out["fastq_records"] = self.records
        out["fastq_errors"] = self.read_errors
        return out


# -- the OUTPUT tree -------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFile:
    """A read file under OUTPUT and where it sits."""

    path: str
    rel: str  # OUTPUT-relative, '/'-separated
    run_folder: str  # "." for OUTPUT itself
    status: str | None  # "pass", "fail", or None outside a pass/fail folder
    barcode: str | None  # the folder below the pass/fail folder, if any


@dataclass
class OutputTree:
    read_files: list[OutputFile] = field(default_factory=list)
    summaries: dict[str, list[str]] = field(default_factory=dict)  # run folder -> paths
    filtered_lists: list[str] = field(default_factory=list)  # `filtered_reads_<job>.txt`

    @property
    def layout(self) -> str:
        tops = {f.rel.split("/")[0] for f in self.read_files}
        legacy = bool(tops & set(LEGACY_SUBDIRS))
        minknow = bool(self.summaries) or bool(tops - set(LEGACY_SUBDIRS))
        if legacy and minknow:
            return "mixed"
        return "legacy" if legacy else "minknow" if minknow else "empty"


def is_skipped_name(name: str) -> bool:
    """bcmanager's own folders and hidden names, which verify does not read."""
    return name.startswith(".") or name in SKIPPED_NAMES or bool(SKIPPED_DIR.match(name))


def place_of(rel: str) -> tuple[str, str | None, str | None]:
    """(run folder, pass/fail, barcode) of an OUTPUT-relative read file path.

    `<run>/{bam,fastq}_{pass,fail}/[<barcode>/]<name>` (minknow) or `{pass,fail}/<name>`
    (legacy, run folder "."); a file in no pass/fail folder belongs to its own folder.
    """
    folders = rel.split("/")[:-1]
    for i in range(len(folders) - 1, -1, -1):
        found = _STATUS_DIR.match(folders[i])
        if found:
            below = folders[i + 1 :]
            return "/".join(folders[:i]) or ".", found.group(1), below[0] if below else None
    return "/".join(folders) or ".", None, None


def scan_output_tree(output: Path) -> OutputTree:
    """Every read file and summary file under OUTPUT, in either layout (sorted)."""
    tree = OutputTree()
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(output, rel_dir)))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if is_skipped_name(entry.name) or (not rel_dir and entry.name == TREE_DIR):
                continue  # bcmanager's own, or other generations' trees
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    continue
                if not entry.is_file():
                    continue
            except OSError:
                continue
            if entry.name.endswith(READ_SUFFIXES):
                run, status, barcode = place_of(rel)
                tree.read_files.append(OutputFile(entry.path, rel, run, status, barcode))
            elif _SUMMARY.match(entry.name):
                tree.summaries.setdefault(rel_dir or ".", []).append(entry.path)
            elif FILTERED_LIST.match(entry.name):
                tree.filtered_lists.append(entry.path)
    tree.read_files.sort(key=lambda f: f.rel)
    for paths in tree.summaries.values():
        paths.sort()
    return tree


def output_read_files(output: Path) -> list[Path]:
    """The read files (BAM, SAM, FASTQ, FASTQ.gz) under OUTPUT in either layout."""
    return [Path(f.path) for f in scan_output_tree(Path(output)).read_files]


# -- workers (run in a process pool) ---------------------------------------------------


def _pod5_ids(root: str, relpaths: Sequence[str]) -> list[tuple[str, np.ndarray | None, str]]:
    """(relpath, read ids, error) for each file."""
    import pod5

    out: list[tuple[str, np.ndarray | None, str]] = []
    for rel in relpaths:
        try:
            with pod5.Reader(os.path.join(root, rel)) as reader:
                ids = raw_ids(reader)
            out.append((rel, ids, ""))
        except Exception as exc:  # pod5 raises RuntimeError, OSError, arrow errors...
            out.append((rel, None, f"{type(exc).__name__}: {exc}"))
    return out


def _scan_read_files(paths: Sequence[str]) -> list[ReadFileScan]:
    return [scan_read_file(p) for p in paths]


@dataclass
class SummaryScan:
    """One summary file: each row's read id (UUID rows) and the file it names."""

    path: str
    rows: int
    ids: np.ndarray  # S16 read id of each UUID row
    name_of_row: np.ndarray  # int32 index into `names`, per UUID row
    names: list[str]  # file names the rows name (filename_bam, else filename_fastq)
    odd: list[str]  # rows whose read id is not a UUID
    error: str = ""


def scan_summary(path: str) -> SummaryScan:
    """Read a summary's read_id and file name columns (any column order, tab-separated)."""
    ids = bytearray()
    name_of_row: list[int] = []
    names: dict[str, int] = {}
    odd: list[str] = []
    rows = 0
    error = ""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
            if "read_id" not in header:
                error = "no read_id column in the header"
            else:
                col_id = header.index("read_id")
                col_bam = header.index("filename_bam") if "filename_bam" in header else None
                col_fq = header.index("filename_fastq") if "filename_fastq" in header else None
                width = len(header)
                for number, line in enumerate(fh, start=2):
                    cells = line.rstrip("\r\n").split("\t")
                    if len(cells) != width:
                        if cells == [""]:
                            continue
                        error = f"line {number}: {len(cells)} fields, the header has {width}"
                        break
                    rows += 1
                    rid = cells[col_id]
                    name = (cells[col_bam] if col_bam is not None else "") or (
                        cells[col_fq] if col_fq is not None else ""
                    )
                    if UUID_STR.fullmatch(rid):
                        ids += bytes.fromhex(rid.replace("-", ""))
                        name_of_row.append(names.setdefault(name, len(names)))
                    else:
                        odd.append(rid)
    except (OSError, UnicodeDecodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return SummaryScan(
        path,
        rows,
        np.frombuffer(bytes(ids), dtype=ID_DTYPE),
        np.array(name_of_row, dtype=np.int32),
        list(names),
        odd,
        error,
    )


def _scan_summaries(paths: Sequence[str]) -> list[SummaryScan]:
    return [scan_summary(p) for p in paths]


# -- the read-id reader the tests share ------------------------------------------------


def output_read_ids(output_dir: Path, *, workers: int | None = 0) -> Counter[str]:
    """How many times each read is present in OUTPUT (either layout): {read id: copies}.

    Every record of every BAM/SAM/FASTQ/FASTQ.gz file outside bcmanager's own folders;
    split pieces count for their parent (see `read_copies`), so a read present exactly
    once counts 1. Ids that are not UUIDs are counted per record.
    `workers`: reading processes (0: in this process, the default).
    """
    paths = [str(p) for p in output_read_files(Path(output_dir))]
    tasks: list[tuple[Callable, tuple]] = [(_scan_read_files, ([p],)) for p in paths]
    scans: list[ReadFileScan] = []
    with _pool(workers, len(tasks), len(tasks)) as pool:
        for result in _run_tasks(tasks, pool):
            scans.extend(result)
    parents, copies = copies_over(scans)
    counts: Counter[str] = Counter(
        {as_uuid(p): int(c) for p, c in zip(parents, copies, strict=True)}
    )
    for scan in scans:
        counts.update(scan.odd)
    return counts


# -- the check -------------------------------------------------------------------------


@contextmanager
def _pool(workers: int | None, units: int, tasks: int) -> Iterator[Executor | None]:
    """A process pool when it pays off (enough files and workers), else None."""
    n = (os.cpu_count() or 1) if workers is None else workers
    if n <= 1 or units < _INLINE_BELOW or not tasks:
        yield None
        return
    pool = ProcessPoolExecutor(
        max_workers=min(n, tasks), mp_context=multiprocessing.get_context("forkserver")
    )
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def verify_run(
    input_dir: Path,
    output_dir: Path,
    *,
    workers: int | None = None,
    max_listed: int = 100,
    progress: Progress | None = None,
    generation: str | None = None,
) -> VerifyReport:
    """Check that OUTPUT holds every read of INPUT exactly once (see the module docstring).

    `workers`: processes reading files (default: one per CPU; 0 or 1: in this process).
    `max_listed`: read ids listed per file and category (the counts are always exact).
    `progress(done, total)` is called as files are read. `generation`: the name of the
    model generation whose tree to check (default: the tree at OUTPUT's root).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    layout = Layout(input_dir, output_dir)
    root = generation_root(layout, generation)
    report = VerifyReport(str(input_dir), str(output_dir / root), max_listed=max_listed)
    report.quarantined = layout.read_quarantine_list(root)
    output_dir = output_dir / root

    pod5_rel: list[str] = []
    for rel in sorted(walk_pod5(input_dir)):
        if is_complete_pod5(input_dir / rel):
            pod5_rel.append(rel)
        else:
            report.incomplete.append(rel)
    tree = scan_output_tree(output_dir)
    report.layout = tree.layout
    summary_paths = [p for paths in tree.summaries.values() for p in paths]
    report.pod5_files = len(pod5_rel)
    report.read_files = len(tree.read_files)
    report.summary_files = len(summary_paths)
    total = len(pod5_rel) + len(tree.read_files) + len(summary_paths)
    done = 0
    if progress is not None:
        progress(0, total)

    pod5_results: dict[str, tuple[np.ndarray | None, str]] = {}
    scans: dict[str, ReadFileScan] = {}
    summaries: dict[str, SummaryScan] = {}
    tasks: list[tuple[Callable, tuple]] = [
        (_pod5_ids, (str(input_dir), pod5_rel[i : i + _POD5_CHUNK]))
        for i in range(0, len(pod5_rel), _POD5_CHUNK)
    ]
    tasks += [(_scan_summaries, ([p],)) for p in summary_paths]  # the big ones first
    tasks += [(_scan_read_files, ([f.path],)) for f in tree.read_files]
    with _pool(workers, total, len(tasks)) as pool:
        for result in _run_tasks(tasks, pool):
            for item in result:
                if isinstance(item, ReadFileScan):
                    scans[item.path] = item
                elif isinstance(item, SummaryScan):
                    summaries[item.path] = item
                else:
                    rel, ids, err = item
                    pod5_results[rel] = (ids, err)
                done += 1
                if progress is not None:
                    progress(done, total)
    ordered = [scans[f.path] for f in tree.read_files]
    _compare(report, pod5_rel, pod5_results, ordered, filtered_ids(tree.filtered_lists))
    _yields_and_summaries(report, tree, ordered, summaries, output_dir)
    return report


def filtered_ids(paths: Sequence[str]) -> np.ndarray:
    """The read ids that basecallers filtered on purpose, from the lists engines leave
    beside a run's outputs (`bcmanager.output.check`); lines that are not UUIDs skipped."""
    ids = bytearray()
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    rid = line.strip()
                    if UUID_STR.fullmatch(rid):
                        ids += bytes.fromhex(rid.replace("-", ""))
        except OSError as exc:
            log.warning("%s: cannot read the list of filtered reads (%s)", path, exc)
    return np.frombuffer(bytes(ids), dtype=ID_DTYPE)


def generation_root(layout: Layout, name: str | None) -> str:
    """The tree of generation `name` relative to OUTPUT ("" for the implicit one, or
    none given); ConfigError naming the generations OUTPUT holds for an unknown one."""
    if name is None or name == DEFAULT_NAME:
        return ""
    held = layout.generations_on_disk()
    for gen in held:
        if gen.name == name:
            return gen.output_root
    names = ", ".join([DEFAULT_NAME, *(g.name for g in held)])
    raise ConfigError(f"OUTPUT holds no generation {name!r}; it holds {names}")


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
    scans: list[ReadFileScan],
    filtered: np.ndarray,
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
    own, present, split_at, where = concat_scans(scans)
    report.records = sum(s.records for s in scans)
    report.bases = sum(s.bases for s in scans)
    report.formats = dict(sorted(Counter(s.fmt or "unreadable" for s in scans).items()))
    report.read_errors = {s.path: s.error for s in scans if s.error}
    odd = Counter(rid for s in scans for rid in s.odd)

    parents, copies = read_copies(own, present, split_at)
    dup_reads = parents[copies > 1]
    odd_dups = {rid: n for rid, n in odd.items() if n > 1}
    report.duplicated = len(dup_reads) + len(odd_dups)
    report.extra_records = int((copies[copies > 1] - 1).sum())
    report.extra_records += sum(n - 1 for n in odd_dups.values())
    dup_rows = np.flatnonzero(np.isin(present, dup_reads[:limit]))
    for rid, rows in _groups(present[dup_rows], dup_rows, limit):
        report.duplicate_locations[as_uuid(rid)] = [scans[where[r]].path for r in rows]
    for rid in list(odd_dups)[: max(0, limit - len(report.duplicate_locations))]:
        report.duplicate_locations[rid] = [s.path for s in scans for r in s.odd if r == rid]

    unexpected = parents[~np.isin(parents, in_unique)]
    report.unexpected = len(unexpected) + len(odd)
    report.unexpected_ids = [as_uuid(r) for r in unexpected[:limit]]
    report.unexpected_ids += list(odd)[: max(0, limit - len(report.unexpected_ids))]

    # Per input file: missing (unless quarantined) and duplicated reads.
    is_present = np.isin(in_ids, parents)
    in_quarantine = np.isin(in_owner, np.array(quarantined_idx, dtype=np.int32))
    missing_mask = ~is_present & ~in_quarantine
    filtered_mask = missing_mask & np.isin(in_ids, filtered)
    report.filtered = len(np.unique(in_ids[filtered_mask]))
    missing_mask &= ~filtered_mask
    duplicated_mask = np.isin(in_ids, dup_reads)
    report.missing = len(np.unique(in_ids[missing_mask]))
    reads_per_file = np.bincount(in_owner, minlength=len(pod5_rel))
    for mask, attr in ((missing_mask, "missing"), (duplicated_mask, "duplicated")):
        rows = np.flatnonzero(mask)
        for owner, hit in _groups(in_owner[rows], rows, None):
            entry = file_report(pod5_rel[int(owner)])
            setattr(entry, attr, len(hit))
            getattr(entry, f"{attr}_ids").extend(as_uuid(r) for r in in_ids[hit[:limit]])
            if attr == "missing":
                first_row = int(np.searchsorted(in_owner, owner, side="left"))
                entry.missing_ranges = _ranges(np.sort(hit) - first_row, limit)
    for idx, rel in enumerate(pod5_rel):
        if rel in by_file and not by_file[rel].reads and idx < len(reads_per_file):
            by_file[rel].reads = int(reads_per_file[idx])
    report.files = sorted(by_file.values(), key=lambda f: f.path)


def _yields_and_summaries(
    report: VerifyReport,
    tree: OutputTree,
    scans: list[ReadFileScan],
    summaries: dict[str, SummaryScan],
    output_dir: Path,
) -> None:
    """Counts per run folder and barcode; each summary's rows against its run's records."""
    runs: dict[str, RunReport] = {}
    barcodes: dict[tuple[str, str | None], BarcodeReport] = {}
    for file, scan in zip(tree.read_files, scans, strict=True):
        run = runs.setdefault(file.run_folder, RunReport(run_folder=file.run_folder))
        run.add(file.status, scan.records, scan.bases)
        key = (file.run_folder, file.barcode)
        if key not in barcodes:
            barcodes[key] = BarcodeReport(barcode=file.barcode)
            run.barcodes.append(barcodes[key])
        barcodes[key].add(file.status, scan.records, scan.bases)
    for folder in tree.summaries:
        runs.setdefault(folder, RunReport(run_folder=folder))
    for run in runs.values():
        run.barcodes.sort(key=lambda b: (b.barcode is None, b.barcode or ""))
    report.runs = [runs[k] for k in sorted(runs)]
    if not tree.summaries:
        return

    # File names as ints: a record's file, a row's file.
    names: dict[str, int] = {}
    file_name = np.array(
        [names.setdefault(f.rel.rsplit("/", 1)[-1], len(names)) for f in tree.read_files],
        dtype=np.int32,
    )
    run_index = {folder: i for i, folder in enumerate(sorted(runs))}
    file_run = np.array([run_index[f.run_folder] for f in tree.read_files], dtype=np.int32)
    plain_fastq = np.array([s.fmt == "fastq" for s in scans], dtype=bool)
    own, _, _, where = concat_scans(scans)
    rec_run = file_run[where] if len(where) else np.empty(0, np.int32)
    order = np.argsort(rec_run, kind="stable")
    bounds = np.searchsorted(rec_run[order], np.arange(len(run_index) + 1))
    for folder, paths in sorted(tree.summaries.items()):
        r = run_index[folder]
        rows = order[bounds[r] : bounds[r + 1]]
        check = _check_summary(
            [summaries[p] for p in paths],
            own[rows],
            file_name[where[rows]],
            plain_fastq[where[rows]],
            np.unique(file_name[file_run == r]),
            names,
            report.max_listed,
        )
        check.files = [os.path.relpath(p, output_dir).replace(os.sep, "/") for p in paths]
        runs[folder].summary = check
        report.summary_rows += check.rows
        report.summary_problems += 0 if check.ok else 1


def _keys(ids: np.ndarray, name_idx: np.ndarray) -> np.ndarray:
    """(read id, file name) pairs as one comparable 20-byte value each."""
    pairs = np.empty(len(ids), dtype=[("id", ID_DTYPE), ("name", "<i4")])
    pairs["id"] = ids
    pairs["name"] = name_idx
    return pairs.view("S20")


def _check_summary(
    scans: list[SummaryScan],
    rec_ids: np.ndarray,
    rec_names: np.ndarray,
    rec_plain: np.ndarray,
    existing: np.ndarray,
    names: dict[str, int],
    limit: int,
) -> SummaryCheck:
    """One run folder: its summary rows against its records (UUID ids)."""
    check = SummaryCheck()
    check.errors = {s.path: s.error for s in scans if s.error}
    check.rows = sum(s.rows for s in scans)
    row_ids = np.concatenate([s.ids for s in scans]) if scans else np.empty(0, ID_DTYPE)
    row_names = np.concatenate(
        [
            np.array([names.setdefault(n, len(names)) for n in s.names], dtype=np.int32)[
                s.name_of_row
            ]
            if s.names
            else np.empty(0, np.int32)
            for s in scans
        ]
    )
    odd = [rid for s in scans for rid in s.odd]
    by_index = {i: n for n, i in names.items()}

    # Rows: their file must exist in the run folder, their read id must be there once.
    dangling = ~np.isin(row_names, existing)
    check.dangling_rows = int(dangling.sum())
    hit_names, hit_counts = np.unique(row_names[dangling], return_counts=True)
    for idx, count in list(zip(hit_names, hit_counts, strict=True))[:limit]:
        check.dangling_files[by_index[int(idx)]] = int(count)
    ids_unique, ids_counts = np.unique(row_ids, return_counts=True)
    doubled = ids_unique[ids_counts > 1]
    check.duplicated_rows = len(doubled)
    check.duplicated_row_ids = [as_uuid(r) for r in doubled[:limit]]
    no_read = ~np.isin(row_ids, rec_ids)
    check.rows_without_read = int(no_read.sum()) + len(odd)
    check.rows_without_read_ids = [as_uuid(r) for r in row_ids[no_read][:limit]]
    check.rows_without_read_ids += odd[: max(0, limit - len(check.rows_without_read_ids))]
    wrong = ~no_read & ~dangling & ~np.isin(_keys(row_ids, row_names), _keys(rec_ids, rec_names))
    check.wrong_file_rows = int(wrong.sum())
    check.wrong_file_ids = [as_uuid(r) for r in row_ids[wrong][:limit]]

    # Records: each has a row, unless its file is a plain FASTQ that no row names.
    has_row = np.isin(rec_ids, row_ids)
    named = np.isin(rec_names, row_names)
    legacy = ~has_row & rec_plain & ~named
    without = ~has_row & ~legacy
    check.matched = int(np.isin(_keys(rec_ids, rec_names), _keys(row_ids, row_names)).sum())
    check.legacy_records = int(legacy.sum())
    check.records_without_row = int(without.sum())
    check.records_without_row_ids = [as_uuid(r) for r in rec_ids[without][:limit]]
    return check


def _ranges(positions: np.ndarray, limit: int) -> list[list[int]]:
    """Sorted positions as [first, last] runs of consecutive ones; at most `limit` runs."""
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = np.r_[positions[0], positions[breaks + 1]]
    ends = np.r_[positions[breaks], positions[-1]]
    return [[int(a), int(b)] for a, b in zip(starts[:limit], ends[:limit], strict=True)]


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
