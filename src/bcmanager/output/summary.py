"""The sequencing summary: one tab-separated row per read, as MinKNOW and Dorado write it.

Columns are those of ONT's sequencing summary specification that a basecaller knows,
in the order of `dorado basecaller --emit-summary` (Dorado 1.4, SummaryFileWriter):
MinKNOW's online file-name columns first (`filename_fastq`, `filename_bam`: the one
that does not apply is empty), then Dorado's basecalling, experiment and barcoding
columns. The set is fixed, whatever the format or kit, so that the rows of every job
of a run can be concatenated under one header (without a kit, `barcode_arrangement`
is `unclassified` and `barcode_kit` `unknown`). Left out: Dorado's `batch_id` (offline
only), poly(A), alignment and duplex columns, and the barcode scores.

Values follow Dorado: `start_time` is seconds from the acquisition's start,
`template_start`/`template_duration` leave out the `ts` samples trimmed from the start,
`num_events_template` is the template samples over the model stride (0 if unknown),
floats have six decimals, `passes_filtering` is TRUE/FALSE.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

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
    model_stride: int = 0,
) -> SummaryRow:
    """The summary row of one read written to `filename` (a name, not a path)."""
    duration = float(record.tags.get("du") or 0.0)
    samples = _int_tag(record, "ns")
    trimmed = _int_tag(record, "ts")
    rate = samples / duration if duration > 0 else 0.0
    start = _start_seconds(record, origin)
    template_samples = max(0, samples - trimmed)
    arrangement = barcode or UNCLASSIFIED
    return {
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
        "alias": arrangement,
        "barcode_arrangement": arrangement,
        "barcode_kit": barcode_kit_of(record) or "unknown",
    }


def write_summary(path: Path, rows: Iterable[SummaryRow]) -> int:
    """Write a summary file (header and rows) under a temporary name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    count = 0
    with open(partial, "w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            fh.write("\t".join(row[c] for c in COLUMNS) + "\n")
            count += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)
    return count


def read_summary(path: Path) -> list[SummaryRow]:
    """The rows of a summary file (any columns), as dicts keyed by its header."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
