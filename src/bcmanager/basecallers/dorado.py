"""Oxford Nanopore's Dorado, run as `dorado basecaller MODEL INPUT [options] > basecalls/…`.

Dorado reads every pod5 in the job's folder (flat: no `--recursive` needed) and prints
its reads on stdout: unaligned BAM by default (it keeps every read tag and modified-base
calls), FASTQ with `--emit-fastq`. The engine sends stdout to
`OUTPUT/basecalls/basecalls.{bam,fastq}` and files the reads into the manager's output
layout as Dorado writes them (`native_output`; `bcmanager.output.stream`). Flags as in
Dorado's CLI: `-x/--device` (`cuda:all`, `cuda:0,1`, `cpu`, `metal`), `-b/--batchsize`
(0 lets Dorado choose), `--kit-name`, `--modified-bases`, `--models-directory`,
`--reference` (aligned BAM; with `--mm2-opts`), `--sample-sheet` (with `--kit-name`).

`--dorado-args` (`extra_args`, appended last) may not name an option bcmanager sets
itself, nor one that would break what the engine expects of Dorado: `check_dorado_args`.

`--min-qscore` is not passed on: Dorado writing to stdout would drop the reads under it,
and every read must land somewhere; the engine applies it when it splits pass from fail.

With `--models-directory`, `prepare` runs `dorado download --model M --models-directory
D` once when the engine starts (compute nodes usually have no internet), never per batch.
"""

from __future__ import annotations

import copy
import gzip
import logging
import os
import re
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path

from bcmanager.basecallers.abc import (
    Basecaller,
    Invocation,
    dorado_filtered_count,
)
from bcmanager.basecallers.script import require_executable
from bcmanager.errors import ConfigError
from bcmanager.records import NATIVE_DIR
from bcmanager.samplesheet import load_sample_sheet

log = logging.getLogger("bcmanager.basecallers.dorado")

DOWNLOAD_TIMEOUT_S = 3600

# What bcmanager puts on `dorado basecaller`'s command line itself, with the `bcm engine`
# option that sets it: `--dorado-args` naming one of these is refused.
SET_BY_BCMANAGER = {
    "--emit-fastq": "--emit-fastq",
    "--kit-name": "--kit-name",
    "--modified-bases": "--modified-bases",
    "--models-directory": "--models-directory",
    "--device": "--device",
    "-x": "--device",
    "--batchsize": "--dorado-batchsize",
    "-b": "--dorado-batchsize",
    "--reference": "--reference",
    "--mm2-opts": "--mm2-opts",
    "--sample-sheet": "--sample-sheet",
    "--min-qscore": "--min-qscore",  # applied by the engine's split, never by Dorado
}
# Options the engine cannot work with: why.
BREAKS_THE_ENGINE = {
    "--output-dir": "the engine takes Dorado's reads from its standard output",
    "-o": "the engine takes Dorado's reads from its standard output",
    "--emit-sam": "the engine files Dorado's BAM (or FASTQ with --emit-fastq)",
    "--read-ids": "every read of a batch must be basecalled",
    "-l": "every read of a batch must be basecalled",
    "--max-reads": "every read of a batch must be basecalled",
    "-n": "every read of a batch must be basecalled",
    "--resume-from": "every batch is basecalled whole",
}
# `dorado basecaller`'s options that take no value (the others take one).
_FLAGS = frozenset(
    {
        "-h",
        "--help",
        "-v",
        "--verbose",
        "-r",
        "--recursive",
        "--emit-moves",
        "--emit-summary",
        "--barcode-both-ends",
        "--no-trim",
        "--estimate-poly-a",
        "--rna-adapters",
        "--skip-model-compatibility-check",
    }
)
_MMI_MAGIC = b"MMI\x02"  # a minimap2 index
_GZIP_MAGIC = b"\x1f\x8b"
_NUMBER = re.compile(r"-?[0-9.]+(e-?[0-9]+)?")


