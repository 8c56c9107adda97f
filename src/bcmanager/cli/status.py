"""`bcm status`: a manager's progress as tables (or JSON), once or refreshed in place.

With model generations beyond the implicit one, files, reads and the ETA are the live
generation's (the run as it is written), a generations table shows each generation's
files by state and progress, and the yield table names the generation of each row.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bcmanager.cli._http import Unreachable, get_json

EVENTS_SHOWN = 10
QUARANTINE_SHOWN = 10


@click.command("status")
@click.option("--manager", "manager_url", default="http://127.0.0.1:40765", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print /v1/status as JSON (one per refresh)")
@click.option("--watch", is_flag=True, help="refresh in place until Ctrl-C")
@click.option(
    "--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="--watch"
)
def command(manager_url: str, as_json: bool, watch: bool, interval: float) -> None:
    """Files by state, reads, throughput, ETA, runs, engines and recent events of a manager.

    Exit status 1 with a message when the manager cannot be reached.
    """
    status = get_json(manager_url, "/v1/status")
    if as_json:
        # With --watch: one JSON document per line, for scripts that read a stream.
        _print_json(status, compact=watch)
        while watch:
            time.sleep(interval)
            _print_json(get_json(manager_url, "/v1/status"), compact=True)
        return
    console = Console()
    if not watch:
        console.print(render(status, manager_url))
        return
    with Live(
        render(status, manager_url), console=console, screen=False, auto_refresh=False
    ) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    view = render(get_json(manager_url, "/v1/status"), manager_url)
                except Unreachable as exc:
                    view = Text(f"{exc.message}\nretrying every {interval:g} s", style="bold red")
                live.update(view, refresh=True)
        except KeyboardInterrupt:
            pass


def _print_json(status: dict[str, Any], compact: bool) -> None:
    click.echo(json.dumps(status, indent=None if compact else 2))


# -- formatting ------------------------------------------------------------------------


def si(value: float | None, unit: str) -> str:
    """1234567 -> '1.23 M<unit>'."""
    if value is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def clock(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at).strftime("%H:%M:%S")


def rate(throughput: dict[str, Any]) -> str:
    """samples/s where every file's count is known, else pod5 bytes/s (and says so)."""
    if throughput.get("samples_per_s") is not None:
        return si(throughput["samples_per_s"], "samples/s")
    return si(throughput.get("bytes_per_s", 0.0), "B/s") + " (pod5)"


# -- the tables --------------------------------------------------------------------------


def render(status: dict[str, Any], manager_url: str) -> RenderableType:
    """Everything `bcm status` shows, as one rich renderable."""
    parts: list[RenderableType] = [_headline(status, manager_url), _summary(status)]
    if generations_shown(status):
        parts.append(_generations(status))
    if status.get("runs"):
        parts.append(_runs(status))
    if status.get("yields"):
        parts.append(_yields(status))
    parts.append(_engines(status))
    if status.get("sliced"):
        parts.append(_sliced(status))
    if status.get("quarantined"):
        parts.append(_quarantine(status))
    parts.append(_events(status))
    return Group(*parts)


def generations_shown(status: dict[str, Any]) -> bool:
    """Whether there is more to show than the implicit generation (one, no model of its own)."""
    gens = status.get("generations") or []
    return len(gens) > 1 or any(g.get("model") for g in gens)


