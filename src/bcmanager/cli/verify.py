"""`bcm verify`: check that every read of INPUT is in OUTPUT's FASTQ exactly once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bcmanager.cli._common import friendly_errors, logging_options, setup_logging

if TYPE_CHECKING:
    from rich.console import Console

    from bcmanager.verify import VerifyReport

_SHOWN_FILES = 50  # rows of the per-file table; --json has them all


@click.command("verify")
@click.option(
    "--input",
    "input_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="the pod5 input directory",
)
@click.option(
    "--output",
    "output_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="the FASTQ output directory (with pass/ and fail/)",
)
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
@click.option("--workers", type=click.IntRange(min=0), help="reading processes [one per CPU]")
@click.option(
    "--max-listed",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="read ids listed per file and problem",
)
@logging_options
@friendly_errors
def command(
    input_dir: Path,
    output_dir: Path,
    as_json: bool,
    workers: int | None,
    max_listed: int,
    log_level: str,
    log_format: str,
) -> None:
    """Check that every read id of INPUT's pod5 files has exactly one FASTQ record in OUTPUT.

    Exit status 0 when it does, 1 when reads are missing, duplicated or unexpected, or a
    file could not be read. Files in OUTPUT/QUARANTINE/quarantined.tsv may be missing.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bcmanager.verify import verify_run

    setup_logging(log_level, log_format)
    err = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("reading files", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = verify_run(
            input_dir, output_dir, workers=workers, max_listed=max_listed, progress=progress
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    else:
        _print_report(report, Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120))
    sys.exit(0 if report.ok else 1)


def _print_report(report: VerifyReport, out: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    summary = Table(title="bcm verify", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    rows = [
        ("pod5 files", report.pod5_files, False),
        ("reads in them", report.input_reads, False),
        ("FASTQ files", report.fastq_files, False),
        ("FASTQ records", report.fastq_records, False),
        ("missing reads", report.missing, True),
        ("duplicated reads", report.duplicated, True),
        ("unexpected reads", report.unexpected, True),
        ("unreadable pod5 files", report.unreadable, True),
        ("unreadable FASTQ files", len(report.fastq_errors), True),
        ("quarantined files", len(report.quarantined), False),
        ("incomplete pod5 (skipped)", len(report.incomplete), False),
    ]
    for label, value, bad in rows:
        style = "red" if bad and value else ""
        summary.add_row(label, f"[{style}]{value}[/]" if style else str(value))
    if report.input_duplicates:
        summary.add_row("reads in more than one pod5", str(report.input_duplicates))
    out.print(summary)

    if report.files:
        table = Table(title="input files with something to report", title_justify="left")
        table.add_column("pod5", overflow="fold")
        for col in ("reads", "missing", "duplicated"):
            table.add_column(col, justify="right")
        table.add_column("note", overflow="fold")
        for entry in report.files[:_SHOWN_FILES]:
            notes = []
            if entry.quarantined is not None:
                notes.append(f"quarantined: {entry.quarantined}")
            if entry.error:
                notes.append(f"unreadable: {entry.error}")
            if entry.missing_ids:
                notes.append("missing e.g. " + entry.missing_ids[0])
            elif entry.duplicated_ids:
                notes.append("duplicated e.g. " + entry.duplicated_ids[0])
            table.add_row(
                escape(entry.path),
                str(entry.reads),
                str(entry.missing),
                str(entry.duplicated),
                escape("; ".join(notes)),
            )
        out.print(table)
        if len(report.files) > _SHOWN_FILES:
            out.print(f"... and {len(report.files) - _SHOWN_FILES} more file(s); see --json")
    for rid, where in list(report.duplicate_locations.items())[:10]:
        out.print(f"duplicated {rid} in: " + escape(", ".join(where)))
    if report.unexpected_ids:
        shown = ", ".join(report.unexpected_ids[:10])
        more = report.unexpected - min(10, len(report.unexpected_ids))
        out.print(f"unexpected read ids: {shown}" + (f" (+{more} more)" if more > 0 else ""))
    for path, problem in report.fastq_errors.items():
        out.print(f"[red]FASTQ problem[/] {escape(path)}: {escape(problem)}")
    for rel in report.incomplete[:10]:
        out.print(f"incomplete pod5 (not checked): {escape(rel)}")
    for rel, reason in report.quarantined.items():
        if not any(f.path == rel for f in report.files):
            out.print(f"quarantined (not under INPUT now): {escape(rel)}: {escape(reason)}")
    if report.ok:
        out.print(f"[green]OK[/]: all {report.input_reads} read ids present exactly once")
    else:
        out.print("[red]FAILED[/]: the output does not hold every read exactly once")
