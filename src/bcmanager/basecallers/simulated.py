"""A basecaller that needs no GPU: reads real pod5 and writes one FASTQ record per read.

The engine runs it like any other backend, as a subprocess::

    python -m bcmanager.basecallers.simulated INPUT OUTPUT --samples-per-s N

It opens every `*.pod5` in INPUT (the job's symlinks), derives a deterministic
sequence and quality string from each read's signal, and takes as long as a GPU
basecalling `N` samples per second would (counted from its own process start, so
interpreter start-up is not added on top). Each FASTQ is written under a temporary
name and renamed into `OUTPUT/pass/<pod5 stem>.fastq`, so a killed run never leaves a
half-written file under a final name. An unreadable pod5 fails the whole job (exit 1),
as a real basecaller would.

The record-formatting helpers are shared with the stand-in `dorado` used in tests.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

_IMPORTED_AT = time.monotonic()  # the process start, where /proc cannot tell it

log = logging.getLogger("bcmanager.basecallers.simulated")

_BASES = b"ACGT"
_PARTIAL_PREFIX = ".partial-"


class Pod5ReadError(Exception):
    """A pod5 file in the job's input could not be read."""


class SimulatedBasecaller(Basecaller):
    """Runs this module as the basecaller, throttled to `samples_per_s` (<= 0 or inf: no wait)."""

    name = "simulated"

    def __init__(self, samples_per_s: float) -> None:
        if math.isnan(samples_per_s):
            raise ConfigError("--samples-per-s must be a number")
        self.samples_per_s = float(samples_per_s)

    def invocation(self, input_dir: Path, output_dir: Path) -> Invocation:
        argv = [
            sys.executable,
            "-m",
            "bcmanager.basecallers.simulated",
            str(input_dir),
            str(output_dir),
            "--samples-per-s",
            repr(self.samples_per_s),
        ]
        return Invocation(argv=argv, env=_pythonpath_env())

    def describe(self) -> str:
        if _throttled(self.samples_per_s):
            return f"simulated basecaller at {self.samples_per_s:g} samples/s"
        return "simulated basecaller (no throttling)"


# -- FASTQ from signal (shared with the stand-in dorado) ---------------------------------