def live_generation(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((g for g in status.get("generations") or [] if g.get("live")), None)


def _busy(files: dict[str, int]) -> bool:
    return bool(files.get("queued") or files.get("assigned"))


def _headline(status: dict[str, Any], manager_url: str) -> Text:
    files = status["files"]
    live = live_generation(status)
    backfill = [g["name"] for g in status.get("generations") or [] if not g.get("live")]
    if live is not None and not _busy(live["files"]) and _busy(files) and backfill:
        busy = [g["name"] for g in status["generations"] if not g["live"] and _busy(g["files"])]
        state, style = f"live caught up, backfilling {', '.join(busy)}", "bold blue"
    elif _busy(files):
        state, style = "basecalling", "bold blue"
    elif status.get("state") == "done":
        state, style = "done: every run ended and every file basecalled", "bold green"
    elif status.get("finished"):
        state, style = "caught up: everything found so far is basecalled", "bold green"
    else:
        state, style = "waiting for files", "bold"
    text = Text()
    text.append(f"bcmanager {manager_url}  ")
    text.append(state, style=style)
    text.append(f"\n  {status['input']} -> {status['output']}  (at {clock(status.get('now'))})")
    space = status.get("output_space") or {}
    if space.get("short"):
        text.append(
            f"\n  paused since {clock(space.get('short_since'))}: OUTPUT has"
            f" {si(space.get('free_bytes') or 0, 'B')} free, under the"
            f" {si(space['min_free_bytes'], 'B')} minimum (--min-free); no batch is handed out",
            style="bold red",
        )
    return text


def _summary(status: dict[str, Any]) -> Table:
    files = status["files"]
    total = status.get("files_total", sum(files.values()))
    title, scope = "Files", ""
    live = live_generation(status)
    if generations_shown(status) and live is not None:
        files, total = live["files"], sum(live["files"].values())
        title, scope = f"Files (live generation: {live['name']})", " (all generations)"
    progress = status.get("progress", {})
    written = progress.get("written", {})
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("state")
    table.add_column("files", justify="right")
    table.add_column("share", justify="right")
    for state, n in files.items():
        share = f"{100 * n / total:.1f}%" if total else "-"
        table.add_row(state, f"{n:,}", share)
    table.add_row("written", f"{total:,}", "", style="bold")
    throughput = status.get("throughput", {})
    done = progress.get("done", {})
    known = "" if done.get("counts_known", True) else "  (read counts not known for every file)"
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="dim")
    lines.add_column()
    lines.add_row("reads basecalled", f"{done.get('reads', 0):,}{known}")
    lines.add_row(
        "pod5 basecalled", f"{si(done.get('bytes'), 'B')} of {si(written.get('bytes'), 'B')}"
    )
    lines.add_row(
        "throughput",
        f"{rate(throughput)}, {throughput.get('files_per_min', 0):.1f} files/min"
        f" (last {duration(throughput.get('window_s'))}){scope}",
    )
    eta = status.get("eta_s")
    live_note = f" ({live['name']})" if scope and live is not None else ""
    lines.add_row(
        "ETA" + live_note,
        "done" if eta == 0 else duration(eta) + " for what is written so far",
    )
    jobs = ", ".join(f"{n} {s}" for s, n in status.get("jobs", {}).items() if n)
    lines.add_row("jobs", jobs or "none yet")
    outer = Table.grid(padding=(0, 4))
    outer.add_row(table, lines)
    return outer


