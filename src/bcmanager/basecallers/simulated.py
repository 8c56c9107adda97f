"""A basecaller that needs no GPU: reads real pod5 and writes one FASTQ record per read.

The engine runs it like any other backend, as a subprocess::

    python -m bcmanager.basecallers.simulated INPUT OUTPUT --samples-per-s N

It opens every `*.pod5` in INPUT (the job's symlinks), derives a deterministic
sequence and quality string from each read's signal, and writes each read when a GPU
basecalling `N` samples per second would have called it (counted from its own process
start, so interpreter start-up is not added on top): its output grows as Dorado's does.
Each FASTQ is written under a temporary name and renamed into
`OUTPUT/pass/<pod5 stem>.fastq`, so a killed run never leaves a half-written file under a
final name. An unreadable pod5 fails the whole job (exit 1), as a real basecaller would.

With `--style dorado` (the backend's default) it instead prints what Dorado 1.4.0 would
on stdout (see "Dorado-like output" below): unaligned BAM, or FASTQ with tags with
`--emit-fastq`, every pod5's reads in one stream, honouring Dorado's `--model`,
`--kit-name`, `--min-qscore`, `--modified-bases`, `--models-directory`,
`--sample-sheet`, and `--reference` with `--mm2-opts` (reads drawn from the reference and
aligned with real minimap2, see "Aligned output" below); the engine sends it to
`OUTPUT/basecalls/basecalls.bam`, as it sends Dorado's.

The record-formatting helpers are shared with the stand-in `dorado` used in tests.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import math
import os
import shlex
import sys
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bcmanager.basecallers.abc import (
    Basecaller,
    Invocation,
    dorado_filtered_count,
)
from bcmanager.errors import ConfigError
from bcmanager.records import NATIVE_DIR

if TYPE_CHECKING:
    import mappy
    import numpy as np
    import pod5
    import pysam

    from bcmanager.samplesheet import SampleSheet

_IMPORTED_AT = time.monotonic()  # the process start, where /proc cannot tell it

log = logging.getLogger("bcmanager.basecallers.simulated")

_BASES = b"ACGT"
MIN_SEQUENCE_LENGTH = 5  # Dorado drops every basecalled sequence shorter (dorado #585)
_PARTIAL_PREFIX = ".partial-"
READY_MARK = ".basecalling"  # the first output, written when the start-up is over


class Pod5ReadError(Exception):
    """A pod5 file in the job's input could not be read."""


class SimulatedBasecaller(Basecaller):
    """Runs this module as the basecaller, throttled to `samples_per_s` (<= 0 or inf: no wait).

    `style="dorado"` (the default) prints what Dorado would (BAM, or FASTQ with
    `emit_fastq`) on stdout, which the engine sends to `OUTPUT/basecalls/basecalls.bam`,
    honouring the Dorado flags `model`, `kit_name`, `min_qscore`, `modified_bases`,
    `models_directory`, `sample_sheet` (with `kit_name`), `reference` and `mm2_opts`
    (aligned BAM, as `dorado basecaller --reference`); the engine files it into the
    output layout. `style="legacy"` keeps the original output: one FASTQ record per read
    in `OUTPUT/pass/<stem>.fastq`.
    """

    name = "simulated"

    @property
    def switches_models(self) -> bool:  # type: ignore[override]
        return self.style == "dorado"

    def with_recipe(
        self, model: str, kit_name: str | None, modified_bases: Sequence[str]
    ) -> SimulatedBasecaller:
        """The same simulated GPU running another model: at the rate `samples_per_s` is
        for this engine's own model, times how much faster or slower the other model's
        speed tier is (`model_speed`), as a GPU runs fast, hac and sup."""
        if not self.switches_models:
            raise ConfigError("the legacy-style simulated basecaller runs its own model only")
        rate = self.samples_per_s
        if _throttled(rate):
            rate *= model_speed(model) / model_speed(self.model)
        return SimulatedBasecaller(
            rate,
            style=self.style,
            model=model,
            emit_fastq=self.options.emit_fastq,
            kit_name=kit_name,
            min_qscore=self.options.min_qscore,
            modified_bases=modified_bases,
            models_directory=self.models_directory,
            startup_s=self.startup_s,
            reference=self.options.reference,
            mm2_opts=self.options.mm2_opts,
            # Dorado reads a sample sheet only when it classifies barcodes
            sample_sheet=self.options.sample_sheet if kit_name else None,
        )

    def with_reference(self, reference: str | os.PathLike[str]) -> SimulatedBasecaller:
        """The same simulated GPU and recipe aligning to `reference` (a generation's)."""
        return SimulatedBasecaller(
            self.samples_per_s,
            style=self.style,
            model=self.model,
            emit_fastq=self.options.emit_fastq,
            kit_name=self.options.kit_name,
            min_qscore=self.options.min_qscore,
            modified_bases=self.options.modified_bases,
            models_directory=self.models_directory,
            startup_s=self.startup_s,
            reference=reference,
            mm2_opts=self.options.mm2_opts,
            sample_sheet=self.options.sample_sheet,
        )

    def __init__(
        self,
        samples_per_s: float,
        *,
        style: str = "dorado",
        model: str = "hac",
        emit_fastq: bool = False,
        kit_name: str | None = None,
        min_qscore: float | None = None,
        modified_bases: Sequence[str] = (),
        models_directory: str | os.PathLike[str] | None = None,
        startup_s: float = 0.0,
        reference: str | os.PathLike[str] | None = None,
        mm2_opts: str | None = None,
        sample_sheet: str | os.PathLike[str] | None = None,
    ) -> None:
        if math.isnan(samples_per_s):
            raise ConfigError("--samples-per-s must be a number")
        if not math.isfinite(startup_s) or startup_s < 0:
            raise ConfigError("--startup-s must be a number >= 0")
        self.startup_s = float(startup_s)
        if style not in STYLES:
            raise ConfigError(f"unknown output style {style!r}; choose one of {', '.join(STYLES)}")
        self.samples_per_s = float(samples_per_s)
        self.style = style
        self.native_output = style == "dorado"
        self.model = model
        self.barcoding = style == "dorado" and bool(kit_name)
        self.options = DoradoOptions(
            model=model,
            kit_name=kit_name or None,
            min_qscore=min_qscore,
            modified_bases=tuple(modified_bases),
            emit_fastq=emit_fastq,
            reference=_absolute(reference),
            mm2_opts=mm2_opts or None,
            sample_sheet=_absolute(sample_sheet),
        )
        self.models_directory = models_directory
        given = reference is not None or mm2_opts or sample_sheet is not None
        if style == "legacy" and given:
            raise ConfigError("--reference, --mm2-opts and --sample-sheet need the dorado style")
        if style == "dorado":
            try:
                check_options(self.options)
                check_inputs(self.options)
            except StandInError as exc:
                raise ConfigError(str(exc)) from exc

    @property
    def slices(self) -> bool:  # type: ignore[override]
        """As Dorado (`--read-ids`), in its style; the legacy style writes whole files."""
        return self.style == "dorado"

    def invocation(
        self, input_dir: Path, output_dir: Path, read_ids: Path | None = None
    ) -> Invocation:
        argv = [
            sys.executable,
            "-m",
            "bcmanager.basecallers.simulated",
            str(input_dir),
            str(output_dir),
            "--samples-per-s",
            repr(self.samples_per_s),
        ]
        if self.startup_s:
            argv += ["--startup-s", repr(self.startup_s)]
        if self.style == "legacy":
            self.whole_files_only(read_ids)
            return Invocation(argv=[*argv, "--style", "legacy"], env=_pythonpath_env())
        argv += dorado_flags(self.style, self.options, self.models_directory)
        if read_ids is not None:
            argv += ["--read-ids", str(read_ids)]
        name = "basecalls.fastq" if self.options.emit_fastq else "basecalls.bam"
        native = output_dir / NATIVE_DIR  # the engine opens stdout_path; its folder must exist
        native.mkdir(parents=True, exist_ok=True)
        return Invocation(argv=argv, env=_pythonpath_env(), stdout_path=native / name)

    def prepare(self) -> None:
        """What `dorado download --models-directory` does for Dorado, once per engine."""
        if self.style == "dorado" and self.models_directory is not None:
            download_model(Path(self.models_directory), self.options.model)

    def filtered_reads(self, log_text: str) -> int:
        """What it says it filtered, in Dorado's words (Dorado style only)."""
        return dorado_filtered_count(log_text) if self.style == "dorado" else 0

    def describe(self) -> str:
        output = "" if self.style == "legacy" else f", Dorado-like {self.options.basecall_model()}"
        if self.options.reference:
            output += f" aligned to {Path(self.options.reference).name}"
        if _throttled(self.samples_per_s):
            return f"simulated basecaller at {self.samples_per_s:g} samples/s{output}"
        return f"simulated basecaller (no throttling){output}"


