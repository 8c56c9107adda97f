"""Oxford Nanopore's Dorado, run as `dorado basecaller MODEL INPUT --emit-fastq ...`.

Dorado reads every pod5 in the job's folder (flat: no `--recursive` needed) and prints
FASTQ on stdout, which the engine sends to `OUTPUT/pass/basecalls.fastq`. Flags as in
Dorado's CLI: `-x/--device` (`cuda:all`, `cuda:0,1`, `cpu`, `metal`) and
`-b/--batchsize` (0 lets Dorado choose).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.basecallers.script import require_executable
from bcmanager.errors import ConfigError

FASTQ_NAME = "basecalls.fastq"


class DoradoBasecaller(Basecaller):
    """`dorado` must be on PATH (or a path to the executable); checked here, not per job."""

    name = "dorado"

    def __init__(
        self,
        model: str,
        *,
        dorado: str = "dorado",
        device: str = "cuda:all",
        batchsize: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not model:
            raise ConfigError("the dorado basecaller needs a model (e.g. hac, sup or a model path)")
        if not device:
            raise ConfigError("the dorado basecaller needs a device (e.g. cuda:all, cuda:0, cpu)")
        if batchsize is not None and batchsize < 0:
            raise ConfigError(f"dorado batch size must be 0 (automatic) or more, not {batchsize}")
        self.dorado = require_executable(dorado, "dorado executable", hint="--dorado PATH")
        self.model = model
        self.device = device
        self.batchsize = batchsize
        self.extra_args = [str(a) for a in extra_args]

    def invocation(self, input_dir: Path, output_dir: Path) -> Invocation:
        argv = [
            self.dorado,
            "basecaller",
            self.model,
            str(input_dir),
            "--emit-fastq",
            "--device",
            self.device,
        ]
        if self.batchsize is not None:
            argv += ["--batchsize", str(self.batchsize)]
        argv += self.extra_args
        # The engine opens stdout_path; its folder must exist.
        (output_dir / "pass").mkdir(parents=True, exist_ok=True)
        return Invocation(argv=argv, stdout_path=output_dir / "pass" / FASTQ_NAME)

    def describe(self) -> str:
        return f"dorado ({self.dorado}) model {self.model} on {self.device}"
