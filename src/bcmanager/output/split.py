"""A job's basecaller output split into the MinKNOW tree, with its summary rows.

The engine runs this on its GPU node before it reports DONE, so the manager's merge
stays a handful of renames. Every read of every BAM/FASTQ file under the basecaller's
output folder goes to exactly one file::

    <dest>/<run folder>/bam_pass/<barcode>/<flowcell>_pass_<barcode>_<prot8>_<run8>_<job>.bam
    <dest>/<run folder>/sequencing_summary_<flowcell>_<prot8>_<run8>_<job>.txt

BAM stays BAM with every tag, under the basecaller's header with only that run's read
groups; FASTQ becomes gzipped FASTQ with its header tags. Pass/fail is the read's mean
qscore (`qs`) against `min_qscore`. Files (summaries too) are written under
`<dest>/.filing/` and renamed into place when all are complete, so a repeated split
overwrites the same names.

`Splitter` takes reads one at a time, so the engine can file a basecaller's stream as
it is written (`bcmanager.output.stream`); `split_output` splits finished files.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pysam

from bcmanager.output import naming
from bcmanager.output.naming import UNCLASSIFIED, Format, RunIds
from bcmanager.output.origin import Pod5Origin, by_run_id
from bcmanager.output.summary import SummaryRow, summary_row, write_summary
from bcmanager.records import (
    Record,
    barcode_kit_of,
    barcode_of,
    detect_format,
    fastq_text,
    iter_alignment_records,
    iter_fastq_records,
    open_alignments,
    qscore_of,
    read_files,
)

log = logging.getLogger("bcmanager.output.split")

_BARCODE_NAME = re.compile(r"barcode\d+")

MIN_QSCORE_BY_SPEED = {"fast": 8, "hac": 9, "sup": 10}  # MinKNOW's defaults per model
_SPEED = re.compile(r"(?:^|[_,/@])(fast|hac|sup)(?:$|[_,@/])")
_DS_FIELD = re.compile(r"(\w+)=(\S*)")
_DS_RUNID = re.compile(r"(?:^|\s)runid=(.*?)(?=\s\w+=|$)")
STAGING_DIR = ".filing"  # partial outputs, under the destination


def _compression_threads() -> int:
    """BGZF compression threads per BAM written: deflate is nearly all of filing's time
    (0.7 of 0.73 s for 3,500 reads here), and the GPU node has cores to spare while its
    next batch basecalls. The cores this process may use (a Slurm job's), at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


# A BAM output gets compression threads only once its reads come to this many bytes
# (about what one thread deflates in the time a pool takes to start and stop): htslib's
# thread pool costs ~20 ms of waiting per file, which a batch of many small outputs (a
# file per barcode and pass/fail, per run) paid one after another: 280 outputs took
# 6.7 s to file, 1.4 s now. Smaller outputs are held back and written at the end without
# threads. Held back reads past HELD_BYTES in all mean a large batch of many outputs (a
# barcode kit's): the largest output is then opened with threads, as a large one is.
THREADED_BAM_BYTES = 1 << 20
HELD_BYTES = 64 << 20


class SplitError(Exception):
    """The basecaller output cannot be split (a read of an unknown pod5 or run, a bad file)."""


def default_min_qscore(model: str) -> int:
    """MinKNOW's pass threshold for a model: fast 8, hac 9, sup 10.

    `model` is a Dorado model: a speed (`hac`), a complex (`sup@v5.0.0,6mA`), a model
    name (`dna_r10.4.1_e8.2_400bps_hac@v5.2.0`) or a path to one. ValueError if the
    model's name tells no speed (then give `--min-qscore`).
    """
    name = model.rstrip("/").rsplit("/", 1)[-1].lower()
    found = _SPEED.search(name)
    if not found:
        raise ValueError(f"cannot tell fast, hac or sup from model {model!r}: give --min-qscore")
    return MIN_QSCORE_BY_SPEED[found.group(1)]


@dataclass(frozen=True)
class OutputKey:
    """Which file of the job a read goes to."""

    run_folder: str
    ids: RunIds
    fmt: Format
    passed: bool
    barcode: str | None


@dataclass
class SplitResult:
    """What a split wrote: DEST-relative paths and their read (or row) counts."""

    files: dict[str, int] = field(default_factory=dict)
    summaries: dict[str, int] = field(default_factory=dict)
    rows: list[SummaryRow] = field(default_factory=list)

    @property
    def reads(self) -> int:
        return sum(self.files.values())


def output_path(key: OutputKey, job_id: int) -> str:
    """DEST-relative path of the file for `key` (the final OUTPUT-relative path too)."""
    return naming.reads_path(key.run_folder, key.ids, key.fmt, key.passed, key.barcode, job_id)


def summary_path(origin: Pod5Origin, job_id: int) -> str:
    """DEST-relative path of a job's summary rows of one run."""
    return naming.join(origin.run_folder, naming.summary_fragment_name(origin.ids, job_id))


class _Origins:
    """Finds a record's pod5 by its `fn` tag, else by its run id (Dorado's FASTQ has no `fn`)."""

    def __init__(self, origins: Mapping[str, Pod5Origin]) -> None:
        self.by_name = dict(origins)
        self.by_run = by_run_id(self.by_name)

    def of(self, record: Record) -> Pod5Origin:
        name = record.tags.get("fn")
        if isinstance(name, str) and name in self.by_name:
            return self.by_name[name]
        run_id = _run_id_of(record)
        if run_id in self.by_run:
            return self.by_run[run_id]
        if len(self.by_run) == 1 and not isinstance(name, str):
            return next(iter(self.by_run.values()))
        raise SplitError(
            f"read {record.read_id}: pod5 {name!r} / run {run_id!r} is not in this job"
        )


def _run_id_of(record: Record) -> str:
    """The run id from the FASTQ `DS` tag (`runid=...`) or the read group (`<runid>_<model>`)."""
    ds = record.tags.get("DS")
    if isinstance(ds, str):
        fields = dict(_DS_FIELD.findall(ds))
        if fields.get("runid"):
            return fields["runid"]
    rg = record.tags.get("RG")
    return rg.split("_", 1)[0] if isinstance(rg, str) else ""


def read_group_strides(header: Mapping) -> dict[str, int]:
    """The model stride per read group, from its DS (`model_stride=`), for summaries."""
    strides = {}
    for rg in header.get("RG", []):
        fields = dict(_DS_FIELD.findall(str(rg.get("DS", ""))))
        if fields.get("model_stride", "").isdigit():
            strides[rg["ID"]] = int(fields["model_stride"])
    return strides


def _model_stride(record: Record, strides: Mapping[str, int]) -> int:
    ds = record.tags.get("DS")
    if isinstance(ds, str):
        value = dict(_DS_FIELD.findall(ds)).get("model_stride", "")
        if value.isdigit():
            return int(value)
    return strides.get(str(record.tags.get("RG", "")), 0)


def merged_header(paths: list[Path]) -> dict:
    """One header for all BAM/SAM sources: the first's @HD, every distinct @PG and @RG,
    and the reference's @SQ lines when they are aligned (SplitError when two sources are
    aligned to different references: their records' reference ids would not agree)."""
    merged: dict = {}
    for path in paths:
        with open_alignments(path) as handle:
            header = handle.header.to_dict()
        merged.setdefault("HD", header.get("HD", {"VN": "1.6", "SO": "unknown"}))
        if header.get("SQ") and merged.setdefault("SQ", header["SQ"]) != header["SQ"]:
            raise SplitError(f"{path}: aligned to another reference than the batch's others")
        for kind in ("PG", "RG"):
            known = {line.get("ID") for line in merged.get(kind, [])}
            for line in header.get(kind, []):
                if line.get("ID") not in known:
                    merged.setdefault(kind, []).append(line)
                    known.add(line.get("ID"))
        for comment in header.get("CO", []):
            if comment not in merged.setdefault("CO", []):
                merged["CO"].append(comment)
    return merged


def header_for_runs(header: Mapping, run_ids: set[str]) -> dict:
    """`header` with only the read groups of the runs `run_ids` (all of them if none
    matches)."""
    groups = header.get("RG", [])
    mine = [rg for rg in groups if _run_of_read_group(rg) in run_ids]
    restricted = {k: v for k, v in header.items() if k != "RG"}
    if mine or groups:
        restricted["RG"] = mine or list(groups)
    return restricted


def _run_of_read_group(rg: Mapping) -> str:
    """A read group's run id: its DS `runid=` (to the next ` key=`, so an id with a
    space stays whole), else its ID up to the first `_` (Dorado's `<runid>_<model>`)."""
    said = _DS_RUNID.search(str(rg.get("DS", "")))
    return said.group(1) if said else str(rg.get("ID", "")).split("_", 1)[0]


class _Writers:
    """One open output file per output name, in the staging folder until `publish`.

    Outputs are keyed by the name they will have (DEST-relative), never by the ids that
    lead to it: two keys that name one file (ids that differ where the name does not
    look) share one writer, never one staged file between two writers. Its header holds
    the read groups of every run of the job that the name stands for.

    With `hold_back`, a BAM's reads are held back until they make it large enough for
    compression threads (or until `close`, when it is written without them); without
    (a stream filed as it comes, with time to spare), every output is written at once
    on one thread."""

    def __init__(
        self,
        dest: Path,
        job_id: int,
        header: Mapping,
        runs_of_name: Callable[[OutputKey], set[str]],
        *,
        hold_back: bool,
    ) -> None:
        self.dest = dest
        self.staging = dest / STAGING_DIR
        self.job_id = job_id
        self.header = header
        self.runs_of_name = runs_of_name
        self.hold_back = hold_back
        self.open: dict[str, pysam.AlignmentFile | IO[bytes]] = {}
        self.partials: dict[str, Path] = {}
        self.counts: dict[str, int] = {}
        self.keys: dict[str, OutputKey] = {}  # the first key seen for each name
        self.held: dict[str, list[pysam.AlignedSegment]] = {}  # BAM records only
        self.held_bytes: dict[str, int] = {}
        self.held_total = 0
        self.staging.mkdir(exist_ok=True)  # in `dest`, which must exist

    def write(self, key: OutputKey, record: Record) -> str:
        rel = output_path(key, self.job_id)
        self.keys.setdefault(rel, key)
        handle = self.open.get(rel)
        if handle is not None:
            _write(handle, record)
        elif key.fmt == "bam" and self.hold_back:
            self._hold(rel, record)
        else:
            _write(self._open(rel, threads=1), record)
        if record.is_primary:  # a read counts once, however many alignments it has
            self.counts[rel] = self.counts.get(rel, 0) + 1
        return rel

    def _hold(self, rel: str, record: Record) -> None:
        assert record.segment is not None
        self.held.setdefault(rel, []).append(record.segment)  # not its strings: memory
        size = len(record.sequence) + len(record.quality)
        self.held_bytes[rel] = self.held_bytes.get(rel, 0) + size
        self.held_total += size
        if self.held_bytes[rel] >= THREADED_BAM_BYTES:
            self._release(rel, _compression_threads())
        elif self.held_total >= HELD_BYTES:
            largest = max(self.held_bytes, key=self.held_bytes.__getitem__)
            self._release(largest, _compression_threads())

    def _release(self, rel: str, threads: int) -> None:
        """Open `rel`'s output and write the reads held back for it."""
        handle = self._open(rel, threads)
        assert isinstance(handle, pysam.AlignmentFile)
        for segment in self.held.pop(rel):
            handle.write(segment)
        self.held_total -= self.held_bytes.pop(rel)

    def stage(self, rel: str) -> Path:
        """Where the file for DEST-relative `rel` is written until `publish`: flat in the
        staging folder, which is never made here (a job folder moved aside while its
        stream is filed, its lease lost, is not made again). One staged file per name:
        asking twice is a bug that would put two writers on one file."""
        if rel in self.partials:
            raise SplitError(f"{rel}: staged twice")
        partial = self.staging / f"{len(self.partials)}-{rel.rsplit('/', 1)[-1]}"
        self.partials[rel] = partial
        return partial

    def _open(self, rel: str, threads: int) -> pysam.AlignmentFile | IO[bytes]:
        key = self.keys[rel]
        partial = self.stage(rel)
        handle: pysam.AlignmentFile | IO[bytes]
        if key.fmt == "bam":
            runs = self.runs_of_name(key)
            header = pysam.AlignmentHeader.from_dict(header_for_runs(self.header, runs))
            handle = pysam.AlignmentFile(str(partial), "wb", header=header, threads=threads)
        else:
            # mtime 0 and no name: the same reads give the same bytes, whenever written.
            # The raw file is closed in close(), after the gzip stream.
            raw = open(partial, "wb")  # noqa: SIM115
            handle = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        self.open[rel] = handle
        return handle

    def close(self) -> None:
        for rel in list(self.held):
            self._release(rel, threads=1)
        self._close_handles()

    def _close_handles(self) -> None:
        for handle in self.open.values():
            handle.close()
            if isinstance(handle, gzip.GzipFile) and handle.fileobj is not None:
                handle.fileobj.close()
        self.open.clear()

    def publish(self) -> None:
        for rel, partial in self.partials.items():
            with open(partial, "rb") as fh:
                os.fsync(fh.fileno())
            final = self.dest / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        """Drop everything written. Closing a handle flushes it, which fails on the very
        full disk that made the split give up: nothing of it is kept, so that is no error."""
        self.held.clear()
        self.held_bytes.clear()
        self.held_total = 0
        for handle in self.open.values():
            with contextlib.suppress(OSError):
                handle.close()
                if isinstance(handle, gzip.GzipFile) and handle.fileobj is not None:
                    handle.fileobj.close()
        self.open.clear()
        shutil.rmtree(self.staging, ignore_errors=True)


def _write(handle: pysam.AlignmentFile | IO[bytes], record: Record) -> None:
    if isinstance(handle, pysam.AlignmentFile):
        assert record.segment is not None
        handle.write(record.segment)
    else:
        handle.write(fastq_text(record).encode("utf-8"))


def iter_source(paths: list[Path]) -> Iterator[tuple[Format, Record, dict[str, int]]]:
    """(format, record, read group strides) for every record of the source files."""
    for path in paths:
        kind = detect_format(path)
        if kind in ("bam", "sam"):
            with open_alignments(path) as handle:
                strides = read_group_strides(handle.header.to_dict())
                for record in iter_alignment_records(handle, primary_only=False):
                    yield "bam", record, strides
        elif kind == "fastq":
            for record in iter_fastq_records(path):
                yield "fastq", record, {}
        else:
            raise SplitError(f"{path}: neither BAM, SAM nor FASTQ")


def classify(
    record: Record,
    origin: Pod5Origin,
    fmt: Format,
    min_qscore: float,
    barcoding: bool,
    groups: Mapping[str, Mapping[str, str]] | None = None,
) -> OutputKey:
    """The output file a read belongs in. With a sample sheet, a classified read's barcode
    folder and name part is its alias (`groups`: the header's @RG lines by id)."""
    barcode = (barcode_of_read(record, groups or {}) or UNCLASSIFIED) if barcoding else None
    if barcode is not None and barcode != UNCLASSIFIED:
        barcode = alias_of(record, groups or {}) or barcode
    passed = qscore_of(record) >= min_qscore
    return OutputKey(origin.run_folder, origin.ids, fmt, passed, barcode)


def read_groups(header: Mapping) -> dict[str, dict[str, str]]:
    """The header's @RG lines by id."""
    return {str(rg["ID"]): {k: str(v) for k, v in rg.items()} for rg in header.get("RG", [])}


def _group_of(record: Record, groups: Mapping[str, Mapping[str, str]]) -> Mapping[str, str]:
    return groups.get(str(record.tags.get("RG", "")), {})


def barcode_of_read(record: Record, groups: Mapping[str, Mapping[str, str]]) -> str | None:
    """A read's barcode name (`barcode01`). With a sample sheet Dorado writes the alias in
    the read's `BC` and read group id, and the barcode in its @RG line's `SM`."""
    sm = _group_of(record, groups).get("SM", "")
    if _BARCODE_NAME.fullmatch(sm):
        return sm
    return barcode_of(record)


def alias_of(record: Record, groups: Mapping[str, Mapping[str, str]]) -> str | None:
    """A read's barcode alias: its own `al` tag (FASTQ), else its @RG line's `al`."""
    own = record.tags.get("al")
    if isinstance(own, str) and own:
        return own
    return _group_of(record, groups).get("al") or None


def barcode_kit_of_read(record: Record, groups: Mapping[str, Mapping[str, str]]) -> str | None:
    """A classified read's barcode kit: its @RG line's `bk`, else from its `BC` tag."""
    return _group_of(record, groups).get("bk") or barcode_kit_of(record)


class Splitter:
    """Reads taken one at a time into their output files and summary rows; `finish`
    writes the summaries and renames every output into place, `discard` leaves nothing.

    `header`: the basecaller's BAM header (every run's read groups; {} for FASTQ).
    `hold_back`: small BAM outputs are held back so that large ones alone get
    compression threads (a batch's finished files); a stream filed as it comes writes
    each read at once on one thread."""

    def __init__(
        self,
        dest: Path,
        origins: Mapping[str, Pod5Origin],
        header: Mapping,
        *,
        job_id: int,
        min_qscore: float,
        barcoding: bool,
        hold_back: bool = True,
    ) -> None:
        self.dest = dest
        self.job_id = job_id
        self.min_qscore = min_qscore
        self.barcoding = barcoding
        self.finder = _Origins(origins)
        self.writers = _Writers(dest, job_id, header, self._runs_named_like, hold_back=hold_back)
        self.rows_by_summary: dict[str, list[SummaryRow]] = {}
        self.groups = read_groups(header)
        self.aligned = bool(header.get("SQ"))
        # An aligned read's other records go where its primary went: the key of each
        # primary filed, and the others seen before their primary (minimap2 writes the
        # primary first, but nothing here depends on it).
        self._keys: dict[str, OutputKey] = {}
        self._waiting: dict[str, list[Record]] = {}

    def _runs_named_like(self, key: OutputKey) -> set[str]:
        """The run ids of the job's pod5 files whose outputs share `key`'s name."""
        name = naming.reads_file_name(key.ids, key.fmt, key.passed, key.barcode, self.job_id)
        return {
            o.ids.run_id
            for o in self.finder.by_name.values()
            if o.run_folder == key.run_folder
            and naming.reads_file_name(o.ids, key.fmt, key.passed, key.barcode, self.job_id) == name
        } | {key.ids.run_id}

    def add(self, fmt: Format, record: Record, strides: Mapping[str, int]) -> None:
        """File one record (SplitError if its pod5 or run is not the job's). A read's
        secondary and supplementary alignments go into its primary record's file and
        make no summary row."""
        if not record.is_primary:
            key = self._keys.get(record.read_id)
            if key is None:
                self._waiting.setdefault(record.read_id, []).append(record)
            else:
                self.writers.write(key, record)
            return
        origin = self.finder.of(record)
        key = classify(record, origin, fmt, self.min_qscore, self.barcoding, self.groups)
        rel = self.writers.write(key, record)
        if self.aligned:
            self._keys[record.read_id] = key
            for other in self._waiting.pop(record.read_id, ()):
                self.writers.write(key, other)
        row = summary_row(
            record,
            origin=origin,
            filename=rel.rsplit("/", 1)[-1],
            fmt=fmt,
            passed=key.passed,
            barcode=(barcode_of_read(record, self.groups) or UNCLASSIFIED)
            if self.barcoding
            else None,
            alias=key.barcode,
            kit=barcode_kit_of_read(record, self.groups),
            model_stride=_model_stride(record, strides),
            aligned=self.aligned,
        )
        self.rows_by_summary.setdefault(summary_path(origin, self.job_id), []).append(row)

    def _file_orphans(self) -> None:
        """Alignments whose primary record never came: filed by their own tags, as a read
        of their own would be (nothing the basecaller wrote is dropped)."""
        for records in self._waiting.values():
            for record in records:
                origin = self.finder.of(record)
                key = classify(record, origin, "bam", self.min_qscore, self.barcoding, self.groups)
                self.writers.write(key, record)
        self._waiting.clear()

    def finish(self) -> SplitResult:
        """Close the outputs, write the summary fragments, rename everything into place."""
        result = SplitResult()
        try:
            self._file_orphans()
            self.writers.close()
            result.files = dict(self.writers.counts)
            for rel, rows in sorted(self.rows_by_summary.items()):
                result.summaries[rel] = write_summary(self.writers.stage(rel), rows)
                result.rows.extend(rows)
        except BaseException:  # e.g. a full disk: nothing is renamed into place
            self.discard()
            raise
        self.writers.publish()
        log.info(
            "split %d read(s) into %d file(s) and %d summary fragment(s)",
            result.reads,
            len(result.files),
            len(result.summaries),
        )
        return result

    def discard(self) -> None:
        """Remove what was written: nothing is left under a final name."""
        self.writers.discard()
        self.rows_by_summary.clear()


def split_output(
    source: Path,
    dest: Path,
    origins: Mapping[str, Pod5Origin],
    *,
    job_id: int,
    min_qscore: float,
    barcoding: bool,
) -> SplitResult:
    """Split every read file under `source` into `dest` (see the module docstring).

    `origins` maps the pod5 names that reads carry in `fn` to their runs
    (`origin.job_origins`). `barcoding`: whether the basecaller classified barcodes
    (`--kit-name`); without it there is no barcode level. `dest` may be `source`
    itself: new files are only MinKNOW-named ones. SplitError on a read of an unknown
    pod5 or an unreadable file; then nothing is left under a final name.
    """
    paths = [p for p in read_files(source) if not _is_split_output(p, source)]
    alignment_paths = [p for p in paths if detect_format(p) in ("bam", "sam")]
    dest.mkdir(parents=True, exist_ok=True)
    splitter = Splitter(
        dest,
        origins,
        merged_header(alignment_paths),
        job_id=job_id,
        min_qscore=min_qscore,
        barcoding=barcoding,
    )
    try:
        for fmt, record, strides in iter_source(paths):
            splitter.add(fmt, record, strides)
    except BaseException:
        splitter.discard()
        raise
    return splitter.finish()


_OUTPUT_DIR = re.compile(r"^(bam|fastq)_(pass|fail)$")


def _is_split_output(path: Path, source: Path) -> bool:
    """Whether a file is one this module wrote (so `dest` may lie inside `source`)."""
    return any(_OUTPUT_DIR.match(part) for part in path.relative_to(source).parts[:-1])