MODEL_SPEEDS = {"fast": 3.0, "hac": 1.0, "sup": 0.25}  # relative basecalling rates on one GPU


def model_speed(model: str) -> float:
    """How fast a model's speed tier basecalls, relative to hac (1 when the name does not
    say fast, hac or sup)."""
    name = resolve_model(model)[0]
    for tier, speed in MODEL_SPEEDS.items():
        if f"_{tier}" in name or name == tier:
            return speed
    return 1.0


def dorado_flags(
    style: str, options: DoradoOptions, models_directory: str | os.PathLike[str] | None
) -> list[str]:
    """The module's command-line flags for a style and Dorado options."""
    flags = ["--style", style, "--model", options.model]
    if options.emit_fastq:
        flags.append("--emit-fastq")
    if options.kit_name:
        flags += ["--kit-name", options.kit_name]
    if options.min_qscore is not None:
        flags += ["--min-qscore", repr(options.min_qscore)]
    if options.modified_bases:
        flags += ["--modified-bases", *options.modified_bases]
    if models_directory is not None:
        flags += ["--models-directory", os.fspath(models_directory)]
    if options.reference:
        flags += ["--reference", options.reference]
    if options.mm2_opts:
        flags.append(f"--mm2-opts={options.mm2_opts}")  # one word: its value starts with "-"
    if options.sample_sheet:
        flags += ["--sample-sheet", options.sample_sheet]
    return flags


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    """A path as the basecaller's process gets it: absolute, whatever its folder."""
    return None if path is None or not os.fspath(path) else os.path.abspath(os.fspath(path))


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


def write_fastq(pod5_path: Path, out: TextIO, pace: Pacer | None = None) -> tuple[int, int]:
    """Write the FASTQ of one pod5 to `out`; returns (reads, samples). With `pace`, each
    read when a GPU would have called it."""
    reads = samples = 0
    for record, num_samples in iter_records(pod5_path):
        if pace is not None:
            pace(num_samples)
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


# -- Dorado-like output (shared with the stand-in dorado) -----------------------------------
#
# Mirrors Dorado 1.4.0 (`dorado basecaller`; SAM/BAM tags as in Dorado's SAM
# specification, dorado-docs `basecaller/sam_spec.md`, and as its 1.4 regression BAMs
# carry them): unaligned BAM by default, `--emit-fastq` for FASTQ whose header has the
# tags as tab-separated `key:type:value`; header `@HD`, `@PG ID:basecaller PN:dorado`,
# one `@RG` per run (ID `<runid>_<model>`, with `_<kit>_<barcodeNN>` and SM/al/bk per
# barcode when barcoding); per read `qs du ns ts mx ch st rn fn sm sd sv dx RG po er me`,
# `pi`/`sp` on split reads, `BC` on classified reads, `MN`/`MM`/`ML` with modified
# bases. Which reads split, their qscores and barcodes follow from a hash of the read
# id, so the same pod5 always gives the same output. The stand-in FASTQ header carries
# every scalar tag (real Dorado writes only RG st DS qs ch PU DT SM al there), and `SM`
# (the barcode) and `al` (its alias, else the barcode) on classified reads, as Dorado's
# `HtsFileWriter::prepare_item` adds them to FASTQ records.
#
# With `--sample-sheet` (and `--kit-name`; Dorado ignores the sheet without one), as
# Dorado 1.4's `BarcodeClassifierNode` and `bam_utils.cpp` write it: only the barcodes
# the sheet lists are classified (reads of any other are unclassified, and get no @RG
# line); a classified read whose barcode has an alias for its run (flow cell, position,
# experiment) carries the alias itself in `BC:Z:<alias>` and `RG:Z:<runid>_<model>_<alias>`,
# whose @RG line is `ID:<runid>_<model>_<alias> ... SM:<barcodeNN> al:<alias> bk:<kit>`.
# A listed barcode with no alias for the read's run becomes Dorado's empty barcode: no
# `BC`, the run's plain read group (Dorado replaces the barcode by the alias, even an
# empty one); its @RG line stays `..._<kit>_<barcodeNN>` with `al:<barcodeNN>`. Dorado
# writes no per-read `al` tag in BAM.

DORADO_VERSION = "1.4.0"
STANDIN_VERSION = f"{DORADO_VERSION}+bcmanager-standin"
MODEL_STRIDE = 6
PA_SCALING = (94.0, 24.0)  # Dorado's `sm`/`sd` for "pa"-scaled (v5) models
KIT_BARCODES = 4  # barcode01..barcode04, plus some unclassified reads
_SPEEDS = ("fast", "hac", "sup")
_MODEL_VERSION = "v5.2.0"
_SPLIT_NAMESPACE = uuid.UUID("3f0c2a52-6d7e-4f43-9a52-2b0b1c7c5a11")
MODIFICATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "5mC_5hmC": (("C", "h"), ("C", "m")),
    "5mCG_5hmCG": (("C", "h"), ("C", "m")),
    "5mCG": (("C", "m"),),
    "5mC": (("C", "m"),),
    "4mC_5mC": (("C", "21839"), ("C", "m")),
    "6mA": (("A", "a"),),
    "m6A": (("A", "a"),),
    "m6A_DRACH": (("A", "a"),),
    "pseU": (("T", "17802"),),
}
STYLES = ("legacy", "dorado")


class StandInError(Exception):
    """A request the stand-in refuses as Dorado would (exit status 1)."""


@dataclass(frozen=True)
class DoradoOptions:
    """The Dorado flags the stand-ins honour (names as on Dorado's command line)."""

    model: str = "hac"
    kit_name: str | None = None  # --kit-name: classify barcodes
    min_qscore: float | None = None  # --min-qscore: drop reads below (no --output-dir)
    modified_bases: tuple[str, ...] = ()  # --modified-bases
    emit_fastq: bool = False  # --emit-fastq
    reference: str | None = None  # --reference: a FASTA to draw reads from and align to
    mm2_opts: str | None = None  # --mm2-opts: minimap2 options (see `parse_mm2_opts`)
    sample_sheet: str | None = None  # --sample-sheet: barcode aliases (with kit_name)

    def basecall_model(self) -> str:
        return resolve_model(self.model)[0]

    def modification_codes(self) -> tuple[str, ...]:
        return (*resolve_model(self.model)[1], *self.modified_bases)