class DoradoBasecaller(Basecaller):
    """`dorado` must be on PATH (or a path to the executable); checked here, not per job."""

    name = "dorado"
    native_output = True
    switches_models = True
    slices = True  # --read-ids: only the reads a list names, only their signal read

    def __init__(
        self,
        model: str,
        *,
        dorado: str = "dorado",
        device: str = "cuda:all",
        batchsize: int | None = None,
        kit_name: str | None = None,
        modified_bases: Sequence[str] = (),
        models_directory: str | Path | None = None,
        emit_fastq: bool = False,
        extra_args: Sequence[str] = (),
        reference: str | os.PathLike[str] | None = None,
        mm2_opts: str | None = None,
        sample_sheet: str | os.PathLike[str] | None = None,
    ) -> None:
        if not model:
            raise ConfigError("the dorado basecaller needs a model (e.g. hac, sup or a model path)")
        if not device:
            raise ConfigError("the dorado basecaller needs a device (e.g. cuda:all, cuda:0, cpu)")
        if batchsize is not None and batchsize < 0:
            raise ConfigError(f"dorado batch size must be 0 (automatic) or more, not {batchsize}")
        if emit_fastq and modified_bases:
            raise ConfigError("--emit-fastq cannot keep modified-base calls: use BAM")
        self.dorado = require_executable(dorado, "dorado executable", hint="--dorado PATH")
        self.model = model
        self.device = device
        self.batchsize = batchsize
        self.kit_name = kit_name or None
        self.barcoding = self.kit_name is not None
        self.modified_bases = [str(m) for m in modified_bases]
        self.models_directory = Path(models_directory) if models_directory else None
        self.emit_fastq = emit_fastq
        self.extra_args = [str(a) for a in extra_args]
        self.reference = check_reference(reference, emit_fastq) if reference else None
        self.mm2_opts = check_mm2_opts(mm2_opts)
        self.sample_sheet = check_sample_sheet(sample_sheet, self.kit_name)

    def with_recipe(
        self, model: str, kit_name: str | None, modified_bases: Sequence[str]
    ) -> DoradoBasecaller:
        """Another model and kit; the engine's reference stays (`with_reference` changes
        it), its sample sheet stays for a kit it names and is left out without a kit
        (Dorado reads a sheet only when it classifies barcodes)."""
        if self.emit_fastq and modified_bases:
            raise ConfigError("--emit-fastq cannot keep modified-base calls: use BAM")
        other = copy.copy(self)
        other.model = model
        other.kit_name = kit_name or None
        other.barcoding = other.kit_name is not None
        other.modified_bases = [str(m) for m in modified_bases]
        if other.kit_name is None:
            other.sample_sheet = None
        elif self.sample_sheet is not None:
            other.sample_sheet = check_sample_sheet(self.sample_sheet, other.kit_name)
        return other

    def with_reference(self, reference: str | os.PathLike[str]) -> DoradoBasecaller:
        other = copy.copy(self)
        other.reference = check_reference(reference, self.emit_fastq)
        return other

    def dorado_options(self) -> list[str]:
        """The flags that change reads, as Dorado names them."""
        argv = ["--emit-fastq"] if self.emit_fastq else []
        if self.kit_name:
            argv += ["--kit-name", self.kit_name]
        if self.sample_sheet is not None:
            argv += ["--sample-sheet", str(self.sample_sheet)]
        if self.modified_bases:
            argv += ["--modified-bases", *self.modified_bases]
        if self.models_directory is not None:
            argv += ["--models-directory", str(self.models_directory)]
        if self.reference is not None:
            argv += ["--reference", str(self.reference)]
            if self.mm2_opts is not None:
                argv += ["--mm2-opts", self.mm2_opts]  # one argument, as Dorado takes it
        return argv

    def invocation(
        self, input_dir: Path, output_dir: Path, read_ids: Path | None = None
    ) -> Invocation:
        argv = [self.dorado, "basecaller", self.model, str(input_dir), *self.dorado_options()]
        argv += ["--device", self.device]
        if read_ids is not None:  # a slice: Dorado reads only these reads' signal
            argv += ["--read-ids", str(read_ids)]
        if self.batchsize is not None:
            argv += ["--batchsize", str(self.batchsize)]
        argv += self.extra_args
        native = output_dir / NATIVE_DIR  # the engine opens stdout_path; its folder must exist
        native.mkdir(parents=True, exist_ok=True)
        name = "basecalls.fastq" if self.emit_fastq else "basecalls.bam"
        return Invocation(argv=argv, stdout_path=native / name)

    def prepare(self) -> None:
        """Fetch the model into --models-directory once; a node without internet that
        already has it carries on."""
        if self.models_directory is None:
            return
        self.models_directory.mkdir(parents=True, exist_ok=True)
        argv = [self.dorado, "download", "--model", self.model]
        argv += ["--models-directory", str(self.models_directory)]
        log.info("making sure model %s is in %s", self.model, self.models_directory)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"dorado download failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            if self._model_on_disk():
                log.warning("dorado download failed (%s); using the model on disk", tail[0])
                return
            raise ConfigError(
                f"dorado download --model {self.model} failed ({done.returncode}): {tail[0]}"
            )

    def _model_on_disk(self) -> bool:
        assert self.models_directory is not None
        wanted = Path(self.model).name.split(",")[0].split("@")[0]
        return any(wanted in entry.name for entry in self.models_directory.iterdir())

    def describe(self) -> str:
        extras = f", kit {self.kit_name}" if self.kit_name else ""
        if self.sample_sheet is not None:
            extras += f", sample sheet {self.sample_sheet}"
        if self.reference is not None:
            extras += f", aligned to {self.reference}"
        return f"dorado ({self.dorado}) model {self.model} on {self.device}{extras}"

    def filtered_reads(self, log_text: str) -> int:
        """The reads Dorado says it filtered (its `Simplex reads filtered: N` line)."""
        return dorado_filtered_count(log_text)


