"""Basecaller backends; `make_basecaller` picks one by name (see `abc.Basecaller`).

Backends are imported only when chosen, so an engine that drives Dorado never
imports pod5 or numpy for the simulated one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.errors import ConfigError

KINDS = ("dorado", "dorado-server", "script", "command", "simulated")

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
    startup_s: float = 0.0,
    kit_name: str | None = None,
    modified_bases: Sequence[str] = (),
    models_directory: str | os.PathLike[str] | None = None,
    emit_fastq: bool = False,
    extra_args: Sequence[str] = (),
    server: str = "dorado_basecall_server",
    supervisor: str = "ont_basecaller_supervisor",
    server_port: str | None = None,
    server_log_path: str | os.PathLike[str] | None = None,
    num_clients: int = 5,
    server_timeout_s: float = 600.0,
) -> Basecaller:
    """The backend `kind` with its options (CLI option names in the messages).

    - dorado: needs `model`; uses `dorado`, `device`, `batchsize`, `extra_args` and
      the Dorado options `kit_name`, `modified_bases`, `models_directory`, `emit_fastq`
    - dorado-server: needs `model` (the server's config); starts `server` once on
      `device` and sends each batch through `supervisor` (`server_port`,
      `server_log_path`, `num_clients`, `server_timeout_s`); BAM only, no barcoding or
      modified bases yet
    - script: needs `script`; passes `model` as its third argument
    - command: needs `command` (a template); `{model}` is `model`
    - simulated: `samples_per_s` (<= 0 or inf: no throttling), `startup_s` (a fixed
      start-up cost, as Dorado's), `model` (default hac)
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
    if kind == "dorado-server":
        if not model:
            raise ConfigError(
                "--model is required for the dorado-server basecaller"
                " (its config, e.g. dna_r10.4.1_e8.2_400bps_5khz_hac.cfg)"
            )
        unsupported = [
            option
            for option, given in (
                ("--kit-name", kit_name),
                ("--modified-bases", modified_bases),
                ("--emit-fastq", emit_fastq),
                ("--models-directory", models_directory),
            )
            if given
        ]
        if unsupported:
            raise ConfigError(
                f"the dorado-server basecaller does not take {', '.join(unsupported)}"
                " (give the server a config that does it)"
            )
        from bcmanager.basecallers.dorado_server import DoradoServerBasecaller

        return DoradoServerBasecaller(
            model,
            server=server,
            supervisor=supervisor,
            device=device,
            port=server_port,
            log_path=server_log_path,
            num_clients=num_clients,
            server_timeout_s=server_timeout_s,
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
            startup_s=startup_s,
            model=model or "hac",
            kit_name=kit_name,
            modified_bases=modified_bases,
            models_directory=models_directory,
            emit_fastq=emit_fastq,
        )
    raise ConfigError(f"unknown basecaller {kind!r}; choose one of {', '.join(KINDS)}")
