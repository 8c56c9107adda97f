"""The sequencing summary: one tab-separated row per read, as MinKNOW and Dorado write it.

Columns are those of ONT's sequencing summary specification that a basecaller knows,
in the order of `dorado basecaller --emit-summary` (Dorado 1.4, SummaryFileWriter):
MinKNOW's online file-name columns first (`filename_fastq`, `filename_bam`: the one
that does not apply is empty), then Dorado's basecalling, experiment and barcoding
columns. The set is fixed, whatever the format or kit, so that the rows of every job
of a run can be concatenated under one header (without a kit, `barcode_arrangement`
is `unclassified` and `barcode_kit` `unknown`; `alias` is the sample sheet's alias of the
barcode, else the barcode). An aligned output (its BAM header has @SQ lines) adds
Dorado's alignment columns (`ALIGNMENT_COLUMNS`), computed from each read's primary
record: `*` and -1 for an unmapped read. Left out: Dorado's `batch_id` (offline only),
poly(A) and duplex columns, and the barcode scores.

Values follow Dorado: `start_time` is seconds from the acquisition's start,
`template_start`/`template_duration` leave out the `ts` samples trimmed from the start,
`num_events_template` is the template samples over the model stride (0 if unknown),
floats have six decimals, `passes_filtering` is TRUE/FALSE.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import pysam

from bcmanager.output.naming import UNCLASSIFIED, Format
from bcmanager.output.origin import Pod5Origin
from bcmanager.records import Record, barcode_kit_of, qscore_of

COLUMNS: tuple[str, ...] = (
    "filename_fastq",
    "filename_bam",
    "filename_pod5",
    "parent_read_id",
    "read_id",
    "run_id",
    "channel",
    "mux",
    "minknow_events",
    "start_time",
    "duration",
    "passes_filtering",
    "template_start",
    "num_events_template",
    "template_duration",
    "sequence_length_template",
    "mean_qscore_template",
    "pore_type",
    "experiment_id",
    "sample_id",
    "end_reason",
    "alias",
    "barcode_arrangement",
    "barcode_kit",
)

ALIGNMENT_COLUMNS: tuple[str, ...] = (
    "alignment_genome",
    "alignment_genome_start",
    "alignment_genome_end",
    "alignment_strand_start",
    "alignment_strand_end",
    "alignment_direction",
    "alignment_length",
    "alignment_num_aligned",
    "alignment_num_correct",
    "alignment_num_insertions",
    "alignment_num_deletions",
    "alignment_num_substitutions",
    "alignment_mapq",
    "alignment_strand_coverage",
    "alignment_identity",
    "alignment_accuracy",
)

UNALIGNED: dict[str, str] = {
    "alignment_genome": "*",
    "alignment_genome_start": "-1",
    "alignment_genome_end": "-1",
    "alignment_strand_start": "-1",
    "alignment_strand_end": "-1",
    "alignment_direction": "*",
    "alignment_length": "0",
    "alignment_num_aligned": "0",
    "alignment_num_correct": "0",
    "alignment_num_insertions": "0",
    "alignment_num_deletions": "0",
    "alignment_num_substitutions": "0",
    "alignment_mapq": "0",
    "alignment_strand_coverage": "0.000000",
    "alignment_identity": "0.000000",
    "alignment_accuracy": "0.000000",
}

SummaryRow = dict[str, str]


def _f(value: float) -> str:
    return f"{value:.6f}"


def _int_tag(record: Record, key: str) -> int:
    value = record.tags.get(key)
    return int(value) if isinstance(value, int | float) else 0


def _start_seconds(record: Record, origin: Pod5Origin) -> float:
    """The read's `st` as seconds from the acquisition start (0 if absent or unreadable)."""
    value = record.tags.get("st")
    if not isinstance(value, str):
        return 0.0
    try:
        started = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if started.tzinfo is None:
        started = started.replace(tzinfo=origin.acquisition_start.tzinfo)
    return (started - origin.acquisition_start).total_seconds()


