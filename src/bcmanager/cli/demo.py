"""`bcm demo`: one command, no arguments, no GPU: a whole live run, verified."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from bcmanager.cli._common import setup_logging


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), help="[./demo-run/<UTC time>]")
@click.option(
    "--files",
    "files_per_flowcell",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="per flow cell",
)
@click.option("--flowcells", type=click.IntRange(1, 48), default=2, show_default=True)
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(0.05, 600),
    default=1.5,
    show_default=True,
    help="seconds per file per flow cell",
)
@click.option("--engines", type=click.IntRange(1, 32), default=2, show_default=True)
def command(
    workdir: Path | None, files_per_flowcell: int, flowcells: int, interval_s: float, engines: int
) -> None:
    """A live demo: simulated sequencer, manager and engines, aligned output filed under the
    sample sheet's aliases; exit 0 iff every read is basecalled once."""
    from bcmanager.demo import DemoPlan, default_workdir, run_demo, summary_table

    setup_logging("warning")
    workdir = workdir or default_workdir()
    if workdir.exists() and any(workdir.iterdir()):
        raise click.ClickException(f"{workdir} is not empty; pick a new --workdir")
    plan = DemoPlan(
        workdir,
        flowcells=flowcells,
        files_per_flowcell=files_per_flowcell,
        interval_s=interval_s,
        engines=engines,
    )
    console = Console()
    console.print(
        f"[bold]bcm demo[/]: a simulated sequencer writes {flowcells * files_per_flowcell + 1} pod5 files"
        f" (one corrupt) of a barcoded run into {plan.input};\n{engines} simulated engines basecall"
        f" them through a manager into {plan.output}, aligned to a small random reference"
        f" ({plan.reference.name}) with a sample sheet naming each barcode's sample"
        f" ({plan.sample_sheet.name})."
    )
    outcome = run_demo(plan, console)
    console.print(summary_table(plan, outcome))
    sys.exit(0 if outcome.ok else 1)
