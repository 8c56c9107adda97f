"""`bcm slurm`: engines as Slurm jobs, and the controller that releases idle ones.

Both subcommands take the options of `bcm engine` (taken from that command, so they
never drift apart) and pass the ones given on to every engine job.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bcmanager.cli._common import friendly_errors, logging_options, setup_logging

log = logging.getLogger("bcmanager.cli.slurm")

F = TypeVar("F", bound=Callable[..., Any])

# `bcm engine` options that a job sets itself (or that are the controller's own).
NOT_FORWARDED = {"manager_url", "engine_id", "until_empty", "log_level", "log_format"}


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


def build_script(manager_url: str, values: dict[str, Any]) -> str:
    from bcmanager.cluster import JobSpec, render_script

    spec = JobSpec(
        partition=values.pop("partition"),
        gres=values.pop("gres"),
        time=values.pop("time_limit"),
        account=values.pop("account"),
        job_name=values.pop("job_name"),
        log_dir=values.pop("log_dir"),
        extra=tuple(values.pop("sbatch_args")),
    )
    if spec.log_dir is not None:
        spec.log_dir.mkdir(parents=True, exist_ok=True)
    return render_script(manager_url, engine_argv(values), spec)


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
    once: bool,
    log_level: str,
    log_format: str,
    **values: Any,
) -> None:
    """Cancel idle engine jobs, submit more while the backlog is long (replaces BCController)."""
    setup_logging(log_level, log_format)
    from bcmanager.cluster import Controller, JobsFile, Policy

    policy = Policy(
        idle_after_s=idle_after_s, max_engines=max_engines, target_drain_s=target_drain_s
    )
    script = build_script(manager_url, values)
    ctl = Controller(manager_url, policy, JobsFile(jobs_file), script)
    if once:
        decision = ctl.step()  # an unreachable manager: a clear message, non-zero exit
        click.echo(
            f"cancel: {', '.join(decision.cancel) or 'none'}; submit: {decision.submit}"
            + "".join(f"\n  {reason}" for reason in decision.reasons)
        )
        return
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "controller for %s: idle after %.0f s, up to %d engine(s), every %.0f s",
        manager_url,
        idle_after_s,
        max_engines,
        interval_s,
    )
    ctl.run(interval_s, stopping)
    log.info("controller stopped")
    sys.exit(0)