def summary_row(
    record: Record,
    *,
    origin: Pod5Origin,
    filename: str,
    fmt: Format,
    passed: bool,
    barcode: str | None,
    alias: str | None = None,
    kit: str | None = None,
    model_stride: int = 0,
    aligned: bool = False,
) -> SummaryRow:
    """The summary row of one read written to `filename` (a name, not a path); with
    `aligned`, its alignment columns too."""
    duration = float(record.tags.get("du") or 0.0)
    samples = _int_tag(record, "ns")
    trimmed = _int_tag(record, "ts")
    rate = samples / duration if duration > 0 else 0.0
    start = _start_seconds(record, origin)
    template_samples = max(0, samples - trimmed)
    arrangement = barcode or UNCLASSIFIED
    row = {
        "filename_fastq": filename if fmt == "fastq" else "",
        "filename_bam": filename if fmt == "bam" else "",
        "filename_pod5": origin.pod5_name,
        "parent_read_id": record.parent_read_id,
        "read_id": record.read_id,
        "run_id": origin.ids.run_id,
        "channel": str(_int_tag(record, "ch")),
        "mux": str(_int_tag(record, "mx")),
        "minknow_events": str(_int_tag(record, "me")),
        "start_time": _f(start),
        "duration": _f(duration),
        "passes_filtering": "TRUE" if passed else "FALSE",
        "template_start": _f(start + trimmed / rate if rate else start),
        "num_events_template": str(template_samples // model_stride if model_stride > 0 else 0),
        "template_duration": _f(template_samples / rate if rate else 0.0),
        "sequence_length_template": str(len(record.sequence)),
        "mean_qscore_template": _f(qscore_of(record)),
        "pore_type": str(record.tags.get("po") or "not_set"),
        "experiment_id": origin.experiment_id or "unknown",
        "sample_id": origin.sample_id,
        "end_reason": str(record.tags.get("er") or "unknown"),
        "alias": alias or arrangement,
        "barcode_arrangement": arrangement,
        "barcode_kit": kit or barcode_kit_of(record) or "unknown",
    }
    if aligned:
        row.update(alignment_columns(record.segment))
    return row


def alignment_columns(segment: pysam.AlignedSegment | None) -> SummaryRow:
    """Dorado's alignment columns of a read's primary record (minimap2's NM gives the
    edits): where on the reference, which strand, and how well it matches."""
    if segment is None or segment.is_unmapped or segment.cigartuples is None:
        return dict(UNALIGNED)
    ops = {op: 0 for op in range(10)}
    for op, length in segment.cigartuples:
        ops[op] += length
    matched = ops[0] + ops[7] + ops[8]  # M, =, X
    inserted, deleted = ops[1], ops[2]
    edits = segment.get_tag("NM") if segment.has_tag("NM") else ops[8] + inserted + deleted
    substituted = max(0, int(edits) - inserted - deleted)
    correct = max(0, matched - substituted)
    read_length = segment.infer_read_length() or 0
    start, end = segment.query_alignment_start, segment.query_alignment_end
    if segment.is_reverse:  # strand coordinates count along the read as sequenced
        start, end = read_length - end, read_length - start
    columns = matched + inserted + deleted
    return {
        "alignment_genome": segment.reference_name or "*",
        "alignment_genome_start": str(segment.reference_start),
        "alignment_genome_end": str(segment.reference_end),
        "alignment_strand_start": str(start),
        "alignment_strand_end": str(end),
        "alignment_direction": "-" if segment.is_reverse else "+",
        "alignment_length": str(columns),
        "alignment_num_aligned": str(matched),
        "alignment_num_correct": str(correct),
        "alignment_num_insertions": str(inserted),
        "alignment_num_deletions": str(deleted),
        "alignment_num_substitutions": str(substituted),
        "alignment_mapq": str(segment.mapping_quality),
        "alignment_strand_coverage": _f((end - start) / read_length if read_length else 0.0),
        "alignment_identity": _f(correct / matched if matched else 0.0),
        "alignment_accuracy": _f(correct / columns if columns else 0.0),
    }


def write_summary(path: Path, rows: Iterable[SummaryRow]) -> int:
    """Write a summary file (header and rows) under a temporary name, then rename it. The
    alignment columns come after the others when the rows have them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    rows = list(rows)
    columns = COLUMNS + (ALIGNMENT_COLUMNS if rows and ALIGNMENT_COLUMNS[0] in rows[0] else ())
    count = 0
    with open(partial, "w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(columns) + "\n")
        for row in rows:
            fh.write("\t".join(row[c] for c in columns) + "\n")
            count += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)
    return count


def read_summary(path: Path) -> list[SummaryRow]:
    """The rows of a summary file (any columns), as dicts keyed by its header."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def conform_rows(header: bytes, to_header: bytes, rows: Iterable[bytes]) -> Iterator[bytes]:
    """A job's summary rows (under `header`) in the columns of the run's summary they are
    appended to (`to_header`): a job aligned where the run's first was not, or the other
    way round, keeps one header per file. A column the job lacks gets its unaligned
    value (or is empty); one the run's summary lacks is left out."""
    if header == to_header:
        yield from rows
        return
    have = header.rstrip(b"\r\n").split(b"\t")
    want = to_header.rstrip(b"\r\n").split(b"\t")
    fill = {k.encode(): v.encode() for k, v in UNALIGNED.items()}
    index = {name: i for i, name in enumerate(have)}
    for line in rows:
        fields = line.rstrip(b"\r\n").split(b"\t")
        picked = [fields[index[c]] if c in index else fill.get(c, b"") for c in want]
        yield b"\t".join(picked) + b"\n"