def sequence_and_quality(signal: np.ndarray) -> tuple[str, str]:
    """A deterministic "basecall" of a signal: num_samples // 10 bases (at least one).

    Bases come from every tenth sample mod 4, phred qualities (1..40) from the same
    samples, so the same pod5 always gives the same FASTQ.
    """
    import numpy as np

    values = np.asarray(signal, dtype=np.int64)
    length = max(1, len(values) // 10)
    picked = values[::10][:length] if len(values) else np.zeros(1, dtype=np.int64)
    bases = np.frombuffer(_BASES, dtype=np.uint8)[np.mod(picked, 4)]
    quals = (np.mod(picked // 4, 40) + 1 + 33).astype(np.uint8)
    return bases.tobytes().decode("ascii"), quals.tobytes().decode("ascii")


def format_record(read_id: str, signal: np.ndarray, source: str = "") -> str:
    """One FASTQ record (four lines) for a read."""
    seq, qual = sequence_and_quality(signal)
    tags = f" ns:i:{len(signal)}"
    if source:
        tags += " fn:Z:" + "_".join(source.split())
    return f"@{read_id}{tags}\n{seq}\n+\n{qual}\n"


def iter_records(pod5_path: Path) -> Iterator[tuple[str, int]]:
    """(FASTQ record, num_samples) for every read of a pod5; Pod5ReadError if unreadable."""
    from bcmanager.pod5io import iter_signals

    name = pod5_path.name
    try:
        for read in iter_signals(pod5_path):
            yield format_record(read.read_id, read.signal, name), len(read.signal)
    except Pod5ReadError:
        raise
    except Exception as exc:  # pod5 raises RuntimeError, OSError, arrow errors...
        raise Pod5ReadError(f"cannot read {pod5_path}: {exc}") from exc


def write_fastq(pod5_path: Path, out: TextIO) -> tuple[int, int]:
    """Write the FASTQ of one pod5 to `out`; returns (reads, samples)."""
    reads = samples = 0
    for record, num_samples in iter_records(pod5_path):
        out.write(record)
        reads += 1
        samples += num_samples
    return reads, samples


def list_pod5(input_dir: Path, recursive: bool = False) -> list[Path]:
    """The pod5 files (or symlinks to them) in a folder, sorted; hidden names skipped."""
    found: list[Path] = []
    for root, dirs, names in os.walk(input_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found.extend(
            Path(root) / n for n in sorted(names) if n.endswith(".pod5") and not n.startswith(".")
        )
    return found


# -- the basecaller process ----------------------------------------------------------------


@dataclass
class BasecallResult:
    files: int
    reads: int
    samples: int


def basecall_folder(input_dir: Path, output_dir: Path) -> tuple[BasecallResult, list[Path]]:
    """Write each pod5's FASTQ under a temporary name in `output_dir`.

    Returns the result and the temporary files; `publish` renames them into `pass/`.
    On an unreadable pod5 the temporary files are removed and Pod5ReadError raised.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    result = BasecallResult(0, 0, 0)
    partials: list[Path] = []
    try:
        for pod5_path in list_pod5(input_dir):
            partial = output_dir / f"{_PARTIAL_PREFIX}{pod5_path.stem}.fastq"
            partials.append(partial)
            with open(partial, "w", encoding="ascii") as out:
                reads, samples = write_fastq(pod5_path, out)
            result.files += 1
            result.reads += reads
            result.samples += samples
    except BaseException:
        for partial in partials:
            partial.unlink(missing_ok=True)
        raise
    return result, partials


def publish(partials: list[Path], output_dir: Path) -> None:
    """Rename finished FASTQ files into `output_dir/pass/` under their final names."""
    pass_dir = output_dir / "pass"
    pass_dir.mkdir(parents=True, exist_ok=True)
    for partial in partials:
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.rename(partial, pass_dir / partial.name.removeprefix(_PARTIAL_PREFIX))


def _throttled(samples_per_s: float) -> bool:
    return samples_per_s > 0 and math.isfinite(samples_per_s)


def seconds_since_process_start() -> float:
    """How long this process has existed (Linux /proc; else since this module was imported)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5); fields here start at field 3
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


def _pythonpath_env() -> dict[str, str]:
    """Make sure the child finds this very package, installed or not."""
    import bcmanager

    src = str(Path(bcmanager.__file__).resolve().parent.parent)
    current = os.environ.get("PYTHONPATH", "")
    parts = [p for p in current.split(os.pathsep) if p]
    if src in parts:
        return {}
    return {"PYTHONPATH": os.pathsep.join([src, *parts])}


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic() - seconds_since_process_start()
    parser = argparse.ArgumentParser(
        prog="python -m bcmanager.basecallers.simulated",
        description="Write one FASTQ record per read of every pod5 in INPUT into OUTPUT/pass/.",
    )
    parser.add_argument("input_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument(
        "--samples-per-s",
        type=float,
        default=0.0,
        help="simulated GPU speed; <= 0 or inf: as fast as the files can be read",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.input_dir.is_dir():
        print(f"simulated basecaller: input folder {args.input_dir} not found", file=sys.stderr)
        return 1
    try:
        result, partials = basecall_folder(args.input_dir, args.output_dir)
    except Pod5ReadError as exc:
        print(f"simulated basecaller: {exc}", file=sys.stderr)
        return 1
    if _throttled(args.samples_per_s):
        remaining = started + result.samples / args.samples_per_s - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
    publish(partials, args.output_dir)
    log.info(
        "basecalled %d file(s), %d read(s), %d sample(s) in %.2f s",
        result.files,
        result.reads,
        result.samples,
        time.monotonic() - started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
