"""`bcm generations list|add`: the model generations of a running manager."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bcmanager.cli._common import friendly_errors, read_token
from bcmanager.cli._http import get_json, post_json
from bcmanager.generations import parse_spec

MANAGER_OPTION = click.option(
    "--manager", "manager_url", default="http://127.0.0.1:40765", show_default=True
)


@click.group("generations")
def group() -> None:
    """Basecall the run again with another model: list or add model generations."""


@group.command("list")
@MANAGER_OPTION
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
def list_command(manager_url: str, as_json: bool) -> None:
    """Each generation (the live one first) with its model, tree and files by state."""
    gens = get_json(manager_url, "/v1/generations")["generations"]
    if as_json:
        click.echo(json.dumps(gens, indent=1))
        return
    for gen in gens:
        click.echo(line(gen))


def line(gen: dict[str, Any]) -> str:
    files = gen.get("files", {})
    total = sum(files.values())
    role = "live" if gen.get("live") else "backfill"
    options = ", ".join(f"{k} {v}" for k, v in (gen.get("options") or {}).items())
    model = gen.get("model") or "the engines' own model"
    return (
        f"{gen['name']:<12} {role:<8} {model}{f' ({options})' if options else ''}"
        f"  -> OUTPUT/{gen.get('output', '.')}"
        f"  {files.get('done', 0)}/{total} done, {files.get('queued', 0)} queued,"
        f" {files.get('assigned', 0)} running, {files.get('quarantined', 0)} quarantined"
    )


@group.command("add")
@MANAGER_OPTION
@click.argument("spec", metavar="NAME=MODEL[:OPTIONS]")
@click.option("--token-file", type=click.Path(path_type=Path), help="shared secret (or $BCM_TOKEN)")
@friendly_errors
def add_command(manager_url: str, spec: str, token_file: Path | None) -> None:
    """Add a backfill generation: every file of the run, basecalled or not, is queued for
    it after all earlier generations' work; its reads go to OUTPUT/generations/NAME.

    OPTIONS: kit-name=KIT,modified-bases=M1+M2,reference=PATH (a FASTA or .mmi on the
    GPU nodes, to align this generation's reads to). Adding the same generation again changes
    nothing; the same NAME with another recipe is refused."""
    gen = parse_spec(spec)  # a bad spec is refused here, before the manager is asked
    body = {"name": gen.name, "model": gen.model, "modified_bases": list(gen.modified_bases)}
    if gen.kit_name:
        body["kit_name"] = gen.kit_name
    if gen.reference:
        body["reference"] = gen.reference
    status, answer = post_json(manager_url, "/v1/generations", body, read_token(token_file))
    if status != 200:
        raise click.ClickException(f"the manager refused it (HTTP {status}): {answer.get('error')}")
    added = answer["generation"]
    verb = "added" if answer["created"] else "already there, unchanged:"
    click.echo(f"generation {verb} {added['name']} ({added['model']}) -> OUTPUT/{added['output']}")
