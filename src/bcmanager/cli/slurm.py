"""`bcm slurm`: engines as Slurm jobs, and the controller that releases idle ones.

Both subcommands take the options of `bcm engine` (taken from that command, so they
never drift apart) and pass the ones given on to every engine job.
"""

from __future__ import annotations

import logging
import shlex
import signal
import string
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bcmanager.cli._common import friendly_errors, logging_options, read_token, setup_logging

if TYPE_CHECKING:
    from bcmanager.cluster import Decision, JobSpec

log = logging.getLogger("bcmanager.cli.slurm")

F = TypeVar("F", bound=Callable[..., Any])

# `bcm engine` options that a job sets itself (or that are the controller's own).
NOT_FORWARDED = {"manager_url", "engine_id", "until_empty", "log_level", "log_format"}
# Basecallers whose engines run whichever generation's model a batch names (claim with
# models "any"; a command template too when it names {model}); the others get the live
# generation's work only, never backfill.
ANY_MODEL_BASECALLERS = frozenset({"dorado", "simulated"})


def engine_params() -> list[click.Parameter]:
    from bcmanager.cli.engine import command as engine

    return [p for p in engine.params if p.name not in NOT_FORWARDED]


def engine_argv(values: dict[str, Any]) -> list[str]:
    """The `bcm engine` arguments for the engine options given (defaults left out)."""
    argv: list[str] = []
    for param in engine_params():
        value = values.get(param.name or "")
        if not isinstance(param, click.Option) or value is None:
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            argv += [flag] if value else []
        elif param.name == "basecaller" or value != param.default:
            shown = str(value.absolute()) if isinstance(value, Path) else str(value)
            argv += [flag, shown]
    return argv


def job_options(func: F) -> F:
    """sbatch options of each engine job, and the record of submitted job ids."""
    options = [
        click.option("--manager", "manager_url", required=True, help="e.g. http://node1:40765"),
        click.option("--partition", help="Slurm partition [cluster default]"),
        click.option("--qos", help="Slurm QOS [the account's default]"),
        click.option("--gres", help="e.g. gpu:1"),
        click.option("--time", "time_limit", help="time limit, e.g. 3-00:00:00"),
        click.option("--account", help="Slurm account"),
        click.option("--job-name", default="bcm-engine", show_default=True),
        click.option(
            "--log-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="engine logs as JOBNAME-JOBID.log [sbatch's default]",
        ),
        click.option(
            "--sbatch-arg",
            "sbatch_args",
            multiple=True,
            help="another sbatch option, e.g. --constraint=a100 (repeatable)",
        ),
        click.option(
            "--jobs-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default="bcm-slurm-jobs.json",
            show_default=True,
            help="record of submitted job ids (and the controller's memory)",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def with_engine_options(cmd: click.Command) -> click.Command:
    cmd.params.extend(engine_params())
    return cmd


def job_spec(values: dict[str, Any]) -> JobSpec:
    """The job options given, taken out of `values` (what is left is the engine's)."""
    from bcmanager.cluster import JobSpec

    spec = JobSpec(
        partition=values.pop("partition"),
        qos=values.pop("qos"),
        gres=values.pop("gres"),
        time=values.pop("time_limit"),
        account=values.pop("account"),
        job_name=values.pop("job_name"),
        log_dir=values.pop("log_dir"),
        extra=tuple(values.pop("sbatch_args")),
    )
    if spec.log_dir is not None:
        spec.log_dir.mkdir(parents=True, exist_ok=True)
    return spec


def build_script(manager_url: str, values: dict[str, Any]) -> str:
    from bcmanager.cluster import render_script

    spec = job_spec(values)
    return render_script(manager_url, engine_argv(values), spec)


def runs_any_model(values: dict[str, Any]) -> bool:
    """Whether engines with these options take backfill work (the basecallers' own rule,
    read from the options: a command template is not built here, its program may live on
    the GPU nodes only)."""
    if values.get("basecaller") in ANY_MODEL_BASECALLERS:
        return True
    if values.get("basecaller") != "command":
        return False
    try:
        words = shlex.split(values.get("command_template") or "")
        return any(f == "model" for w in words for _, f, _, _ in string.Formatter().parse(w))
    except ValueError:  # bad quoting or braces: the engine itself will say so
        return False


def backfill_jobs(
    spec: JobSpec, partition: str | None, qos: str | None, any_model: bool
) -> tuple[JobSpec | None, str]:
    """The spec of backfill jobs (None: as any other) and where they go, in words."""
    if not (partition or qos):
        return None, ""
    if not any_model:
        raise click.UsageError(
            "--backfill-partition/--backfill-qos: these engines run their own model only, so"
            " they never get backfill work (use dorado, simulated, or a command template"
            " with {model})"
        )
    where = [f"partition {partition}"] if partition else []
    where += [f"QOS {qos}"] if qos else []
    return spec.for_backfill(partition, qos), ", ".join(where)


@click.group("slurm")
def group() -> None:
    """Run engines as Slurm jobs; release their nodes when idle."""


@with_engine_options
@group.command("submit-engines")
@job_options
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="engine jobs to submit (one node each)")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="print the sbatch script, submit nothing")
@logging_options
@friendly_errors
def submit_engines(
    manager_url: str,
    jobs_file: Path,
    nodes: int,
    dry_run: bool,
    log_level: str,
    log_format: str,
    **values: Any,
) -> None:
    """Submit NODES engine jobs, each running `bcm engine` against the manager."""
    setup_logging(log_level, log_format)
    from bcmanager.cluster import JobsFile, Slurm, submit_engines

    script = build_script(manager_url, values)
    if dry_run:
        click.echo(script, nl=False)
        return
    ids = submit_engines(Slurm(), JobsFile(jobs_file), script, nodes, manager_url)
    for job_id in ids:
        click.echo(f"submitted engine job {job_id}")
    click.echo(f"recorded in {jobs_file}")


@with_engine_options
@group.command("controller")
@job_options
@click.option("--idle-after", "idle_after_s", type=click.FloatRange(min=0), default=300.0,
              show_default=True, help="cancel an engine without a batch this long (queue empty)")  # fmt: skip
@click.option("--max-engines", type=click.IntRange(min=0), default=0, show_default=True,
              help="submit engine jobs up to this many (0: never submit)")  # fmt: skip
@click.option("--target-drain", "target_drain_s", type=click.FloatRange(min=1), default=1800.0,
              show_default=True, help="submit more while the backlog needs longer to drain")  # fmt: skip
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="seconds between looks")  # fmt: skip
@click.option("--backfill-partition",
              help="partition of jobs wanted only for backfill generations [--partition]")  # fmt: skip