def check_reference(
    reference: str | os.PathLike[str], emit_fastq: bool = False, option: str = "--reference"
) -> Path:
    """The reference to align to, as an absolute path (the basecaller may run elsewhere):
    a FASTA (plain or gzipped, as minimap2 reads it) or a minimap2 index (.mmi), checked by
    its first bytes. ConfigError says what is wrong; FASTQ output cannot keep alignments
    (Dorado refuses `--emit-fastq` with `--reference`)."""
    if emit_fastq:
        raise ConfigError(
            f"--emit-fastq cannot be used with {option}: FASTQ cannot keep alignments"
            " (Dorado refuses it too); use BAM"
        )
    path = Path(os.path.abspath(os.fspath(reference)))
    if not os.fspath(reference):
        raise ConfigError(f"{option} is empty: give a FASTA or a minimap2 index (.mmi)")
    try:
        if path.is_dir():
            raise ConfigError(f"{option} {path} is a folder: give a FASTA or a minimap2 index")
        with path.open("rb") as handle:
            head = handle.read(4096)
    except FileNotFoundError:
        raise ConfigError(f"{option} {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path} cannot be read: {exc.strerror or exc}") from None
    if head.startswith(_MMI_MAGIC):
        return path
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(4096)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"{option} {path}: a broken gzip file ({exc})") from None
    first = head.lstrip()[:1]
    if first == b">":
        return path
    if not first:
        raise ConfigError(f"{option} {path} is empty: give a FASTA or a minimap2 index")
    if first == b"@":
        raise ConfigError(f"{option} {path} is FASTQ (reads), not a FASTA reference")
    kind = "not a minimap2 index" if path.suffix == ".mmi" else "not a FASTA"
    raise ConfigError(
        f"{option} {path} is {kind}: a FASTA starts with '>' (plain or gzipped), a minimap2"
        " index with MMI"
    )


def check_mm2_opts(mm2_opts: str | None) -> str | None:
    """minimap2's options, one string as Dorado's `--mm2-opts` takes it (e.g. '-k 15 -w
    10'); Dorado parses it. None or blank: none."""
    if mm2_opts is None or not mm2_opts.strip():
        return None
    if "\0" in mm2_opts or "\n" in mm2_opts:
        raise ConfigError("--mm2-opts must be one line of minimap2 options")
    return mm2_opts.strip()


def check_sample_sheet(
    sample_sheet: str | os.PathLike[str] | None, kit_name: str | None
) -> Path | None:
    """The sample sheet, checked against the kit (`bcmanager.samplesheet`), as an absolute
    path; Dorado reads one only when it classifies barcodes, so it needs `--kit-name`."""
    if sample_sheet is None or not os.fspath(sample_sheet):
        return None
    if not kit_name:
        raise ConfigError(
            "--sample-sheet needs --kit-name: Dorado reads a sample sheet only when it"
            " classifies barcodes, and the sheet's kit must be the one it classifies"
        )
    path = Path(os.path.abspath(os.fspath(sample_sheet)))
    load_sample_sheet(path, kit_name)
    return path


def check_dorado_args(args: Sequence[str]) -> list[str]:
    """`--dorado-args`, refused (ConfigError) where they name an option bcmanager sets
    itself (`SET_BY_BCMANAGER`, in `--opt value`, `--opt=value` and `-xVALUE` forms),
    one the engine cannot work with (`BREAKS_THE_ENGINE`), or a word that is no option's
    value (the model and the input are the engine's)."""
    args = [str(a) for a in args]
    takes_value = False
    for i, arg in enumerate(args):
        if arg == "--":  # what follows would be the model and inputs
            if i + 1 < len(args):
                _not_a_value(args[i + 1])
            break
        if arg.startswith("-") and len(arg) > 1 and not _NUMBER.fullmatch(arg):
            name = _option_name(arg)
            if name in SET_BY_BCMANAGER:
                raise ConfigError(
                    f"--dorado-args must not set {name} ({arg!r}): bcmanager sets it; use"
                    f" bcm engine {SET_BY_BCMANAGER[name]}"
                )
            if name in BREAKS_THE_ENGINE:
                raise ConfigError(
                    f"--dorado-args must not set {name} ({arg!r}): {BREAKS_THE_ENGINE[name]}"
                )
            # an option not known to take no value takes one, unless it is given with it
            # (`--opt=value`, `-cVALUE`) or is a run of short flags (`-vv`)
            if arg.startswith("--"):
                takes_value = "=" not in arg and name not in _FLAGS
            else:
                takes_value = len(arg) == 2 and name not in _FLAGS
            continue
        if not takes_value:
            _not_a_value(arg)
        takes_value = False
    return args


def _not_a_value(arg: str) -> None:
    raise ConfigError(
        f"--dorado-args: {arg!r} is no option's value: bcmanager gives dorado basecaller"
        " its model (bcm engine --model) and each batch's folder"
    )


def _option_name(arg: str) -> str:
    """The option an argument names: `--opt` of `--opt=value`, `-x` of `-xVALUE`."""
    if arg.startswith("--"):
        return arg.split("=", 1)[0]
    return arg[:2]
