"""Basecaller backends; `make_basecaller` picks one by name (see `abc.Basecaller`).

Backends are imported only when chosen, so an engine that drives Dorado never
imports pod5 or numpy for the simulated one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.errors import ConfigError

KINDS = ("dorado", "dorado-server", "script", "command", "simulated")

__all__ = ["KINDS", "Basecaller", "Invocation", "Options", "make_basecaller"]


@dataclass(frozen=True)
class Options:
    """Every backend's options (CLI option names in the messages); each backend reads its own.

    - dorado: needs `model`; uses `dorado`, `device`, `batchsize`, `extra_args` (bcm
      engine --dorado-args: appended, refused where they name an option bcmanager sets,
      `dorado.check_dorado_args`) and the Dorado options `kit_name`, `modified_bases`,
      `models_directory`, `emit_fastq`, `reference` (a FASTA or .mmi: aligned BAM, not
      with `emit_fastq`), `mm2_opts` (minimap2's options, one string, used with a
      reference) and `sample_sheet` (needs `kit_name`; checked with it at start)
    - dorado-server: needs `model` (the server's config); starts `server` once on
      `device` and sends each batch through `supervisor` (`server_port`,
      `server_log_path`, `num_clients`, `server_timeout_s`); BAM only, no barcoding or
      modified bases yet
    - script: needs `script`; passes `model` as its third argument
    - command: needs `command` (a template); `{model}` is `model`
    - simulated: `samples_per_s` (<= 0 or inf: no throttling), `startup_s` (a fixed
      start-up cost, as Dorado's), `model` (default hac) and the same Dorado options as
      dorado (`extra_args` aside: there is no Dorado to pass them to)

    `reference`, `mm2_opts`, `sample_sheet` and `extra_args` are Dorado's: the other
    backends refuse them.
    """

    model: str = ""
    dorado: str = "dorado"
    device: str = "cuda:all"
    batchsize: int | None = None
    script: str | os.PathLike[str] | None = None
    command: str | None = None
    samples_per_s: float = 0.0
    startup_s: float = 0.0
    kit_name: str | None = None
    modified_bases: Sequence[str] = ()
    models_directory: str | os.PathLike[str] | None = None
    emit_fastq: bool = False
    extra_args: Sequence[str] = ()
    server: str = "dorado_basecall_server"
    supervisor: str = "ont_basecaller_supervisor"
    server_port: str | None = None
    server_log_path: str | os.PathLike[str] | None = None
    num_clients: int = 5
    server_timeout_s: float = 600.0
    reference: str | os.PathLike[str] | None = None
    mm2_opts: str | None = None
    sample_sheet: str | os.PathLike[str] | None = None


def make_basecaller(kind: str, **options: Any) -> Basecaller:
    """The backend `kind` with its `Options` (given by name).

    Raises ConfigError for an unknown kind, a missing required option or an
    executable that cannot be found."""
    build = _BUILDERS.get(kind)
    if build is None:
        raise ConfigError(f"unknown basecaller {kind!r}; choose one of {', '.join(KINDS)}")
    o = Options(**options)
    _refuse_dorado_options(kind, o)
    return build(o)


def _refuse_dorado_options(kind: str, o: Options) -> None:
    """Options only Dorado (or, but --dorado-args, its simulated stand-in) takes."""
    given = [
        option
        for option, value, takers in (
            ("--reference", o.reference, ("dorado", "simulated")),
            ("--mm2-opts", o.mm2_opts, ("dorado", "simulated")),
            ("--sample-sheet", o.sample_sheet, ("dorado", "simulated")),
            ("--dorado-args", o.extra_args, ("dorado",)),
        )
        if value and kind not in takers
    ]
    if given:
        raise ConfigError(
            f"the {kind} basecaller does not take {', '.join(given)}"
            " (they are dorado basecaller's options)"
        )


def _dorado(o: Options) -> Basecaller:
    if not o.model:
        raise ConfigError("--model is required for the dorado basecaller (e.g. hac, sup)")
    from bcmanager.basecallers.dorado import DoradoBasecaller, check_dorado_args

    check_dorado_args(o.extra_args)
    return DoradoBasecaller(
        o.model,
        dorado=o.dorado,
        device=o.device,
        batchsize=o.batchsize,
        kit_name=o.kit_name,
        modified_bases=o.modified_bases,
        models_directory=o.models_directory,
        emit_fastq=o.emit_fastq,
        extra_args=o.extra_args,
        reference=o.reference,
        mm2_opts=o.mm2_opts,
        sample_sheet=o.sample_sheet,
    )


def _dorado_server(o: Options) -> Basecaller:
    if not o.model:
        raise ConfigError(
            "--model is required for the dorado-server basecaller"
            " (its config, e.g. dna_r10.4.1_e8.2_400bps_5khz_hac.cfg)"
        )
    unsupported = [
        option
        for option, given in (
            ("--kit-name", o.kit_name),
            ("--modified-bases", o.modified_bases),
            ("--emit-fastq", o.emit_fastq),
            ("--models-directory", o.models_directory),
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
        o.model,
        server=o.server,
        supervisor=o.supervisor,
        device=o.device,
        port=o.server_port,
        log_path=o.server_log_path,
        num_clients=o.num_clients,
        server_timeout_s=o.server_timeout_s,
    )


def _script(o: Options) -> Basecaller:
    if o.script is None or not os.fspath(o.script):
        raise ConfigError("--script is required for the script basecaller")
    from bcmanager.basecallers.script import ScriptBasecaller

    return ScriptBasecaller(o.script, o.model)


def _command(o: Options) -> Basecaller:
    if not o.command:
        raise ConfigError(
            "--command is required for the command basecaller,"
            " e.g. --command 'mytool {input} {output} {model}'"
        )
    from bcmanager.basecallers.command import CommandBasecaller

    return CommandBasecaller(o.command, o.model)


def _simulated(o: Options) -> Basecaller:
    from bcmanager.basecallers.dorado import check_reference, check_sample_sheet
    from bcmanager.basecallers.simulated import SimulatedBasecaller

    # checked here as the dorado backend checks them, so that an engine stops at its start
    if o.reference:
        check_reference(o.reference, o.emit_fastq)
    check_sample_sheet(o.sample_sheet, o.kit_name)
    return SimulatedBasecaller(
        o.samples_per_s,
        startup_s=o.startup_s,
        model=o.model or "hac",
        kit_name=o.kit_name,
        modified_bases=o.modified_bases,
        models_directory=o.models_directory,
        emit_fastq=o.emit_fastq,
        reference=o.reference,
        mm2_opts=o.mm2_opts,
        sample_sheet=o.sample_sheet,
    )


_BUILDERS: dict[str, Callable[[Options], Basecaller]] = {
    "dorado": _dorado,
    "dorado-server": _dorado_server,
    "script": _script,
    "command": _command,
    "simulated": _simulated,
}
