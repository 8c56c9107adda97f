"""A stand-in for MinKNOW: real pod5 files appearing over time, the way a sequencer writes them.

Each flow cell writes its files one after another, one every `interval` seconds, all
flow cells at once (staggered). A file is created under its final name and grows while
reads are added in chunks spread over its interval; only when it is closed does the
pod5 signature stand at its end too, which is what "complete" means to the scanner.
When the run ends, each run folder gets its `final_summary_*.txt`.

Layouts:

    flat:     DIR/<flowcell>_<8hex>_<runid8>_<n>.pod5, DIR/final_summary_<flowcell>_<8hex>.txt
    minknow:  DIR/<experiment>/<sample>/<YYYYMMDD_HHMM>_<position>_<flowcell>_<8hex>/
                  pod5/<flowcell>_<8hex>_<runid8>_<n>.pod5
                  final_summary_<flowcell>_<8hex>.txt

`corrupt` extra files are complete by signature (at both ends) but unreadable by the
pod5 library: poison files for the manager to quarantine.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pod5

from bcmanager.errors import InvalidInput
from bcmanager.layout import POD5_SIGNATURE
from bcmanager.pod5io import SAMPLE_RATE

log = logging.getLogger("bcmanager.simulate")

LAYOUTS = ("flat", "minknow")
_POSITIONS = "ABCDEFGH"


@dataclass(frozen=True)
class PlannedFile:
    """One file a flow cell will write."""

    path: Path
    index: int  # the flow cell's file number, as in the name
    corrupt: bool
    seed: tuple[int, int, int]  # (run seed, flow cell, file): read ids never repeat


@dataclass
class FlowCell:
    """One flow cell's run: where its files go and what identifies them."""

    flowcell: str
    position: str
    protocol_run_id: str
    acquisition_id: str
    run_dir: Path  # holds the final summary
    pod5_dir: Path
    files: list[PlannedFile] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.protocol_run_id[:8]

    @property
    def summary_path(self) -> Path:
        return self.run_dir / f"final_summary_{self.flowcell}_{self.short_id}.txt"


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    flowcell: str
    reads: int  # 0 for a corrupt file
    corrupt: bool = False


@dataclass
class SimulationResult:
    files: list[WrittenFile]
    summaries: list[Path]
    read_ids: dict[Path, list[str]]  # the read ids of each good file
    elapsed_s: float
    stopped: bool = False  # `stop` was set before every file was written

    @property
    def total_reads(self) -> int:
        return sum(f.reads for f in self.files)

    @property
    def good_files(self) -> list[WrittenFile]:
        return [f for f in self.files if not f.corrupt]

    @property
    def corrupt_files(self) -> list[WrittenFile]:
        return [f for f in self.files if f.corrupt]