def resolve_model(model: str) -> tuple[str, tuple[str, ...]]:
    """(model name, modifications) of a Dorado model complex (`hac`, `sup@v5.0.0,6mA`).

    A speed resolves to the DNA R10.4.1 model of that speed; a name or path is kept
    (its last path component).
    """
    first, *mods = model.split(",")
    speed, _, version = first.partition("@")
    if speed in _SPEEDS:
        name = f"dna_r10.4.1_e8.2_400bps_{speed}@{version or _MODEL_VERSION}"
    else:
        name = first.rstrip("/").rsplit("/", 1)[-1]
    return name, tuple(mods)


def check_options(options: DoradoOptions) -> None:
    """StandInError for what Dorado refuses: unknown modifications, modbases in FASTQ."""
    for code in options.modification_codes():
        if code not in MODIFICATIONS:
            raise StandInError(
                f"'{code}' is not a supported modification please select from "
                + ", ".join(MODIFICATIONS)
            )
    if options.emit_fastq and options.modification_codes():
        raise StandInError(
            "--emit-fastq cannot be used with modbase models as FASTQ cannot store modbase results."
        )
    if options.emit_fastq and options.reference:
        raise StandInError(
            "--emit-fastq cannot be used with --reference as FASTQ cannot store alignment results."
        )
    parse_mm2_opts(options.mm2_opts)  # Dorado parses them with or without a reference


def check_inputs(options: DoradoOptions) -> None:
    """StandInError unless the reference is a file and the sample sheet loads. (The
    reference is indexed by the basecalling process, never by the engine that checks.)"""
    if options.reference and not os.path.isfile(options.reference):
        raise StandInError(f"cannot read reference {options.reference}: no such file")
    sample_sheet_of(options)


def modbase_model_names(options: DoradoOptions) -> list[str]:
    model = options.basecall_model()
    return [f"{model}_{code}@v2" for code in options.modification_codes()]


