"""`bcm verify`: check that every read of INPUT is in OUTPUT exactly once (either layout)."""

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
_SHOWN_RUNS = 50  # run folders in the yield table


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
    help="the output directory (legacy pass/ and fail/, or MinKNOW run folders)",
)
@click.option(
    "--generation",
    help="the model generation whose tree to check (OUTPUT/generations/NAME)"
    " [default: the reads at OUTPUT's root]",
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
    generation: str | None,
    as_json: bool,
    workers: int | None,
    max_listed: int,
    log_level: str,
    log_format: str,
) -> None:
    """Check that every read of INPUT's pod5 files is in OUTPUT exactly once.

    Reads BAM, SAM, FASTQ and gzipped FASTQ anywhere under OUTPUT, in the legacy layout
    (pass/, fail/) or the MinKNOW one (<run folder>/{bam,fastq}_{pass,fail}/<barcode>/);
    split reads count for their parent. Where a run folder has a sequencing summary, its
    rows must match the run's records one to one. Prints counts per run and barcode.

    Exit status 0 when all is well, 1 when reads are missing, duplicated or unexpected, a
    summary does not match its reads, or a file could not be read. Files in
    OUTPUT/QUARANTINE/quarantined.tsv may be missing.
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
            input_dir,
            output_dir,
            workers=workers,
            max_listed=max_listed,
            progress=progress,
            generation=generation,
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
    formats = ", ".join(f"{n} {fmt}" for fmt, n in report.formats.items())
    rows = [
        ("layout", report.layout, False),
        ("pod5 files", report.pod5_files, False),
        ("reads in them", report.input_reads, False),
        ("read files", f"{report.read_files}" + (f" ({formats})" if formats else ""), False),
        ("records", report.records, False),
        ("bases", report.bases, False),
        ("summary files", report.summary_files, False),
        ("summary rows", report.summary_rows, False),
        ("missing reads", report.missing, True),
        ("filtered by the basecaller (listed)", report.filtered, False),
        ("duplicated reads", report.duplicated, True),
        ("unexpected reads", report.unexpected, True),
        ("unreadable pod5 files", report.unreadable, True),
        ("unreadable read files", len(report.read_errors), True),
        ("run folders with summary problems", report.summary_problems, True),
        ("quarantined files", len(report.quarantined), False),
        ("incomplete pod5 (skipped)", len(report.incomplete), False),
    ]
    for label, value, bad in rows:
        style = "red" if bad and value else ""
        summary.add_row(label, f"[{style}]{value}[/]" if style else str(value))
    if report.input_duplicates:
        summary.add_row("reads in more than one pod5", str(report.input_duplicates))
    out.print(summary)
    _print_yield(report, out)
    _print_summary_checks(report, out)

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
            if entry.missing_ranges and len(entry.missing_ranges) <= 3:
                places = ", ".join(f"{a}-{b}" for a, b in entry.missing_ranges)
                notes.append(f"reads {places} of {entry.reads}")  # read order, as slices
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
    for path, problem in report.read_errors.items():
        out.print(f"[red]unreadable read file[/] {escape(path)}: {escape(problem)}")
    for rel in report.incomplete[:10]:
        out.print(f"incomplete pod5 (not checked): {escape(rel)}")
    for rel, reason in report.quarantined.items():
        if not any(f.path == rel for f in report.files):
            out.print(f"quarantined (not under INPUT now): {escape(rel)}: {escape(reason)}")
    if report.ok:
        out.print(f"[green]OK[/]: all {report.input_reads} read ids present exactly once")
    elif report.summary_problems and not (
        report.missing or report.duplicated or report.unexpected or report.unreadable
    ):
        out.print("[red]FAILED[/]: a sequencing summary does not match its reads")
    else:
        out.print("[red]FAILED[/]: the output does not hold every read exactly once")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _print_yield(report: VerifyReport, out: Console) -> None:
    """Reads, bases and pass share per run folder and barcode."""
    from rich.markup import escape
    from rich.table import Table

    if not report.runs:
        return
    table = Table(title="yield per run folder and barcode", title_justify="left")
    table.add_column("run folder", overflow="fold")
    table.add_column("barcode")
    for col in ("files", "reads", "bases", "pass", "fail", "pass share", "summary"):
        table.add_column(col, justify="right")
    for run in report.runs[:_SHOWN_RUNS]:
        summary = "-"
        if run.summary is not None:
            summary = f"{run.summary.rows} rows" + ("" if run.summary.ok else " [red]![/]")
        table.add_row(
            f"[bold]{escape(run.run_folder)}[/]",
            "[bold]all[/]",
            str(run.files),
            str(run.reads),
            str(run.bases),
            str(run.pass_reads),
            str(run.fail_reads),
            _share(run.pass_share),
            summary,
        )
        if len(run.barcodes) > 1 or (run.barcodes and run.barcodes[0].barcode is not None):
            for bc in run.barcodes:
                table.add_row(
                    "",
                    escape(bc.barcode or "-"),
                    str(bc.files),
                    str(bc.reads),
                    str(bc.bases),
                    str(bc.pass_reads),
                    str(bc.fail_reads),
                    _share(bc.pass_share),
                    "",
                )
    out.print(table)
    if len(report.runs) > _SHOWN_RUNS:
        out.print(f"... and {len(report.runs) - _SHOWN_RUNS} more run folder(s); see --json")


def _print_summary_checks(report: VerifyReport, out: Console) -> None:
    """What each run's sequencing summary says against its reads."""
    from rich.markup import escape

    for run in report.runs:
        check = run.summary
        if check is None:
            continue
        name = escape(run.run_folder)
        if check.legacy_records:
            out.print(
                f"{name}: {check.legacy_records} record(s) with no summary row (legacy engine)"
            )
        if check.ok:
            continue
        out.print(
            f"[red]summary mismatch[/] in {name} ({check.rows} rows, {check.matched} matched):"
        )
        problems = [
            (
                "read(s) without a summary row",
                check.records_without_row,
                check.records_without_row_ids,
            ),
            ("summary row(s) without a read", check.rows_without_read, check.rows_without_read_ids),
            ("read id(s) with more than one row", check.duplicated_rows, check.duplicated_row_ids),
            (
                "row(s) naming a file that does not hold the read",
                check.wrong_file_rows,
                check.wrong_file_ids,
            ),
        ]
        for label, count, ids in problems:
            if count:
                example = f", e.g. {ids[0]}" if ids else ""
                out.print(f"  {count} {label}{example}")
        if check.dangling_rows:
            files = ", ".join(
                f"{escape(n or '(empty)')} ({c})" for n, c in check.dangling_files.items()
            )
            out.print(f"  {check.dangling_rows} row(s) naming a missing file: {files}")
        for path, problem in check.errors.items():
            out.print(f"  unreadable summary {escape(path)}: {escape(problem)}")