def plan_run(
    output: Path,
    *,
    files: int,
    flowcells: int = 1,
    layout: str = "flat",
    corrupt: int = 0,
    seed: int = 0,
    experiment: str = "experiment",
    sample: str = "sample",
    started: datetime | None = None,
) -> list[FlowCell]:
    """Every file's path, decided before anything is written (and checked to be new).

    `files` good files per flow cell; `corrupt` bad ones in all, spread round-robin over
    the flow cells and evenly among each one's good files.
    """
    _check_counts(files=files, flowcells=flowcells, corrupt=corrupt, seed=seed)
    if layout not in LAYOUTS:
        raise InvalidInput(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    for label, value in (("experiment", experiment), ("sample", sample)):
        if not value or "/" in value or value.startswith("."):
            raise InvalidInput(f"{label} name {value!r} must be a plain folder name")
    rng = np.random.default_rng([seed, 0x5EC])
    stamp = (started or datetime.now()).strftime("%Y%m%d_%H%M")
    first_fc = int(rng.integers(0, 100_000))
    cells = []
    for k in range(flowcells):
        flowcell = f"PAS{(first_fc + k) % 100_000:05d}"
        position = f"{1 + k // len(_POSITIONS)}{_POSITIONS[k % len(_POSITIONS)]}"
        protocol_run_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        acquisition_id = rng.bytes(20).hex()
        if layout == "minknow":
            run_dir = (
                output
                / experiment
                / sample
                / f"{stamp}_{position}_{flowcell}_{protocol_run_id[:8]}"
            )
            pod5_dir = run_dir / "pod5"
        else:
            run_dir = pod5_dir = output
        cells.append(
            FlowCell(flowcell, position, protocol_run_id, acquisition_id, run_dir, pod5_dir)
        )
    for k, cell in enumerate(cells):
        bad = corrupt // flowcells + (1 if k < corrupt % flowcells else 0)
        total = files + bad
        # Evenly among the good files; spacing total / (bad + 1) >= 1 keeps them distinct.
        bad_slots = (
            set(range(total)) if files == 0 else {(j + 1) * total // (bad + 1) for j in range(bad)}
        )
        prefix = f"{cell.flowcell}_{cell.short_id}_{cell.acquisition_id[:8]}"
        for n in range(total):
            cell.files.append(
                PlannedFile(
                    path=cell.pod5_dir / f"{prefix}_{n}.pod5",
                    index=n,
                    corrupt=n in bad_slots,
                    seed=(seed, k, n),
                )
            )
    existing = [p.path for c in cells for p in c.files if os.path.lexists(p.path)]
    existing += [c.summary_path for c in cells if os.path.lexists(c.summary_path)]
    if layout == "minknow":  # the same seed at another minute: a new folder, the same read ids
        parent = output / experiment / sample
        existing += [
            match
            for c in cells
            for match in (parent.glob(f"*_{c.flowcell}_{c.short_id}") if parent.is_dir() else ())
        ]
    if existing:
        raise InvalidInput(
            f"{existing[0]} already exists ({len(existing)} planned file(s) do);"
            " use another --output or --seed"
        )
    return cells


def simulate_run(
    output: Path,
    *,
    files: int,
    reads: int,
    samples: int,
    interval: float,
    flowcells: int = 1,
    layout: str = "flat",
    corrupt: int = 0,
    seed: int = 0,
    experiment: str = "experiment",
    sample: str = "sample",
    chunks: int = 4,
    on_file: Callable[[WrittenFile], None] | None = None,
    on_chunk: Callable[[Path, int], None] | None = None,
    stop: threading.Event | None = None,
) -> SimulationResult:
    """Write the run and return what was written.

    `files` pod5 files per flow cell, each of `reads` reads of about `samples` samples
    (0.5x to 1.5x); each flow cell finishes one file every `interval` seconds. Read ids
    are unique across the run and reproducible from `seed`. `on_chunk(path, n)` is
    called while a file is open, after its n-th chunk of reads was added (the file is
    incomplete then); `on_file` after each file is complete. Setting `stop` ends the
    run early (the file being written is finished first). Callbacks run on the flow
    cells' threads.
    """
    _check_counts(files=files, flowcells=flowcells, corrupt=corrupt, seed=seed)
    if reads < 1:
        raise InvalidInput(f"reads per file must be at least 1, not {reads}")
    if samples < 1:
        raise InvalidInput(f"samples per read must be at least 1, not {samples}")
    if not interval >= 0:  # also refuses NaN
        raise InvalidInput(f"interval must be 0 or more seconds, not {interval}")
    if chunks < 1:
        raise InvalidInput(f"chunks must be at least 1, not {chunks}")
    output = Path(output)
    cells = plan_run(
        output,
        files=files,
        flowcells=flowcells,
        layout=layout,
        corrupt=corrupt,
        seed=seed,
        experiment=experiment,
        sample=sample,
    )
    stop = stop or threading.Event()
    lock = threading.Lock()
    written: list[WrittenFile] = []
    ids: dict[Path, list[str]] = {}
    t0 = time.monotonic()
    run_start = datetime.now(UTC)

    def record(item: WrittenFile, read_ids: list[str]) -> None:
        with lock:
            written.append(item)
            if not item.corrupt:
                ids[item.path] = read_ids
        if on_file is not None:
            on_file(item)

    def run_cell(k: int, cell: FlowCell) -> None:
        cell.pod5_dir.mkdir(parents=True, exist_ok=True)
        run_info = _run_info(cell, experiment, sample, run_start)
        first = t0 + k * interval / flowcells  # flow cells are staggered
        for i, planned in enumerate(cell.files):
            slot = first + i * interval
            if _wait_until(slot, stop):
                return
            if planned.corrupt:
                if _wait_until(slot + interval, stop):
                    return
                _write_corrupt(planned)
                record(WrittenFile(planned.path, cell.flowcell, 0, True), [])
                continue
            read_ids = _write_growing(
                planned, run_info, reads, samples, chunks, slot, interval, on_chunk, stop
            )
            record(WrittenFile(planned.path, cell.flowcell, len(read_ids)), read_ids)

    with ThreadPoolExecutor(max_workers=flowcells, thread_name_prefix="flowcell") as pool:
        futures = [pool.submit(run_cell, k, cell) for k, cell in enumerate(cells)]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future.done():
                    future.result()  # raises the first failure
        except BaseException:
            stop.set()  # a failing flow cell (or Ctrl-C) ends the others too
            raise
    stopped = stop.is_set()
    summaries = []
    for cell in cells:
        mine = [f for f in written if f.flowcell == cell.flowcell]
        reads = sum(f.reads for f in mine)
        write_final_summary(cell, len(mine), reads, run_start, experiment, sample)
        summaries.append(cell.summary_path)
    return SimulationResult(written, summaries, ids, time.monotonic() - t0, stopped)


# -- writing ---------------------------------------------------------------------------


def _write_growing(
    planned: PlannedFile,
    run_info: pod5.RunInfo,
    n_reads: int,
    samples: int,
    chunks: int,
    slot: float,
    interval: float,
    on_chunk: Callable[[Path, int], None] | None,
    stop: threading.Event,
) -> list[str]:
    """Open the file under its final name and add reads in chunks spread over the interval.

    Once `stop` is set the remaining chunks go in without waiting: the file is finished.
    """
    rng = np.random.default_rng(planned.seed)
    bounds = np.linspace(0, n_reads, min(chunks, n_reads) + 1).astype(int)
    read_ids: list[str] = []
    start_sample = 0
    with pod5.Writer(planned.path, software_name="bcmanager simulate-sequencer") as writer:
        for c in range(len(bounds) - 1):
            batch = []
            for number in range(bounds[c], bounds[c + 1]):
                read = _make_read(rng, run_info, number, samples, start_sample)
                start_sample += len(read.signal) + int(rng.integers(100, 5000))
                batch.append(read)
                read_ids.append(str(read.read_id))
            # Data arrives over the whole interval; the last chunk just before closing.
            _wait_until(slot + interval * (c + 1) / (len(bounds) - 1) * 0.95, stop)
            writer.add_reads(batch)
            if on_chunk is not None:
                on_chunk(planned.path, c + 1)
        _wait_until(slot + interval, stop)
    return read_ids


def _make_read(
    rng: np.random.Generator, run_info: pod5.RunInfo, number: int, samples: int, start: int
) -> pod5.Read:
    length = max(1, int(samples * rng.uniform(0.5, 1.5)))
    return pod5.Read(
        read_id=uuid.UUID(bytes=rng.bytes(16), version=4),
        pore=pod5.Pore(channel=int(rng.integers(1, 3001)), well=1, pore_type="not_set"),
        calibration=pod5.Calibration(offset=-240.0, scale=0.18),
        read_number=number,
        start_sample=start,
        median_before=float(rng.uniform(180, 220)),
        end_reason=pod5.EndReason(pod5.EndReasonEnum.SIGNAL_POSITIVE, False),
        run_info=run_info,
        signal=rng.integers(300, 900, length, dtype=np.int16),
    )


def _write_corrupt(planned: PlannedFile) -> None:
    """Complete by signature, unreadable by pod5: signature, noise, signature."""
    noise = np.random.default_rng(planned.seed).bytes(4096)
    with open(planned.path, "xb") as fh:
        fh.write(POD5_SIGNATURE + noise + POD5_SIGNATURE)


def _run_info(cell: FlowCell, experiment: str, sample: str, started: datetime) -> pod5.RunInfo:
    return pod5.RunInfo(
        acquisition_id=cell.acquisition_id,
        acquisition_start_time=started,
        adc_max=2047,
        adc_min=-2048,
        context_tags={"sample_frequency": str(SAMPLE_RATE)},
        experiment_name=experiment,
        flow_cell_id=cell.flowcell,
        flow_cell_product_code="FLO-PRO114M",
        protocol_name="sequencing/simulated",
        protocol_run_id=cell.protocol_run_id,
        protocol_start_time=started,
        sample_id=sample,
        sample_rate=SAMPLE_RATE,
        sequencing_kit="SQK-LSK114",
        sequencer_position=cell.position,
        sequencer_position_type="promethion",
        software="bcmanager simulate-sequencer",
        system_name="simulated",
        system_type="simulated",
        tracking_id={"flow_cell_id": cell.flowcell, "run_id": cell.acquisition_id},
    )


def write_final_summary(
    cell: FlowCell,
    files: int,
    reads: int,
    started: datetime,
    experiment: str,
    sample: str,
    kit: str = "SQK-LSK114",
    instrument: str = "simulated",
) -> None:
    """MinKNOW's end-of-run marker for `files` pod5 files of `reads` reads, written
    atomically so a reader never sees half of it."""
    now = datetime.now(UTC).isoformat()
    lines = [
        f"instrument={instrument}",
        f"position={cell.position}",
        f"flow_cell_id={cell.flowcell}",
        f"sample_id={sample}",
        f"protocol_group_id={experiment}",
        f"protocol=sequencing/{instrument}:FLO-PRO114M:{kit}",
        f"protocol_run_id={cell.protocol_run_id}",
        f"acquisition_run_id={cell.acquisition_id}",
        f"started={started.isoformat()}",
        f"acquisition_stopped={now}",
        f"processing_stopped={now}",
        "basecalling_enabled=0",
        f"pod5_files_in_final_dest={files}",
        "pod5_files_in_fallback=0",
        "fast5_files_in_final_dest=0",
        "fastq_files_in_final_dest=0",
        f"reads_written={reads}",
    ]
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = cell.run_dir / f".{cell.summary_path.name}.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, cell.summary_path)


# -- helpers ---------------------------------------------------------------------------


def _check_counts(*, files: int, flowcells: int, corrupt: int, seed: int) -> None:
    if files < 0:
        raise InvalidInput(f"files per flow cell must be 0 or more, not {files}")
    if flowcells < 1:
        raise InvalidInput(f"flow cells must be at least 1, not {flowcells}")
    if corrupt < 0:
        raise InvalidInput(f"corrupt files must be 0 or more, not {corrupt}")
    if seed < 0:
        raise InvalidInput(f"seed must be 0 or more, not {seed}")


def _wait_until(deadline: float, stop: threading.Event | None) -> bool:
    """Sleep until `deadline` (monotonic); True if `stop` was set meanwhile."""
    while True:
        remaining = deadline - time.monotonic()
        if stop is not None and stop.is_set():
            return True
        if remaining <= 0:
            return False
        if stop is not None:
            if stop.wait(remaining):
                return True
        else:
            time.sleep(remaining)
