"""Basecaller backends; `make_basecaller` picks one by name (see `abc.Basecaller`).

Backends are imported only when chosen, so an engine that drives Dorado never
imports pod5 or numpy for the simulated one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.errors import ConfigError

KINDS = ("dorado", "script", "command", "simulated")

__all__ = ["KINDS", "Basecaller", "Invocation", "make_basecaller"]


def make_basecaller(
    kind: str,
    *,
    model: str = "",
    dorado: str = "dorado",
    device: str = "cuda:all",
    batchsize: int | None = None,
    script: str | os.PathLike[str] | None = None,
    command: str | None = None,
    samples_per_s: float = 0.0,
    kit_name: str | None = None,
    modified_bases: Sequence[str] = (),
    models_directory: str | os.PathLike[str] | None = None,
    emit_fastq: bool = False,
    extra_args: Sequence[str] = (),
) -> Basecaller:
    """The backend `kind` with its options (CLI option names in the messages).

    - dorado: needs `model`; uses `dorado`, `device`, `batchsize`, `extra_args` and
      the Dorado options `kit_name`, `modified_bases`, `models_directory`, `emit_fastq`
    - script: needs `script`; passes `model` as its third argument
    - command: needs `command` (a template); `{model}` is `model`
    - simulated: `samples_per_s` (<= 0 or inf: no throttling), `model` (default hac)
      and the same Dorado options as dorado

    Raises ConfigError for an unknown kind, a missing required option or an
    executable that cannot be found.
    """
    if kind == "dorado":
        if not model:
            raise ConfigError("--model is required for the dorado basecaller (e.g. hac, sup)")
        from bcmanager.basecallers.dorado import DoradoBasecaller

        return DoradoBasecaller(
            model,
            dorado=dorado,
            device=device,
            batchsize=batchsize,
            kit_name=kit_name,
            modified_bases=modified_bases,
            models_directory=models_directory,
            emit_fastq=emit_fastq,
            extra_args=extra_args,
        )
    if kind == "script":
        if script is None or not os.fspath(script):
            raise ConfigError("--script is required for the script basecaller")
        from bcmanager.basecallers.script import ScriptBasecaller

        return ScriptBasecaller(script, model)
    if kind == "command":
        if not command:
            raise ConfigError(
                "--command is required for the command basecaller,"
                " e.g. --command 'mytool {input} {output} {model}'"
            )
        from bcmanager.basecallers.command import CommandBasecaller

        return CommandBasecaller(command, model)
    if kind == "simulated":
        from bcmanager.basecallers.simulated import SimulatedBasecaller

        return SimulatedBasecaller(
            samples_per_s,
            model=model or "hac",
            kit_name=kit_name,
            modified_bases=modified_bases,
            models_directory=models_directory,
            emit_fastq=emit_fastq,
        )
    raise ConfigError(f"unknown basecaller {kind!r}; choose one of {', '.join(KINDS)}")
