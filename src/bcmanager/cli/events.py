"""`bcm events`: the ledger's event log of a manager, once or followed as it grows."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from bcmanager.cli._http import Unreachable, get_json

PAGE = 1000  # the most /v1/events answers at once


@click.command("events")
@click.option("--manager", "manager_url", default="http://127.0.0.1:40765", show_default=True)
@click.option("--follow", "-f", is_flag=True, help="keep printing new events until Ctrl-C")
@click.option("--after", type=click.IntRange(min=0), default=0, help="start after this event id")
@click.option("--last", type=click.IntRange(min=1), help="start with the last N events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="--follow"
)
def command(
    manager_url: str, follow: bool, after: int, last: int | None, as_json: bool, interval: float
) -> None:
    """Print the manager's event log: state changes of files and jobs, restarts, run ends.

    Exit status 1 with a message when the manager cannot be reached.
    """
    if last is not None:
        after = max(after, _last_id(manager_url) - last)
    after = _print_page(manager_url, after, as_json)
    gone = False
    try:
        while follow:
            time.sleep(interval)
            try:
                after = _print_page(manager_url, after, as_json)
            except Unreachable as exc:
                # Following survives a manager restart: say so once, keep trying.
                if not gone:
                    click.echo(f"{exc.message}; still trying", err=True)
                gone = True
                continue
            if gone:
                click.echo("the manager answers again", err=True)
                gone = False
    except KeyboardInterrupt:
        pass


def _last_id(manager_url: str) -> int:
    events = get_json(manager_url, "/v1/status").get("events") or []
    return int(events[-1]["id"]) if events else 0


def _print_page(manager_url: str, after: int, as_json: bool) -> int:
    """Print every event after `after` (paging through); returns the last id printed."""
    while True:
        events = get_json(manager_url, "/v1/events", {"after": after, "limit": PAGE})["events"]
        for event in events:
            click.echo(json.dumps(event) if as_json else format_event(event))
            after = int(event["id"])
        if len(events) < PAGE:
            return after


def format_event(e: dict[str, Any]) -> str:
    """`2026-01-01 12:00:00.123  #42  job 7  assigned -> merging  x3  detail`."""
    at = datetime.fromtimestamp(float(e["at"])).isoformat(sep=" ", timespec="milliseconds")
    parts = [at, f"#{e['id']}", str(e.get("entity") or "")]
    if e.get("job_id") is not None:
        parts.append(f"job {e['job_id']}")
    if e.get("from") or e.get("to"):
        parts.append(f"{e.get('from') or '(new)'} -> {e.get('to') or ''}")
    if e.get("count", 1) != 1:
        parts.append(f"x{e['count']}")
    if e.get("detail"):
        parts.append(str(e["detail"]))
    return "  ".join(parts)
