"""`bcm simulate-sequencer`: write real pod5 files over time, like MinKNOW does."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from bcmanager.cli._common import friendly_errors, logging_options, setup_logging
from bcmanager.errors import InvalidInput


@click.command("simulate-sequencer")
@click.option(
    "--output",
    "output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="the run directory MinKNOW would write (the manager's --input)",
)
@click.option(
    "--files",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="pod5 files per flow cell",
)
@click.option(
    "--reads", type=click.IntRange(min=1), default=400, show_default=True, help="reads per file"
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=4000,
    show_default=True,
    help="mean signal samples per read (5 kHz; reads vary 0.5x-1.5x)",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="seconds between two files of one flow cell; each file grows over this time",
)
@click.option("--flowcells", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--layout", type=click.Choice(["flat", "minknow"]), default="flat", show_default=True)
@click.option(
    "--corrupt",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="extra files, complete on disk but unreadable (poison files)",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--experiment", default="experiment", show_default=True, help="minknow layout")
@click.option("--sample", default="sample", show_default=True, help="minknow layout")
@click.option(
    "--chunks",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="pieces each file is written in",
)
@logging_options
@friendly_errors
def command(
    output: Path,
    files: int,
    reads: int,
    samples: int,
    interval: float,
    flowcells: int,
    layout: str,
    corrupt: int,
    seed: int,
    experiment: str,
    sample: str,
    chunks: int,
    log_level: str,
    log_format: str,
) -> None:
    """Write pod5 files into OUTPUT over time, as a sequencer would.

    Every flow cell finishes one file every --interval seconds; the files grow in place
    under their final names and are complete (pod5 signature at both ends) only once
    closed. At the end each run folder gets a final_summary_*.txt. Read ids are unique
    across the run and reproducible from --seed.
    """
    from bcmanager.simulate import WrittenFile, simulate_run

    setup_logging(log_level, log_format)
    total = files * flowcells + corrupt
    lock = threading.Lock()
    done = 0

    def on_file(item: WrittenFile) -> None:
        nonlocal done
        with lock:
            done += 1
            what = "corrupt (unreadable)" if item.corrupt else f"{item.reads} reads"
            click.echo(f"[{done:>{len(str(total))}}/{total}] {item.flowcell} {item.path} {what}")

    stop = threading.Event()
    try:
        result = simulate_run(
            output,
            files=files,
            reads=reads,
            samples=samples,
            interval=interval,
            flowcells=flowcells,
            layout=layout,
            corrupt=corrupt,
            seed=seed,
            experiment=experiment,
            sample=sample,
            chunks=chunks,
            on_file=on_file,
            stop=stop,
        )
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        stop.set()
        raise click.Abort() from None
    good = len(result.good_files)
    click.echo(
        f"wrote {good} pod5 file(s) with {result.total_reads} reads"
        + (f" and {len(result.corrupt_files)} corrupt file(s)" if result.corrupt_files else "")
        + f" from {flowcells} flow cell(s) in {result.elapsed_s:.1f} s"
    )
    for summary in result.summaries:
        click.echo(f"  run ended: {summary}")
