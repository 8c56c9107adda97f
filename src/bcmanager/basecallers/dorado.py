"""Oxford Nanopore's Dorado, run as `dorado basecaller MODEL INPUT [options] > basecalls/…`.

Dorado reads every pod5 in the job's folder (flat: no `--recursive` needed) and prints
its reads on stdout: unaligned BAM by default (it keeps every read tag and modified-base
calls), FASTQ with `--emit-fastq`. The engine sends stdout to
`OUTPUT/basecalls/basecalls.{bam,fastq}` and files the reads into the manager's output
layout as Dorado writes them (`native_output`; `bcmanager.output.stream`). Flags as in
Dorado's CLI: `-x/--device` (`cuda:all`, `cuda:0,1`, `cpu`, `metal`), `-b/--batchsize`
(0 lets Dorado choose), `--kit-name`, `--modified-bases`, `--models-directory`.

`--min-qscore` is not passed on: Dorado writing to stdout would drop the reads under it,
and every read must land somewhere; the engine applies it when it splits pass from fail.

With `--models-directory`, `prepare` runs `dorado download --model M --models-directory
D` once when the engine starts (compute nodes usually have no internet), never per batch.
"""

from __future__ import annotations

import copy
import logging
import subprocess
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

log = logging.getLogger("bcmanager.basecallers.dorado")

DOWNLOAD_TIMEOUT_S = 3600


class DoradoBasecaller(Basecaller):
    """`dorado` must be on PATH (or a path to the executable); checked here, not per job."""

    name = "dorado"
    native_output = True
    switches_models = True

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

    def with_recipe(
        self, model: str, kit_name: str | None, modified_bases: Sequence[str]
    ) -> DoradoBasecaller:
        if self.emit_fastq and modified_bases:
            raise ConfigError("--emit-fastq cannot keep modified-base calls: use BAM")
        other = copy.copy(self)
        other.model = model
        other.kit_name = kit_name or None
        other.barcoding = other.kit_name is not None
        other.modified_bases = [str(m) for m in modified_bases]
        return other

    def dorado_options(self) -> list[str]:
        """The flags that change reads, as Dorado names them."""
        argv = ["--emit-fastq"] if self.emit_fastq else []
        if self.kit_name:
            argv += ["--kit-name", self.kit_name]
        if self.modified_bases:
            argv += ["--modified-bases", *self.modified_bases]
        if self.models_directory is not None:
            argv += ["--models-directory", str(self.models_directory)]
        return argv

    def invocation(self, input_dir: Path, output_dir: Path) -> Invocation:
        argv = [self.dorado, "basecaller", self.model, str(input_dir), *self.dorado_options()]
        argv += ["--device", self.device]
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
        return f"dorado ({self.dorado}) model {self.model} on {self.device}{extras}"

    def filtered_reads(self, log_text: str) -> int:
        """The reads Dorado says it filtered (its `Simplex reads filtered: N` line)."""
        return dorado_filtered_count(log_text)