def _generations(status: dict[str, Any]) -> Table:
    """Each model generation: its role, model, files by state, share done and ETA."""
    table = Table(title="Generations", title_justify="left", show_edge=False)
    for name, justify in (
        ("generation", "left"),
        ("role", "left"),
        ("model", "left"),
        ("done", "right"),
        ("queued", "right"),
        ("running", "right"),
        ("quarantined", "right"),
        ("progress", "right"),
        ("ETA", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in status["generations"]:
        files = g["files"]
        share = g.get("share")
        eta = g.get("eta_s")
        table.add_row(
            g["name"],
            "live" if g.get("live") else "backfill",
            _recipe(g),
            f"{files.get('done', 0):,}",
            f"{files.get('queued', 0):,}",
            f"{files.get('assigned', 0):,}",
            f"{files.get('quarantined', 0):,}",
            "-" if share is None else f"{100 * share:.1f}%",
            "done" if eta == 0 else duration(eta),
        )
    return table


def _recipe(gen: dict[str, Any]) -> str:
    """The model and the options that change reads, in a few words."""
    options = gen.get("options") or {}
    extras = [f"kit {options['kit_name']}"] if options.get("kit_name") else []
    if options.get("modified_bases"):
        extras.append("mods " + "+".join(options["modified_bases"]))
    model = gen.get("model") or "the engines' own"
    return model + (f" ({', '.join(extras)})" if extras else "")


def _runs(status: dict[str, Any]) -> Table:
    table = Table(title="Runs", title_justify="left", show_edge=False)
    for name, justify in (
        ("run", "left"),
        ("state", "left"),
        ("done", "right"),
        ("files", "right"),
        ("quarantined", "right"),
        ("pod5", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for run in status["runs"]:
        files = run["files"]
        table.add_row(
            run["run"],
            run["state"],
            f"{files.get('done', 0):,}",
            f"{run['written']['files']:,}",
            f"{files.get('quarantined', 0):,}",
            si(run["written"]["bytes"], "B"),
        )
    return table


def _yields(status: dict[str, Any]) -> Table:
    by_generation = generations_shown(status)
    title = (
        "Yield per generation, run and barcode" if by_generation else "Yield per run and barcode"
    )
    table = Table(title=title, title_justify="left", show_edge=False)
    columns = [("generation", "left")] if by_generation else []
    for name, justify in (
        *columns,
        ("run folder", "left"),
        ("barcode", "left"),
        ("reads", "right"),
        ("bases", "right"),
        ("N50", "right"),
        ("mean Q", "right"),
        ("pass", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for y in status["yields"]:
        table.add_row(
            *([y.get("generation", "")] if by_generation else []),
            y["run"],
            y["barcode"],
            f"{y['reads']:,}",
            si(y["bases"], "b"),
            f"{y['n50']:,}",
            f"{y['mean_qscore']:.1f}",
            f"{100 * y['pass_share']:.1f}%",
        )
    return table


def _engines(status: dict[str, Any]) -> RenderableType:
    expected = status.get("expected_engines")
    if not status.get("engines"):
        more = f" ({expected} expected)" if expected else ""
        return Text(f"Engines: none has called yet{more}", style="dim")
    jobs = {j["job_id"]: j for j in status.get("running_jobs", [])}
    title = "Engines" + (f" ({len(status['engines'])} of {expected} expected)" if expected else "")
    table = Table(title=title, title_justify="left", show_edge=False)
    for name, justify in (
        ("engine", "left"),
        ("current job", "left"),
        ("throughput", "right"),
        ("files done", "right"),
        ("last seen", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in status["engines"]:
        job = jobs.get(e["job_id"]) if e.get("job_id") is not None else None
        current = "idle" if e.get("job_id") is None else f"#{e['job_id']}"
        if job is not None:
            current += f" ({job['n_files']} files, {duration(status['now'] - job['created'])})"
        done = e.get("basecalled", {}).get("files", e.get("files_done", 0))
        throughput = e.get("throughput") or {}
        table.add_row(
            e["engine"],
            current,
            rate(throughput) if throughput else "-",
            f"{done:,}",
            f"{duration(e['last_seen_s'])} ago",
        )
    return table


def _sliced(status: dict[str, Any]) -> Table:
    """Large files going out in slices (--slice-above): their reads by where they are."""
    table = Table(title="Files in slices", title_justify="left", show_edge=False)
    for name in ("file", "generation", "slices", "reads merged", "out", "queued"):
        table.add_column(name, justify="left" if name in ("file", "generation") else "right")
    for s in status["sliced"]:
        reads = s.get("reads") or 0
        done = s.get("reads_done", 0)
        share = f" ({100 * done / reads:.0f} %)" if reads else ""
        table.add_row(
            s["path"],
            s.get("generation", ""),
            f"{s.get('slices', 0):,}",
            f"{done:,} / {reads:,}{share}",
            f"{s.get('reads_out', 0):,}",
            f"{s.get('reads_queued', 0):,}",
        )
    return table


def _quarantine(status: dict[str, Any]) -> Table:
    table = Table(title="Quarantined", title_justify="left", show_edge=False)
    table.add_column("file")
    table.add_column("reason")
    for q in status["quarantined"][:QUARANTINE_SHOWN]:
        table.add_row(q["path"], q.get("reason") or "")
    more = status["files"].get("quarantined", 0) - QUARANTINE_SHOWN
    if more > 0:
        table.caption = f"and {more:,} more"
    return table


def _events(status: dict[str, Any]) -> Table:
    table = Table(title="Recent events", title_justify="left", show_edge=False)
    for name in ("time", "what", "job", "change", "count", "detail"):
        table.add_column(name, justify="right" if name in ("job", "count") else "left")
    for e in status.get("events", [])[-EVENTS_SHOWN:]:
        table.add_row(*event_cells(e))
    return table


def event_cells(e: dict[str, Any]) -> list[str]:
    """One ledger event as table cells (shared with `bcm events`)."""
    change = f"{e.get('from') or ''} -> {e.get('to') or ''}" if e.get("from") or e.get("to") else ""
    return [
        clock(e.get("at")),
        str(e.get("entity") or ""),
        "" if e.get("job_id") is None else str(e["job_id"]),
        change,
        str(e.get("count", "")),
        str(e.get("detail") or ""),
    ]
