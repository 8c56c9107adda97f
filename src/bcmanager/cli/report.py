"""`bcm report`: write a run's HTML report (summary, plots, exactly-once verdict), per
model generation where the run has more than the implicit one."""

from __future__ import annotations

from pathlib import Path

import click

from bcmanager.cli._common import friendly_errors, logging_options, setup_logging


@click.command("report")
@click.option(
    "--output",
    "output_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="the run's OUTPUT folder (FASTQ in pass/ and fail/, ledger in .bcmanager/)",
)
@click.option(
    "-o",
    "--out",
    "destination",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="the HTML file to write",
)
@click.option(
    "--input",
    "input_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="the pod5 INPUT [the one recorded in the ledger]",
)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="ledger file")
@click.option("--no-verify", is_flag=True, help="skip the exactly-once check (faster)")
@click.option(
    "--max-reads",
    type=click.IntRange(min=1),
    default=200_000,
    show_default=True,
    help="FASTQ reads sampled for the length and quality plots",
)
@click.option("--workers", type=click.IntRange(min=0), help="verify's reading processes")
@click.option(
    "--generation",
    "generations",
    multiple=True,
    help="report only this model generation (repeatable) [every generation]",
)
@logging_options
@friendly_errors
def command(
    output_dir: Path,
    destination: Path,
    input_dir: Path | None,
    db: Path | None,
    no_verify: bool,
    max_reads: int,
    workers: int | None,
    generations: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Write one self-contained HTML report of a run, from its ledger and its outputs.

    Works while the manager runs and after it has stopped (the ledger is only read).
    Each model generation gets its own numbers, tables and exactly-once verdict.
    """
    setup_logging(log_level, log_format)
    from bcmanager.report import gather, verdicts, write_report

    data = gather(
        output_dir,
        input_dir,
        db,
        verify=not no_verify,
        max_reads=max_reads,
        workers=workers,
        generations=list(generations) or None,
    )
    write_report(data, destination)
    click.echo(f"report written to {destination}")
    for _, sentence in verdicts(data):
        click.echo(f"  {sentence}")
