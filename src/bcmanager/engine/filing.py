"""The engine's filing glue: a basecalled batch's output filed into the manager's output
layout and checked (`bcmanager.output`) before the engine reports it DONE.

A native backend's reads (Dorado's records) are filed, from the stream the basecaller
wrote as it went where that was followed, else from its whole file; then every read of
the batch's pod5 files must be in the filed outputs exactly once (`output.check`). A
backend that writes the layout's own FASTQ is not filed here: the manager merges it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bcmanager.basecallers.abc import Basecaller
from bcmanager.engine.run import BASECALLER_LOG, read_ids_of
from bcmanager.output.check import check_batch, filtered_list_name, write_filtered_lists
from bcmanager.output.filing import Filed, file_native_output, finish_stream_filing, run_folder_of
from bcmanager.output.split import default_min_qscore
from bcmanager.output.stream import StreamFiling
from bcmanager.readids import raw_id_array, read_id_list

log = logging.getLogger("bcmanager.engine")

DEFAULT_MIN_QSCORE = 9.0  # MinKNOW's hac threshold, for models whose speed is not named


def model_min_qscore(model: str) -> float:
    """MinKNOW's pass threshold for a model (fast 8, hac 9, sup 10; 9 when its name does
    not tell)."""
    try:
        return default_min_qscore(model)
    except ValueError:
        return DEFAULT_MIN_QSCORE


def filing_args(job: dict[str, Any], basecaller: Basecaller, min_qscore: float) -> dict[str, Any]:
    """What filing a job's output needs to know (`output.filing`'s arguments)."""
    return {
        "output_dir": Path(job["output_dir"]),
        "input_dir": Path(job["input_dir"]),
        "files": job["files"],
        "layout": job.get("output_layout", "legacy"),
        "job_id": job["job_id"],
        "min_qscore": min_qscore,
        "barcoding": basecaller.barcoding,
    }


def file_output(
    job: dict[str, Any],
    basecaller: Basecaller,
    stream: StreamFiling | None,
    min_qscore: float,
) -> Filed | str | None:
    """File a native basecaller's reads into the manager's layout (the rest of its
    `stream`, when filed as it was written): what was filed, None for a basecaller that
    writes the layout's own FASTQ, or why filing failed."""
    if not basecaller.native_output:
        return None
    try:
        filed = finish_stream(job, stream)
        if filed is None:
            filed = file_native_output(**filing_args(job, basecaller, min_qscore))
    except Exception as exc:  # a bad BAM, a read of no pod5 of the job, a full disk
        log.error("job %d: cannot file the basecaller's output: %s", job["job_id"], exc)
        return f"filing the output failed: {exc}"[:1000]
    log.info("job %d: %d read(s) into %d file(s)", job["job_id"], filed.reads, len(filed.files))
    problem = check_filed(job, basecaller, filed)
    return filed if problem is None else problem


def check_filed(job: dict[str, Any], basecaller: Basecaller, filed: Filed) -> str | None:
    """Every read of the batch's pod5 files in its filed outputs exactly once, every
    output whole (`output.check`); why not, or None. Reads the basecaller says it
    filtered are listed beside their run's outputs."""
    started = time.monotonic()
    input_dir, output_dir = Path(job["input_dir"]), Path(job["output_dir"])
    pod5_files = {f["name"]: input_dir / f["name"] for f in job["files"]}
    try:
        said = basecaller.filtered_reads(
            (output_dir / BASECALLER_LOG).read_text(encoding="utf-8", errors="replace")
        )
    except OSError:
        said = 0
    read_ids = read_ids_of(job)
    try:
        only = None if read_ids is None else raw_id_array(read_id_list(read_ids))
    except (OSError, ValueError) as exc:
        return f"batch check: the slice's read list: {exc}"[:1000]
    check = check_batch(
        pod5_files,
        [output_dir / rel for rel in filed.files],
        filtered_by_basecaller=said,
        only=only,
    )
    problem = check.problem()
    if problem is not None:
        log.error("job %d: the batch check failed: %s", job["job_id"], problem)
        return f"batch check: {problem}"[:1000]
    if check.filtered:
        folders = {
            f["name"]: run_folder_of(
                input_dir / f["name"], f["path"], job.get("output_layout", "legacy")
            )
            for f in job["files"]
            if f["name"] in check.missing
        }
        write_filtered_lists(output_dir, check.missing, folders, job["job_id"])
        log.warning(
            "job %d: %d read(s) filtered by the basecaller (it says %d), listed in %s",
            job["job_id"],
            check.n_missing,
            said,
            filtered_list_name(job["job_id"]),
        )
    log.info(
        "job %d: checked %d read(s) in %d output(s) in %.2f s",
        job["job_id"],
        check.reads,
        len(filed.files),
        time.monotonic() - started,
    )
    return None


def finish_stream(job: dict[str, Any], stream: StreamFiling | None) -> Filed | None:
    """The batch's stream filed to its end; None when it was not followed, or when
    following failed (the basecaller's whole output is then filed from its file,
    which is complete: a stream's trouble never loses a batch)."""
    if stream is None:
        return None
    job_id = int(job["job_id"])
    try:
        filed = finish_stream_filing(stream, Path(job["output_dir"]))
        log.info(
            "job %d: %s of %d read(s) filed while the basecaller ran",
            job_id,
            stream.reads_at_exit,
            filed.reads,
        )
        return filed
    except Exception as exc:
        log.warning(
            "job %d: filing the basecaller's stream failed (%s); filing its file", job_id, exc
        )
        return None
