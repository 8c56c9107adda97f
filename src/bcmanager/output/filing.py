"""An engine files its basecaller's native output into the manager's output layout.

A Dorado-like basecaller writes its records (BAM, or FASTQ with read tags) under
`<job output>/basecalls/`. Before reporting DONE, the engine turns them into what the
manager's layout merges with renames alone:

- `minknow`: split by run, pass/fail and barcode into MinKNOW's tree, with a summary
  fragment per run (`bcmanager.output.split`);
- `legacy`: the original system's FASTQ in `<job output>/pass/<name>.fastq`, every
  read, tags kept in the header (as `dorado --emit-fastq` prints them).

The raw `basecalls/` folder is removed once filed, so a job's output is on disk once.
Runs on the GPU node, never in the manager. A basecaller that prints its reads on
stdout (Dorado) is filed for `minknow` while it runs (`stream_filing`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.output.origin import origin_of, run_folder_of_pod5
from bcmanager.output.split import SplitResult, iter_source, split_output
from bcmanager.output.stream import StreamFiling
from bcmanager.output.yields import Yield, yields_from_rows
from bcmanager.records import NATIVE_DIR, fastq_text, read_files


@dataclass
class Filed:
    """What filing wrote: reads in, files out (job-output-relative), summary rows."""

    reads: int = 0
    files: list[str] = field(default_factory=list)
    yields: list[Yield] = field(default_factory=list)  # per run and barcode (minknow)


def file_native_output(
    output_dir: Path,
    input_dir: Path,
    files: list[dict],
    *,
    layout: str,
    job_id: int,
    min_qscore: float,
    barcoding: bool,
) -> Filed:
    """File `output_dir/basecalls/` for `layout`. `files` are the job's files as the claim
    answer lists them (`path`: INPUT-relative, `name`: the link in `input_dir`)."""
    native = output_dir / NATIVE_DIR
    if layout == "minknow":
        origins = _origins(input_dir, files)
        filed = _filed(
            split_output(
                native,
                output_dir,
                origins,
                job_id=job_id,
                min_qscore=min_qscore,
                barcoding=barcoding,
            )
        )
    else:
        filed = _as_legacy_fastq(native, output_dir / "pass")
    shutil.rmtree(native, ignore_errors=True)
    return filed


def stream_filing(
    stream: Path,
    output_dir: Path,
    input_dir: Path,
    files: list[dict],
    *,
    layout: str,
    job_id: int,
    min_qscore: float,
    barcoding: bool,
) -> StreamFiling | None:
    """Filing of a basecaller's stdout `stream` (under `output_dir/basecalls/`) as it is
    written, started; None for a layout filed from whole files (`legacy`)."""
    if layout != "minknow":
        return None
    return StreamFiling(
        stream,
        output_dir,
        lambda: _origins(input_dir, files),
        job_id=job_id,
        min_qscore=min_qscore,
        barcoding=barcoding,
    ).start()


def finish_stream_filing(filing: StreamFiling, output_dir: Path) -> Filed:
    """The stream's last reads filed and its outputs in place; the raw stream removed."""
    filed = _filed(filing.finish())
    shutil.rmtree(output_dir / NATIVE_DIR, ignore_errors=True)
    return filed


def run_folder_of(pod5: Path, relpath: str, layout: str) -> str:
    """Where a pod5's reads go in the job's output folder: its run folder (`minknow`),
    or the folder itself (`legacy`)."""
    return run_folder_of_pod5(pod5, relpath) if layout == "minknow" else "."


def _origins(input_dir: Path, files: list[dict]) -> dict:
    return {f["name"]: origin_of(input_dir / f["name"], f["path"]) for f in files}


def _filed(result: SplitResult) -> Filed:
    yields, start = [], 0
    for rel, count in sorted(result.summaries.items()):  # rows come in this order
        run = rel.rpartition("/")[0] or "."
        yields += yields_from_rows(run, result.rows[start : start + count])
        start += count
    return Filed(result.reads, sorted(result.files), yields)


def _as_legacy_fastq(native: Path, pass_dir: Path) -> Filed:
    filed = Filed()
    pass_dir.mkdir(parents=True, exist_ok=True)
    for path in read_files(native) if native.is_dir() else []:
        stem = path.name.split(".", 1)[0]
        target = pass_dir / f"{stem}.fastq"
        partial = pass_dir / f".partial-{target.name}"
        with open(partial, "w", encoding="utf-8") as out:
            for _fmt, record, _strides in iter_source([path]):
                if record.is_primary:  # a FASTQ holds each read once, without alignments
                    out.write(fastq_text(record))
                    filed.reads += 1
        os.replace(partial, target)
        filed.files.append(f"pass/{target.name}")
    return filed