def download_model(models_directory: Path, model: str) -> Path:
    """What `dorado download --model M --models-directory D` leaves: `D/<model name>/`."""
    folder = models_directory / resolve_model(model)[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(f'[model]\nname = "{folder.name}"\n')
    return folder


def require_model(models_directory: Path, model: str) -> None:
    """StandInError unless the model was downloaded: compute nodes have no internet."""
    name = resolve_model(model)[0]
    if not (models_directory / name / "config.toml").is_file():
        raise StandInError(
            f"model {name} not found in {models_directory} and it cannot be downloaded"
            " here (no internet); run `dorado download --models-directory` first"
        )


@dataclass
class SimRead:
    """One basecalled read of the stand-ins, with its tags in Dorado's order."""

    read_id: str
    sequence: str
    quality: str
    tags: dict[str, tuple[object, str]]  # tag -> (value, SAM type)
    barcode: str | None = None  # the classification (`barcode01`), None: unclassified
    alias: str | None = None  # its sample sheet alias for the read's run


def _digest(read_id: str) -> bytes:
    return hashlib.sha256(read_id.encode("ascii")).digest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def read_group_id(
    run_id: str, model: str, kit: str | None = None, barcode: str | None = None
) -> str:
    """Dorado's read group: `<runid>_<model>`, with `_<kit>_<barcode>` when classified."""
    base = f"{run_id}_{model}"
    return f"{base}_{kit}_{barcode}" if kit and barcode else base


def barcode_for(read_id: str, kit: str | None) -> str | None:
    """barcode01..04 for most reads, None (unclassified) for about one in five."""
    if not kit:
        return None
    pick = _digest(read_id)[2] % (KIT_BARCODES + 1)
    return f"barcode{pick + 1:02d}" if pick < KIT_BARCODES else None


@functools.lru_cache(maxsize=8)
def _load_sheet(path: str, kit: str) -> SampleSheet:
    from bcmanager.samplesheet import load_sample_sheet

    try:
        return load_sample_sheet(path, kit)
    except ConfigError as exc:
        raise StandInError(str(exc)) from exc


def sample_sheet_of(options: DoradoOptions) -> SampleSheet | None:
    """The sample sheet Dorado uses: `--sample-sheet`, read only with `--kit-name`."""
    if not (options.sample_sheet and options.kit_name):
        return None
    return _load_sheet(options.sample_sheet, options.kit_name)


def permitted_barcodes(options: DoradoOptions) -> list[str]:
    """The kit's barcodes Dorado classifies: those the sample sheet lists (all without a
    sheet, or with a sheet that lists none)."""
    if not options.kit_name:
        return []
    every = [f"barcode{index + 1:02d}" for index in range(KIT_BARCODES)]
    sheet = sample_sheet_of(options)
    listed = sheet.barcodes() if sheet is not None else frozenset()
    return [barcode for barcode in every if not listed or barcode in listed]


def barcode_alias(
    options: DoradoOptions, barcode: str, flow_cell_id: str, position_id: str, experiment_id: str
) -> str | None:
    """A barcode's sample sheet alias for a run (None without a sheet or an alias)."""
    sheet = sample_sheet_of(options)
    if sheet is None:
        return None
    return sheet.alias(
        barcode, flow_cell_id=flow_cell_id, position_id=position_id, experiment_id=experiment_id
    )


def classify_read(
    read_id: str, options: DoradoOptions, info: pod5.RunInfo
) -> tuple[str | None, str | None, str | None]:
    """(barcode, alias, label) of a read: its classification, its alias and what Dorado
    writes in `BC` and after the run's read group id (`<kit>_<barcode>`; with a sample
    sheet the alias, None where there is none)."""
    barcode = barcode_for(read_id, options.kit_name)
    if barcode is None or barcode not in permitted_barcodes(options):
        return None, None, None
    if sample_sheet_of(options) is None:
        return barcode, None, f"{options.kit_name}_{barcode}"
    alias = barcode_alias(
        options, barcode, info.flow_cell_id, info.sequencer_position, info.experiment_name
    )
    return barcode, alias, alias


def split_points(read_id: str, num_samples: int) -> list[tuple[int, int]]:
    """Signal intervals of the reads a read becomes: one in eight long reads splits in two."""
    if num_samples >= 400 and _digest(read_id)[0] % 8 == 0:
        middle = num_samples // 2
        return [(0, middle), (middle, num_samples)]
    return [(0, num_samples)]


def child_read_id(parent: str, index: int) -> str:
    """A split read's id: a UUID derived from its parent's (Dorado draws a new one)."""
    return str(uuid.uuid5(_SPLIT_NAMESPACE, f"{parent}/{index}"))


def _qualities(read_id: str, picked: np.ndarray) -> str:
    """Phred qualities around a per-read target of 4..24, so some reads fall under 8-10."""
    import numpy as np

    target = 4 + round(_digest(read_id)[1] / 255 * 20)
    quals = np.clip(target + np.mod(picked // 4, 7) - 3, 1, 50) + 33
    return quals.astype(np.uint8).tobytes().decode("ascii")


def _scaling(model: str, signal_pa: np.ndarray) -> tuple[float, float, str]:
    """(sm, sd, sv): fixed "pa" standardisation for v5 models, signal quantiles before."""
    import numpy as np

    if "@v4" in model or "@v3" in model:
        median = float(np.median(signal_pa)) if len(signal_pa) else 0.0
        mad = float(np.median(np.abs(signal_pa - median))) * 1.4826 if len(signal_pa) else 0.0
        return median, mad, "quantile"
    return PA_SCALING[0], PA_SCALING[1], "pa"


def _modified_base_tags(
    read_id: str, sequence: str, codes: Sequence[str]
) -> dict[str, tuple[object, str]]:
    """MN/MM/ML for every base a modification applies to (each such base called)."""
    mm: list[str] = []
    ml: list[int] = []
    salt = _digest(read_id)
    for code in codes:
        for base, mod in MODIFICATIONS[code]:
            count = sequence.count(base)
            mm.append(f"{base}+{mod}?" + ",0" * count + ";")
            ml.extend((salt[(len(ml) + i) % 32] * (i + 7)) % 256 for i in range(count))
    return {"MN": (len(sequence), "i"), "MM": ("".join(mm), "Z"), "ML": (array("B", ml), "B")}


def simulate_read(record: pod5.ReadRecord, pod5_name: str, options: DoradoOptions) -> list[SimRead]:
    """The reads Dorado-like basecalling makes of one pod5 read (two if it splits)."""
    import numpy as np

    parent = str(record.read_id)
    info = record.run_info
    rate = float(info.sample_rate) or 5000.0
    signal = record.signal
    model = options.basecall_model()
    codes = options.modification_codes()
    started = info.acquisition_start_time
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    intervals = split_points(parent, len(signal))
    reads = []
    for index, (begin, end) in enumerate(intervals):
        read_id = parent if len(intervals) == 1 else child_read_id(parent, index)
        segment = signal[begin:end]
        trimmed = min(len(segment) // 4, (_digest(read_id)[4] % 50) * 4)
        body = np.asarray(segment[trimmed:], dtype=np.int64)
        sequence, _ = sequence_and_quality(body)
        picked = body[::10][: len(sequence)] if len(body) else np.zeros(1, dtype=np.int64)
        quality = _qualities(read_id, picked)
        if options.reference:
            drawn = load_reference(options.reference, options.mm2_opts).draw(
                read_id, len(sequence), error_rate(model)
            )
            if drawn is not None:  # else a read from elsewhere: the signal's own bases
                sequence, quality = drawn, quality[: len(drawn)]
        qscore = _mean_qscore(quality)
        if len(sequence) < MIN_SEQUENCE_LENGTH:
            continue  # Dorado's fixed filter (dorado #585)
        if options.min_qscore is not None and qscore < options.min_qscore:
            continue
        pa = (body + record.calibration.offset) * record.calibration.scale
        sm, sd, sv = _scaling(model, pa)
        barcode, alias, label = classify_read(read_id, options, info)
        group = read_group_id(info.acquisition_id, model)
        tags: dict[str, tuple[object, str]] = {
            "qs": (qscore, "f"),
            "du": (len(segment) / rate, "f"),
            "ns": (len(segment), "i"),
            "ts": (trimmed, "i"),
            "mx": (record.pore.well, "i"),
            "ch": (record.pore.channel, "i"),
            "st": (_iso(started + timedelta(seconds=(record.start_sample + begin) / rate)), "Z"),
            "rn": (record.read_number, "i"),
            "fn": (pod5_name, "Z"),
            "sm": (sm, "f"),
            "sd": (sd, "f"),
            "sv": (sv, "Z"),
            "dx": (0, "i"),
            "RG": (f"{group}_{label}" if label else group, "Z"),
            "po": (record.pore.pore_type or "not_set", "Z"),
            "er": (record.end_reason.reason.name.lower(), "Z"),
            "me": (int(record.num_minknow_events), "I"),
        }
        if len(intervals) > 1:
            tags["pi"] = (parent, "Z")
            tags["sp"] = (begin, "i")
        if label:
            tags["BC"] = (label, "Z")
        if codes:
            tags.update(_modified_base_tags(read_id, sequence, codes))
        reads.append(SimRead(read_id, sequence, quality, tags, barcode, alias))
    return reads


def _mean_qscore(quality: str) -> float:
    from bcmanager.records import mean_qscore

    return round(mean_qscore(quality), 4)


@dataclass
class Tally:
    """Dorado's closing counts: reads basecalled, and reads it left out (no output)."""

    basecalled: int = 0
    filtered: int = 0

    def log_lines(self) -> str:
        """What Dorado prints at its end (the engine reads the filtered count)."""
        return (
            f"[info] > Simplex reads basecalled: {self.basecalled}\n"
            f"[info] > Simplex reads filtered: {self.filtered}\n"
        )


def iter_sim_reads(
    pod5_path: Path,
    options: DoradoOptions,
    tally: Tally | None = None,
    read_ids: Sequence[str] | None = None,
) -> Iterator[SimRead]:
    """Dorado-like reads of every read of a pod5 (with `read_ids`: of those of them only,
    whose signal alone is read, as Dorado's --read-ids); Pod5ReadError if it cannot be
    read. Reads that come out as none (Dorado's filters) are counted in `tally`."""
    import pod5

    tally = tally if tally is not None else Tally()
    try:
        with pod5.Reader(pod5_path) as reader:
            records = reader.reads() if read_ids is None else _selected(reader, read_ids)
            for record in records:
                reads = simulate_read(record, pod5_path.name, options)
                if reads:
                    tally.basecalled += 1
                else:
                    tally.filtered += 1
                yield from reads
    except Pod5ReadError:
        raise
    except Exception as exc:  # pod5 raises RuntimeError, OSError, arrow errors...
        raise Pod5ReadError(f"cannot read {pod5_path}: {exc}") from exc


def _selected(reader: pod5.Reader, read_ids: Sequence[str]) -> Iterator[pod5.ReadRecord]:
    """The reads of `read_ids` that this file has, in the file's order."""
    wanted = set(read_ids)
    present = [str(r) for r in reader.read_ids if str(r) in wanted]
    if present:
        yield from reader.reads(selection=present)


def run_infos(paths: Sequence[Path]) -> list[dict]:
    """The distinct runs (pod5 run info rows, by acquisition id) of some pod5 files."""
    import pod5

    runs: dict[str, dict] = {}
    for path in paths:
        try:
            with pod5.Reader(path) as reader:
                rows = reader.run_info_table.read_all().to_pylist()
        except Exception as exc:
            raise Pod5ReadError(f"cannot read {path}: {exc}") from exc
        for row in rows:
            runs.setdefault(row["acquisition_id"], row)
    return list(runs.values())


def bam_header(runs: Sequence[dict], options: DoradoOptions, command_line: str) -> dict:
    """Dorado's header: @HD, @PG of the basecaller, @RG per run (and per barcode of a kit)."""
    model = options.basecall_model()
    groups = []
    for run in runs:
        ds = [f"runid={run['acquisition_id']}", f"basecall_model={model}"]
        if options.modification_codes():
            ds.append("modbase_models=" + ",".join(modbase_model_names(options)))
        ds += [
            f"experiment_id={run['experiment_name'] or 'unknown'}",
            f"acquisition_start_time={_iso(_utc(run['acquisition_start_time']))}",
            f"model_stride={MODEL_STRIDE}",
        ]
        base = {
            "ID": read_group_id(run["acquisition_id"], model),
            "PU": run["flow_cell_id"],
            "PM": run["sequencer_position"],
            "DT": _iso(_utc(run["protocol_start_time"])),
            "PL": "ONT",
            "DS": " ".join(ds),
            "LB": run["sample_id"],
        }
        groups.append(base)
        for barcode in permitted_barcodes(options):
            alias = barcode_alias(
                options,
                barcode,
                run["flow_cell_id"],
                run["sequencer_position"],
                run["experiment_name"],
            )
            groups.append(
                {
                    **base,
                    "ID": f"{base['ID']}_{alias}"
                    if alias
                    else read_group_id(run["acquisition_id"], model, options.kit_name, barcode),
                    "SM": barcode,
                    "al": alias or barcode,
                    "bk": options.kit_name,
                }
            )
    header = {
        "HD": {"VN": "1.6", "SO": "unknown"},
        "PG": [{"ID": "basecaller", "PN": "dorado", "VN": STANDIN_VERSION, "CL": command_line}],
        "RG": groups,
    }
    if options.reference:
        header["SQ"] = load_reference(options.reference, options.mm2_opts).sq_lines()
    return header


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def to_segment(read: SimRead, header: pysam.AlignmentHeader) -> pysam.AlignedSegment:
    """An unmapped BAM record of a read, tags in Dorado's order."""
    import pysam

    segment = pysam.AlignedSegment(header)
    segment.query_name = read.read_id
    segment.flag = 4
    segment.reference_id = -1
    segment.reference_start = -1
    segment.mapping_quality = 0
    segment.next_reference_id = -1
    segment.next_reference_start = -1
    segment.query_sequence = read.sequence
    segment.query_qualities = pysam.qualitystring_to_array(read.quality)
    # arrays (ML) take their element type from the array itself
    segment.set_tags(
        [(tag, value, None if kind == "B" else kind) for tag, (value, kind) in read.tags.items()]
    )
    return segment


def fastq_text(read: SimRead, header_tags: dict[str, str]) -> str:
    """A Dorado-like FASTQ record: tab-separated `key:type:value` tags after the id."""
    from bcmanager.records import Record
    from bcmanager.records import fastq_text as record_text

    tags: dict[str, object] = {k: v for k, (v, kind) in read.tags.items() if kind != "B"}
    tags.update(header_tags)
    return record_text(Record(read.read_id, read.sequence, read.quality, tags))


def fastq_header_tags(header: dict, read: SimRead) -> dict[str, str]:
    """The read group's DS, PU and DT, which Dorado repeats in each FASTQ header, and a
    classified read's SM (its barcode) and al (the barcode's alias, else the barcode)."""
    group = next((g for g in header["RG"] if g["ID"] == read.tags["RG"][0]), None)
    tags = {} if group is None else {"DS": group["DS"], "PU": group["PU"], "DT": group["DT"]}
    if read.barcode:  # Dorado's FASTQ records name the barcode and its alias
        tags.update(SM=read.barcode, al=read.alias or read.barcode)
    return tags


def write_dorado_output(
    paths: Sequence[Path],
    out: str | Path,
    options: DoradoOptions,
    command_line: str,
    pace: Pacer | None = None,
    read_ids: Sequence[str] | None = None,
) -> tuple[int, int]:
    """Basecall pod5 files (with `read_ids`: those reads of them only) into one BAM (or
    FASTQ) at `out` ("-": stdout); (reads, samples).

    With `pace`, each read is written (and flushed) when a GPU would have called it: the
    output grows read by read, as Dorado's real reads fill its BAM's blocks (these reads
    are short; a 64 KiB block would hold a whole file's)."""
    header_dict = bam_header(run_infos(paths), options, command_line)
    tally = Tally()
    try:
        reads = _paced_reads(paths, options, tally, pace, read_ids)
        if options.emit_fastq:
            return _write_fastq_stream(reads, out, header_dict, pace)
        return _write_bam_stream(reads, out, options, header_dict, pace)
    finally:
        print(tally.log_lines(), end="", file=sys.stderr, flush=True)


def _paced_reads(
    paths: Sequence[Path],
    options: DoradoOptions,
    tally: Tally,
    pace: Pacer | None,
    read_ids: Sequence[str] | None = None,
) -> Iterator[tuple[SimRead, int]]:
    """Every read of the files with its sample count, each when a GPU would have called it."""
    for path in paths:
        for read in iter_sim_reads(path, options, tally, read_ids):
            ns = int(read.tags["ns"][0])  # type: ignore[call-overload]
            if pace is not None:
                pace(ns)
            yield read, ns


def _write_fastq_stream(
    paced: Iterator[tuple[SimRead, int]],
    out: str | Path,
    header_dict: dict,
    pace: Pacer | None,
) -> tuple[int, int]:
    reads = samples = 0
    target = sys.stdout if str(out) == "-" else open(out, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for read, ns in paced:
            target.write(fastq_text(read, fastq_header_tags(header_dict, read)))
            if pace is not None:
                target.flush()
            reads, samples = reads + 1, samples + ns
    finally:
        target.flush()
        if target is not sys.stdout:
            target.close()
    return reads, samples


def _write_bam_stream(
    paced: Iterator[tuple[SimRead, int]],
    out: str | Path,
    options: DoradoOptions,
    header_dict: dict,
    pace: Pacer | None,
) -> tuple[int, int]:
    import pysam

    reads = samples = 0
    reference = load_reference(options.reference, options.mm2_opts) if options.reference else None
    sys.stdout.flush()
    with pysam.AlignmentFile(str(out), "wb", header=header_dict) as bam:
        for read, ns in paced:
            if reference is None:
                bam.write(to_segment(read, bam.header))
            else:  # as Dorado: every record of a read together, in minimap2's order
                for segment in reference.records(read, bam.header):
                    bam.write(segment)
            if pace is not None:
                bam.flush()
            reads, samples = reads + 1, samples + ns
    return reads, samples


# -- Aligned output (`--reference`, `--mm2-opts`; shared with the stand-in dorado) ------------
#
# With a reference each read's bases come from it instead of from its signal: a place
# and strand drawn from a hash of the read id (a sequence weighted by its length), as
# many bases as the signal would have given, with substitutions, insertions and
# deletions at the model's error rate (`ERROR_RATES`: fast > hac > sup). One read in
# `OFF_TARGET_ONE_IN` comes from elsewhere (the signal's own random bases: minimap2
# leaves it unmapped) and one in `CHIMERA_ONE_IN` long ones is chimeric, two pieces of
# two places, as nanopore reads sometimes are (minimap2 writes a supplementary record).
# Each read is then aligned with real minimap2 (`mappy`) and written as Dorado 1.4's
# `Minimap2Aligner::align` writes it to stdout (unsorted, a read's records together in
# minimap2's order): `@SQ SN LN M5 UR` per reference sequence (M5 of the sequence as in
# the FASTA, UR `file://<path>`, as `Minimap2Index::cache_header_records`); per hit a
# record with every read tag Dorado gave the read, then minimap2's `NM nn de tp MD` (and
# `SA` on the records that keep their bases); the primary (flag 0/16) is the first
# primary hit, any other primary hit is supplementary (2048, hard-clipped, its bases
# trimmed), secondary hits (256) keep no SEQ/QUAL and are soft-clipped; MM/ML/MN are
# dropped from secondary and supplementary records. A read without hits is written
# unmapped (flag 4) with its tags. `ms AS cm s1 s2 rl` (and `tp:A:I` of inversions)
# need minimap2 internals mappy does not expose, so they are left out; `nn` and `de`
# are derived exactly from what it does give (NM, mlen, blen, the CIGAR).

DEFAULT_MM_PRESET = "lr:hq"  # Dorado's (`Minimap2Options.h`), not minimap2's own map-ont
ERROR_RATES = {"fast": 0.06, "hac": 0.035, "sup": 0.015}  # per base: 1/2 subs, 1/4 ins, 1/4 del
OFF_TARGET_ONE_IN = 10
CHIMERA_ONE_IN = 16
MIN_CHIMERA_PART = 300  # bases of each piece of a chimeric read (shorter reads never are)
_REFERENCE_SALT = b"bcmanager-simulated-reference\0"
# minimap2's presets for DNA reads against a genome (`mm_set_opt`); its others (splice,
# cdna, sr, ava-*) change how records are written (spliced, paired, all chains), which
# the stand-ins do not simulate: they refuse them
_MM2_PRESETS = (
    "lr",
    "map-ont",
    "lr:hq",
    "map-hifi",
    "map-ccs",
    "map-pb",
    "map10k",
    "map-iclr",
    "asm5",
    "asm10",
    "asm20",
)
_MM2_OTHER_PRESETS = (
    "splice",
    "splice:hq",
    "splice:sr",
    "cdna",
    "sr",
    "short",
    "ava-ont",
    "ava-pb",
)


@dataclass(frozen=True)
class Mm2Options:
    """The minimap2 options of `--mm2-opts` that the stand-ins honour."""

    preset: str = DEFAULT_MM_PRESET  # -x
    k: int | None = None  # -k
    w: int | None = None  # -w
    best_n: int | None = None  # -N
    bandwidth: int | None = None  # -r NUM[,NUM]
    bandwidth_long: int | None = None
    secondary: bool = True  # --secondary yes|no
    soft_clip: bool = False  # -Y: supplementary records soft-clipped, with their bases
    secondary_seq: bool = False  # --secondary-seq: secondary records keep their bases


def split_mm2_opts(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(`--mm2-opts` value, the other arguments), taken out before the command line is
    parsed, as Dorado does (`extract_options_string_arg`): its value starts with "-"."""
    rest: list[str] = []
    value: str | None = None
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--mm2-opts":
            if index + 1 == len(args):
                raise StandInError("Missing value for --mm2-opts command line argument.")
            value, index = args[index + 1], index + 2
            continue
        if arg.startswith("--mm2-opts="):
            value = arg.removeprefix("--mm2-opts=")
        else:
            rest.append(arg)
        index += 1
    return value, rest


def parse_mm2_opts(text: str | None) -> Mm2Options:
    """Dorado's minimap2 options (`minimap2_args.cpp`): -x, -k, -w, -N, -r, -Y,
    --secondary yes|no and --secondary-seq change the alignments; -I, --junc-bed and
    --print-aln-seq are taken and change nothing here (the index is one block; DNA reads
    have no junctions). Anything else is refused, as Dorado refuses it."""
    tokens = [token for token in (text or "").split(" ") if token]
    found: dict[str, object] = {}
    index = 0

    def value(option: str) -> str:
        nonlocal index
        if index + 1 >= len(tokens):
            raise StandInError(f"Too few arguments for '{option}'.")
        index += 1
        return tokens[index]

    def number(option: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise StandInError(
                f"Failed to parse '{text}' as decimal integer for {option}"
            ) from None

    while index < len(tokens):
        token = tokens[index]
        option, equals, attached = token.partition("=")
        if option in ("-k", "-w", "-N") and not equals:
            found[{"-k": "k", "-w": "w", "-N": "best_n"}[option]] = number(option, value(option))
        elif option == "-x" and not equals:
            preset = value(option)
            if preset in _MM2_OTHER_PRESETS:
                raise StandInError(
                    f"minimap2 preset {preset} is not simulated: the stand-in aligns DNA"
                    f" reads with {', '.join(_MM2_PRESETS)}"
                )
            if preset not in _MM2_PRESETS:
                raise StandInError(f"Cannot set mm2 options with preset: {preset}")
            found["preset"] = preset
        elif option == "-r" and not equals:
            widths = [number(option, part) for part in value(option).split(",")]
            if len(widths) > 2:
                raise StandInError("Wrong number of arguments for minimap2 bandwidth option '-r'.")
            found["bandwidth"] = widths[0]
            found["bandwidth_long"] = widths[1] if len(widths) == 2 else None
        elif option == "--secondary":
            answer = attached if equals else value(option)
            if answer not in ("yes", "no"):
                raise StandInError(f"Unsupported value '{answer}' for --secondary: yes or no")
            found["secondary"] = answer == "yes"
        elif option == "-Y" and not equals:
            found["soft_clip"] = True
        elif option == "--secondary-seq" and not equals:
            found["secondary_seq"] = True
        elif option in ("-I", "--junc-bed") and not equals:
            value(option)
        elif option == "--print-aln-seq" and not equals:
            pass
        else:
            raise StandInError(f"Unknown argument: {token} (in --mm2-opts)")
        index += 1
    if found.get("best_n") == 0:  # Dorado: "Ignoring '-N 0', using preset default"
        found.pop("best_n")
    for option in ("k", "w"):
        if option in found and not 1 <= int(found[option]) <= 28:  # type: ignore[call-overload]
            raise StandInError(f"Invalid minimap2 options string: -{option} out of range")
    return Mm2Options(**found)  # type: ignore[arg-type]


def error_rate(model: str) -> float:
    """The simulated error rate of a model's speed tier (hac's when it names none)."""
    name = resolve_model(model)[0]
    for tier, rate in ERROR_RATES.items():
        if f"_{tier}" in name or name == tier:
            return rate
    return ERROR_RATES["hac"]


@functools.lru_cache(maxsize=4)
def load_reference(path: str, mm2_opts: str | None) -> Reference:
    """The reference of a run, read and indexed once per process (as Dorado indexes it
    once at its start)."""
    return Reference(Path(path), parse_mm2_opts(mm2_opts))


class Reference:
    """A reference, a FASTA (plain or gzipped) or a minimap2 index (.mmi) that keeps its
    sequences: reads drawn from it, and real minimap2 (mappy) to align them."""

    def __init__(self, path: Path, mm2: Mm2Options) -> None:
        import numpy as np

        self.path = path
        self.mm2 = mm2
        self.is_index = _is_minimap2_index(path)
        if self.is_index:  # its own sequences, as the index keeps them
            self.aligner = self._index()
            named = self._index_sequences()
        else:
            named = self._fasta_sequences()
            self.aligner = self._index()
        if not named or not any(sequence for _, sequence in named):
            raise StandInError(f"reference {path} holds no sequences")
        table = np.zeros(256, dtype=np.uint8)  # A and anything else 0, C 1, G 2, T 3
        for code, bases in enumerate(("Aa", "Cc", "Gg", "Tt")):
            for base in bases:
                table[ord(base)] = code
        self.names = [name for name, _ in named]
        # Dorado's M5: of the sequence as in the FASTA (none for an index, nor UR)
        self.md5 = [hashlib.md5(sequence.encode("ascii")).hexdigest() for _, sequence in named]
        self.codes = [table[np.frombuffer(seq.encode("ascii"), np.uint8)] for _, seq in named]
        self.lengths = np.array([len(codes) for codes in self.codes], dtype=np.int64)
        self.tid = {name: index for index, name in enumerate(self.names)}

    def _fasta_sequences(self) -> list[tuple[str, str]]:
        import pysam

        try:
            with pysam.FastxFile(str(self.path)) as fasta:
                return [(entry.name, entry.sequence or "") for entry in fasta]
        except (OSError, ValueError) as exc:
            raise StandInError(f"cannot read reference {self.path}: {exc}") from exc

    def _index_sequences(self) -> list[tuple[str, str]]:
        named = [(name, self.aligner.seq(name) or "") for name in self.aligner.seq_names]
        if named and not any(sequence for _, sequence in named):
            raise StandInError(
                f"minimap2 index {self.path} keeps no sequences (built with --idx-no-seq):"
                " the stand-in draws its reads from them"
            )
        return named

    def _index(self) -> mappy.Aligner:
        try:
            import mappy
        except ImportError as exc:  # a dependency; a broken install says so here
            raise StandInError(f"--reference needs minimap2's mappy: {exc}") from exc
        mm2 = self.mm2
        aligner = mappy.Aligner(
            str(self.path),
            preset=mm2.preset,
            k=mm2.k,
            w=mm2.w,
            best_n=mm2.best_n,
            bw=mm2.bandwidth,
            bw_long=mm2.bandwidth_long,
            n_threads=1,
        )
        if not aligner:
            raise StandInError(f"failed to load the minimap2 index of {self.path}")
        return aligner

    def sq_lines(self) -> list[dict[str, object]]:
        """The header's @SQ lines, as Dorado writes them: with M5 and UR for a FASTA."""
        if self.is_index:
            return [
                {"SN": name, "LN": int(length)}
                for name, length in zip(self.names, self.lengths, strict=True)
            ]
        uri = "file://" + os.path.realpath(self.path)
        return [
            {"SN": name, "LN": len(codes), "M5": md5, "UR": uri}
            for name, codes, md5 in zip(self.names, self.codes, self.md5, strict=True)
        ]

    def draw(self, read_id: str, length: int, rate: float) -> str | None:
        """`length` bases of the reference with errors, placed by the read id; None for
        the reads that come from elsewhere. Shorter only where a sequence ends."""
        import numpy as np

        salt = hashlib.sha256(_REFERENCE_SALT + read_id.encode("ascii")).digest()
        if salt[0] % OFF_TARGET_ONE_IN == 0:
            return None
        rng = np.random.default_rng(int.from_bytes(salt[8:16], "little"))
        pieces = [length]
        if length >= 2 * MIN_CHIMERA_PART and salt[1] % CHIMERA_ONE_IN == 0:
            second = max(MIN_CHIMERA_PART, int(length * (0.3 + 0.2 * salt[2] / 255)))
            pieces = [length - second, second]
        drawn = np.concatenate([self._piece(rng, n, rate) for n in pieces])
        return np.frombuffer(_BASES, dtype=np.uint8)[drawn].tobytes().decode("ascii")

    def _piece(self, rng: np.random.Generator, length: int, rate: float) -> np.ndarray:
        weights = self.lengths / self.lengths.sum()
        codes = self.codes[int(rng.choice(len(self.codes), p=weights))]
        span = min(len(codes), length + length // 4 + 16)  # room for the deletions
        start = int(rng.integers(len(codes) - span + 1))
        bases = _with_errors(codes[start : start + span], rate, rng)[:length]
        return 3 - bases[::-1] if rng.integers(2) else bases  # A-T, C-G: 3 - code

    def records(self, read: SimRead, header: pysam.AlignmentHeader) -> list[pysam.AlignedSegment]:
        """The read's records as Dorado writes them: unmapped, or one per minimap2 hit."""
        hits = list(self.aligner.map(read.sequence, MD=True))
        primary = next((index for index, hit in enumerate(hits) if hit.is_primary), None)
        if primary is None:
            return [to_segment(read, header)]
        records = []
        for index, hit in enumerate(hits):
            flag = 16 if hit.strand < 0 else 0
            if not hit.is_primary:
                flag |= 256
            elif index != primary:
                flag |= 2048
            if flag & 256 and not self.mm2.secondary:
                continue
            records.append(self._record(read, hits, index, flag, header))
        return records

    def _record(
        self,
        read: SimRead,
        hits: list[mappy.Alignment],
        index: int,
        flag: int,
        header: pysam.AlignmentHeader,
    ) -> pysam.AlignedSegment:
        import pysam

        hit = hits[index]
        size = len(read.sequence)
        reverse = hit.strand < 0
        left = size - hit.q_en if reverse else hit.q_st
        right = hit.q_st if reverse else size - hit.q_en
        other = bool(flag & (256 | 2048))
        soft = self.mm2.soft_clip
        no_bases = not soft and bool(flag & 256) and not self.mm2.secondary_seq
        hard = not soft and bool(flag & 2048 or (flag & 256 and self.mm2.secondary_seq))
        clip = 5 if hard else 4  # BAM_CHARD_CLIP, BAM_CSOFT_CLIP
        segment = pysam.AlignedSegment(header)
        segment.query_name = read.read_id
        segment.flag = flag
        segment.reference_id = self.tid[hit.ctg]
        segment.reference_start = hit.r_st
        segment.mapping_quality = hit.mapq
        segment.cigartuples = (
            ([(clip, left)] if left else [])
            + [(op, length) for length, op in hit.cigar]
            + ([(clip, right)] if right else [])
        )
        segment.next_reference_id = -1
        segment.next_reference_start = -1
        segment.template_length = 0
        if not no_bases:
            sequence, quality = read.sequence, read.quality
            if reverse:
                sequence, quality = reverse_complement(sequence), quality[::-1]
            if hard:
                sequence, quality = sequence[left : size - right], quality[left : size - right]
            segment.query_sequence = sequence
            segment.query_qualities = pysam.qualitystring_to_array(quality)
        tags = [
            (tag, value, None if kind == "B" else kind)
            for tag, (value, kind) in read.tags.items()
            if not (other and not soft and tag in ("MM", "ML", "MN"))
        ]
        tags += minimap2_tags(hit)
        if not no_bases:
            sa = supplementary_alignments(hits, index, size)
            if sa:
                tags.append(("SA", sa, "Z"))
        segment.set_tags(tags)
        return segment


def _is_minimap2_index(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"MMI\x02"
    except OSError as exc:
        raise StandInError(f"cannot read reference {path}: {exc.strerror or exc}") from exc


def _with_errors(reference: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Bases (codes 0-3) read from `reference` with substitutions, deletions and
    insertions (a random base before the reference's) at `rate` per reference base."""
    import numpy as np

    size = len(reference)
    draw = rng.random(size)
    kind = np.zeros(size, dtype=np.int8)  # 0 match, 1 substitution, 2 deletion, 3 insertion
    kind[draw < rate / 2] = 1
    kind[(draw >= rate / 2) & (draw < rate * 3 / 4)] = 2
    kind[(draw >= rate * 3 / 4) & (draw < rate)] = 3
    bases = reference.astype(np.int64)
    substituted = kind == 1
    bases[substituted] = (bases[substituted] + rng.integers(1, 4, int(substituted.sum()))) % 4
    counts = np.where(kind == 2, 0, np.where(kind == 3, 2, 1))
    out = bases[np.repeat(np.arange(size), counts)]
    inserted = np.flatnonzero(kind == 3)
    out[(np.cumsum(counts) - counts)[inserted]] = rng.integers(0, 4, len(inserted))
    return out.astype(np.uint8)


_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def reverse_complement(sequence: str) -> str:
    return sequence.translate(_COMPLEMENT)[::-1]


def minimap2_tags(hit: mappy.Alignment) -> list[tuple[str, object, str]]:
    """minimap2's tags of a hit that mappy gives, in Dorado's order (`add_tags`): NM,
    nn (ambiguous bases: NM - (blen - mlen)), de (1 - mm_event_identity), tp, MD."""
    ambiguous = hit.NM - (hit.blen - hit.mlen)
    gaps = [length for length, op in hit.cigar if op in (1, 2)]  # insertions, deletions
    events = hit.blen + ambiguous - sum(gaps) + len(gaps)
    divergence = 1.0 - hit.mlen / events if events > 0 else 0.0
    tags: list[tuple[str, object, str]] = [
        ("NM", hit.NM, "i"),
        ("nn", ambiguous, "i"),
        ("de", divergence, "f"),
        ("tp", "P" if hit.is_primary else "S", "A"),
    ]
    if hit.MD:
        tags.append(("MD", hit.MD, "Z"))
    return tags


def supplementary_alignments(hits: Sequence[mappy.Alignment], index: int, size: int) -> str:
    """The SA tag of hit `index`: the read's other primary and supplementary hits, as
    Dorado's `add_sa_tag` (minimap2's convention) writes them."""
    parts = []
    for other, hit in enumerate(hits):
        if other == index or not hit.is_primary:
            continue
        query, target = hit.q_en - hit.q_st, hit.r_en - hit.r_st
        matches = min(query, target)
        reverse = hit.strand < 0
        five = size - hit.q_en if reverse else hit.q_st
        three = hit.q_st if reverse else size - hit.q_en
        cigar = "".join(
            f"{length}{op}"
            for length, op in (
                (five, "S"),
                (matches, "M"),
                (query - matches, "I"),
                (target - matches, "D"),
                (three, "S"),
            )
            if length
        )
        strand = "-" if reverse else "+"
        parts.append(f"{hit.ctg},{hit.r_st + 1},{strand},{cigar},{hit.mapq},{hit.NM};")
    return "".join(parts)


# -- the basecaller process ----------------------------------------------------------------


@dataclass
class BasecallResult:
    files: int
    reads: int
    samples: int


class Pacer:
    """A simulated GPU's clock: a read comes out once its samples are basecalled at
    `samples_per_s` from `start`, so output grows during a batch as Dorado's does (the
    engine's progress reports measure it)."""

    def __init__(self, start: float, samples_per_s: float) -> None:
        self.start = start
        self.samples_per_s = samples_per_s
        self.samples = 0

    def __call__(self, samples: int) -> None:
        self.samples += samples
        wait = self.start + self.samples / self.samples_per_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def basecall_folder(
    input_dir: Path, output_dir: Path, pace: Pacer | None = None
) -> tuple[BasecallResult, list[Path]]:
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
            with open(partial, "w", encoding="utf-8") as out:
                reads, samples = write_fastq(pod5_path, out, pace)
            result.files += 1
            result.reads += reads
            result.samples += samples
    except BaseException:
        for partial in partials:
            partial.unlink(missing_ok=True)
        raise
    return result, partials


def publish(partials: list[Path], output_dir: Path) -> None:
    """Rename finished files into `output_dir/pass/` under their final names."""
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


def add_dorado_arguments(parser: argparse.ArgumentParser) -> None:
    """Dorado's own flags, as `dorado basecaller` names them."""
    parser.add_argument("--emit-fastq", action="store_true", help="FASTQ instead of BAM")
    parser.add_argument("--kit-name", default="", help="classify barcodes of this kit")
    parser.add_argument(
        "--min-qscore", type=float, default=None, help="discard reads with a lower mean qscore"
    )
    parser.add_argument(
        "--modified-bases", nargs="+", default=[], help="modified base codes, e.g. 5mCG_5hmCG"
    )
    parser.add_argument("--models-directory", type=Path, default=None)
    parser.add_argument("--reference", default="", help="align to this FASTA (aligned BAM)")
    parser.add_argument("--sample-sheet", default="", help="barcode aliases (with --kit-name)")
    parser.add_argument(
        "--read-ids", type=Path, default=None, help="basecall only the reads this file lists"
    )
    # --mm2-opts is taken out of the command line first (`split_mm2_opts`), as Dorado does


def read_id_file(path: Path) -> list[str]:
    """`--read-ids`: StandInError (exit 1, as Dorado) when it cannot be read."""
    from bcmanager.readids import read_id_list

    try:
        return read_id_list(path)
    except (OSError, ValueError) as exc:
        raise StandInError(f"--read-ids: {exc}") from exc


def wait_for_startup(started: float, startup_s: float, output_dir: Path) -> Path:
    """Sleep until `startup_s` after the process start: nothing is written before. Then
    write a first output (`READY_MARK`, removed once the basecalls are published), as
    Dorado writes its output's header once its model is loaded: the engine measures the
    start-up to a basecaller's first output, and this one's basecalling (samples / rate)
    counts from here, while it loads its own libraries (pod5, numpy, pysam) and reads."""
    remaining = started + startup_s - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    if startup_s > 0:
        log.info("model loaded after %.2f s; basecalling", startup_s)
    output_dir.mkdir(parents=True, exist_ok=True)
    mark = output_dir / READY_MARK
    mark.write_text("basecalling\n", encoding="ascii")
    return mark


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic() - seconds_since_process_start()
    parser = argparse.ArgumentParser(
        prog="python -m bcmanager.basecallers.simulated",
        description="Write one FASTQ record per read of every pod5 in INPUT into OUTPUT/pass/"
        " (--style legacy), or Dorado-like BAM/FASTQ on stdout (--style dorado).",
    )
    parser.add_argument("input_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument(
        "--samples-per-s",
        type=float,
        default=0.0,
        help="simulated GPU speed; <= 0 or inf: as fast as the files can be read",
    )
    parser.add_argument(
        "--startup-s",
        type=float,
        default=0.0,
        help="a fixed start-up cost before the first read, as Dorado's model loading and"
        " GPU benchmarking (counted from the process start)",
    )
    parser.add_argument("--style", choices=STYLES, default="dorado")
    parser.add_argument("--model", default="hac", help="Dorado model (dorado style)")
    add_dorado_arguments(parser)
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        mm2_opts, rest = split_mm2_opts(given)
    except StandInError as exc:
        parser.error(str(exc))
    args = parser.parse_args(rest)
    dorado_only = args.emit_fastq or args.kit_name or args.modified_bases or args.reference
    dorado_only = dorado_only or args.sample_sheet or mm2_opts is not None
    dorado_only = dorado_only or args.read_ids is not None
    if args.style == "legacy" and (dorado_only or args.min_qscore is not None):
        parser.error("Dorado flags need --style dorado")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not math.isfinite(args.startup_s) or args.startup_s < 0:
        parser.error("--startup-s must be a number >= 0")
    if not args.input_dir.is_dir():
        print(f"simulated basecaller: input folder {args.input_dir} not found", file=sys.stderr)
        return 1
    mark = wait_for_startup(started, args.startup_s, args.output_dir)
    pace = (
        Pacer(started + args.startup_s, args.samples_per_s)
        if _throttled(args.samples_per_s)
        else None
    )
    options = DoradoOptions(
        model=args.model,
        kit_name=args.kit_name or None,
        min_qscore=args.min_qscore,
        modified_bases=tuple(args.modified_bases),
        emit_fastq=args.emit_fastq,
        reference=args.reference or None,
        mm2_opts=mm2_opts or None,
        sample_sheet=args.sample_sheet or None,
    )
    try:
        if args.style == "dorado":
            check_options(options)
            if args.models_directory is not None:
                require_model(args.models_directory, args.model)
            command_line = f"{parser.prog} {shlex.join(given)}"
            paths = list_pod5(args.input_dir)
            wanted = read_id_file(args.read_ids) if args.read_ids is not None else None
            reads, samples = write_dorado_output(
                paths, "-", options, command_line, pace, read_ids=wanted
            )
            result = BasecallResult(len(paths), reads, samples)
        else:
            result, partials = basecall_folder(args.input_dir, args.output_dir, pace)
            publish(partials, args.output_dir)
    except (Pod5ReadError, StandInError) as exc:
        print(f"simulated basecaller: {exc}", file=sys.stderr)
        mark.unlink(missing_ok=True)
        return 1
    mark.unlink(missing_ok=True)
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
