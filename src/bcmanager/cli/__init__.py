"""`bcm`: one entry point, one module per subcommand (imported only when used)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from bcmanager import __version__

# name -> "module:attribute"; each module stays independent of the others.
SUBCOMMANDS: dict[str, str] = {
    "manager": "bcmanager.cli.manager:command",
    "engine": "bcmanager.cli.engine:command",
    "simulate-sequencer": "bcmanager.cli.simulate:command",
    "verify": "bcmanager.cli.verify:command",
    "demo": "bcmanager.cli.demo:command",
    "status": "bcmanager.cli.status:command",
    "events": "bcmanager.cli.events:command",
    "report": "bcmanager.cli.report:command",
    "slurm": "bcmanager.cli.slurm:group",
    "generations": "bcmanager.cli.generations:group",
}


def _available(target: str) -> bool:
    return importlib.util.find_spec(target.partition(":")[0]) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in SUBCOMMANDS.items() if _available(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None or not _available(target):
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bcm")
def main() -> None:
    """bcmanager: basecall a live nanopore run across GPU engines, every read exactly once."""


if __name__ == "__main__":
    sys.exit(main())