@click.option("--backfill-qos", help="QOS of jobs wanted only for backfill generations [--qos]")
@click.option(
    "--tell-fleet/--no-tell-fleet",
    "telling",
    default=True,
    show_default=True,
    help="tell the manager how many engine jobs there are (pending ones too), so that it"
    " keeps a part of the tail for engines still waiting for a node ($BCM_TOKEN if the"
    " manager has a token)",
)
@click.option("--once", is_flag=True, help="look, act, print the decision and exit")
@logging_options
@friendly_errors
def controller(
    manager_url: str,
    jobs_file: Path,
    idle_after_s: float,
    max_engines: int,
    target_drain_s: float,
    interval_s: float,
    backfill_partition: str | None,
    backfill_qos: str | None,
    telling: bool,
    once: bool,
    log_level: str,
    log_format: str,
    **values: Any,
) -> None:
    """Cancel idle engine jobs, submit more while the backlog is long (replaces BCController).

    Jobs for the live generation's backlog come first; those wanted only for backfill
    generations go to --backfill-partition / --backfill-qos where given."""
    setup_logging(log_level, log_format)
    from bcmanager.cluster import Controller, JobsFile, Policy, render_script, tell_fleet

    any_model = runs_any_model(values)
    policy = Policy(
        idle_after_s=idle_after_s,
        max_engines=max_engines,
        target_drain_s=target_drain_s,
        any_model=any_model,
    )
    spec = job_spec(values)
    backfill, where = backfill_jobs(spec, backfill_partition, backfill_qos, any_model)
    argv = engine_argv(values)
    ctl = Controller(
        manager_url,
        policy,
        JobsFile(jobs_file),
        render_script(manager_url, argv, spec),
        backfill_script=render_script(manager_url, argv, backfill) if backfill else None,
        backfill_label=where,
        fleet_teller=partial(tell_fleet, token=read_token(None)) if telling else None,
    )
    if once:
        decision = ctl.step()  # an unreachable manager: a clear message, non-zero exit
        click.echo(describe_decision(decision))
        return
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "controller for %s: idle after %.0f s, up to %d engine(s), every %.0f s%s",
        manager_url,
        idle_after_s,
        max_engines,
        interval_s,
        f"; backfill jobs to {where}" if where else "",
    )
    ctl.run(interval_s, stopping)
    log.info("controller stopped")
    sys.exit(0)


def describe_decision(decision: Decision) -> str:
    """`--once`'s answer: what is cancelled, what submitted for which backlog, and why."""
    submit = f"submit: {decision.submit}"
    if decision.submit:
        submit += f" ({decision.live} live, {decision.backfill} backfill)"
    return f"cancel: {', '.join(decision.cancel) or 'none'}; {submit}" + "".join(
        f"\n  {reason}" for reason in decision.reasons
    )
