"""Where a pod5 file comes from: its run (flow cell, protocol run, acquisition, sample).

The engine knows its job's pod5 files by the names of their symlinks in the job's input
folder (`layout.link_name`: the INPUT-relative path, flattened), and that is what a
basecaller writes as the `fn` tag of each read. `job_origins` maps those names to the
run information read from the pod5 itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pod5

from bcmanager.output.naming import RunIds, run_folder
from bcmanager.pod5footer import run_ids


@dataclass(frozen=True)
class Pod5Origin:
    """A pod5 file's place in INPUT and the run it belongs to."""

    relpath: str  # INPUT-relative path of the pod5
    run_folder: str  # OUTPUT-relative run folder ("." for OUTPUT itself)
    ids: RunIds
    sample_id: str
    experiment_id: str
    acquisition_start: datetime  # UTC; reads' start times count from here
    reads: int = 0  # the reads it holds

    @property
    def pod5_name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def origin_of(pod5_path: Path, relpath: str) -> Pod5Origin:
    """The origin of one pod5, from the run information of its first read.

    A pod5 written by MinKNOW holds reads of one acquisition; one made by merging files
    of several runs is named after the run of its first read.
    """
    with pod5.Reader(pod5_path) as reader:
        rows = reader.run_info_table.read_all().to_pylist()
        first = next(iter(reader.reads()), None)
        info = first.run_info if first is not None else None
        reads = reader.num_reads
    if info is not None:
        ids = RunIds(info.flow_cell_id, info.protocol_run_id, info.acquisition_id)
        sample, experiment, started = (
            info.sample_id,
            info.experiment_name,
            info.acquisition_start_time,
        )
    elif rows:
        row = rows[0]
        ids = RunIds(row["flow_cell_id"], row["protocol_run_id"], row["acquisition_id"])
        sample, experiment = row["sample_id"], row["experiment_name"]
        started = row["acquisition_start_time"]
    else:
        ids = RunIds("", "", "")
        sample, experiment, started = "", "", datetime(1970, 1, 1, tzinfo=UTC)
    return Pod5Origin(
        relpath=relpath,
        run_folder=run_folder(relpath, ids),
        ids=ids,
        sample_id=sample,
        experiment_id=experiment,
        acquisition_start=_utc(started),
        reads=reads,
    )


def run_folder_of_pod5(pod5_path: Path, relpath: str) -> str:
    """The OUTPUT run folder of a pod5's reads, from its run information table alone
    (`pod5footer.run_ids`: a tenth of what opening it with the pod5 library costs, so the
    manager can afford it when it merges an original engine's FASTQ). A file of several
    runs is opened with the pod5 library and named after its first read's run, as
    `origin_of` does; OSError or the pod5 library's error when it cannot be read."""
    ids = run_ids(pod5_path)
    if ids is None:
        return origin_of(pod5_path, relpath).run_folder
    return run_folder(relpath, RunIds(*ids))


def job_origins(input_dir: Path, input_root: Path) -> dict[str, Pod5Origin]:
    """Origins of a job's pod5 files, keyed by their names in `input_dir` (the `fn` tag).

    Each entry of `input_dir` is a symlink to a pod5 under `input_root` (or the file
    itself); hidden names are skipped.
    """
    root = input_root.resolve()
    origins: dict[str, Pod5Origin] = {}
    for entry in sorted(input_dir.iterdir()):
        if entry.name.startswith(".") or not entry.name.endswith(".pod5"):
            continue
        target = entry.resolve()
        try:
            relpath = target.relative_to(root).as_posix()
        except ValueError:
            relpath = entry.name
        origins[entry.name] = origin_of(target, relpath)
    return origins


def by_run_id(origins: dict[str, Pod5Origin]) -> dict[str, Pod5Origin]:
    """Origins keyed by run id, for records without `fn` (Dorado's FASTQ has none)."""
    runs: dict[str, Pod5Origin] = {}
    for origin in origins.values():
        runs.setdefault(origin.ids.run_id, origin)
    return runs
