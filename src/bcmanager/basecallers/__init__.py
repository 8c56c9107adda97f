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
    extra_args: Sequence[str] = (),
) -> Basecaller:
    """The backend `kind` with its options (CLI option names in the messages).

    - dorado: needs `model`; uses `dorado`, `device`, `batchsize`, `extra_args`
    - script: needs `script`; passes `model` as its third argument
    - command: needs `command` (a template); `{model}` is `model`
    - simulated: `samples_per_s` (<= 0 or inf: no throttling)

    Raises ConfigError for an unknown kind, a missing required option or an
    executable that cannot be found.
    """
    if kind == "dorado":
        if not model:
            raise ConfigError("--model is required for the dorado basecaller (e.g. hac, sup)")
        from bcmanager.basecallers.dorado import DoradoBasecaller

        return DoradoBasecaller(
            model, dorado=dorado, device=device, batchsize=batchsize, extra_args=extra_args
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

        return SimulatedBasecaller(samples_per_s)
    raise ConfigError(f"unknown basecaller {kind!r}; choose one of {', '.join(KINDS)}")
