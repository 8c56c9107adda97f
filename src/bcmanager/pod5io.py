"""Reading and writing real pod5 files with the `pod5` library.

Used by the simulated sequencer, the simulated basecaller, `bcm verify` and the
tests; the manager itself only opens a pod5 to count its reads.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pod5

SAMPLE_RATE = 5000


@dataclass(frozen=True)
class ReadSignal:
    read_id: str
    signal: np.ndarray


def _run_info(flowcell: str, run_id: str) -> pod5.RunInfo:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pod5.RunInfo(
        acquisition_id=run_id,
        acquisition_start_time=start,
        adc_max=2047,
        adc_min=-2048,
        context_tags={},
        experiment_name="bcmanager",
        flow_cell_id=flowcell,
        flow_cell_product_code="FLO-PRO114M",
        protocol_name="simulated",
        protocol_run_id=run_id,
        protocol_start_time=start,
        sample_id="sim",
        sample_rate=SAMPLE_RATE,
        sequencing_kit="SQK-LSK114",
        sequencer_position="1A",
        sequencer_position_type="promethion",
        software="bcmanager",
        system_name="sim",
        system_type="sim",
        tracking_id={},
    )


def make_reads(n_reads: int, samples: int, seed: int) -> list[pod5.Read]:
    """`n_reads` reads of about `samples` samples each, reproducible from `seed`."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    run = _run_info(f"FA{seed % 100000:05d}", f"run{seed}")
    reads = []
    for i in range(n_reads):
        length = max(100, int(samples * rng.uniform(0.5, 1.5)))
        reads.append(
            pod5.Read(
                read_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                pore=pod5.Pore(channel=1 + i % 512, well=1, pore_type="r10"),
                calibration=pod5.Calibration(offset=-240.0, scale=0.18),
                read_number=i,
                start_sample=i * 10 * samples,
                median_before=200.0,
                end_reason=pod5.EndReason(pod5.EndReasonEnum.SIGNAL_POSITIVE, False),
                run_info=run,
                signal=nprng.integers(300, 900, length, dtype=np.int16),
            )
        )
    return reads


def write_pod5(path: Path, n_reads: int, samples: int = 4000, seed: int = 0) -> list[str]:
    """Write a complete pod5 file; returns its read ids."""
    reads = make_reads(n_reads, samples, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pod5.Writer(path) as writer:
        writer.add_reads(reads)
    return [str(r.read_id) for r in reads]


def read_ids(path: Path) -> list[str]:
    with pod5.Reader(path) as reader:
        return [str(rid) for rid in reader.read_ids]


def count_reads(path: Path) -> tuple[int, int]:
    """(reads, samples) of a pod5 file."""
    reads = samples = 0
    with pod5.Reader(path) as reader:
        for record in reader.reads():
            reads += 1
            samples += record.num_samples
    return reads, samples


def iter_signals(path: Path) -> Iterator[ReadSignal]:
    with pod5.Reader(path) as reader:
        for record in reader.reads():
            yield ReadSignal(str(record.read_id), record.signal)
