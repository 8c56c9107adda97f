"""`bcm manager`: the service engines talk to."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bcmanager.cli._common import friendly_errors, logging_options, read_token, setup_logging
from bcmanager.config import DEFAULT_PORT, build_settings
from bcmanager.generations import parse_spec

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("bcmanager.cli.manager")
DONE_POLL_S = 0.5
LISTEN_BACKLOG = 2048  # engines of a whole cluster may connect at once


@click.command("manager")
@click.option("--input", "input_dir", type=click.Path(path_type=Path), help="pod5 input directory")
@click.option("--output", "output_dir", type=click.Path(path_type=Path), help="FASTQ output")
@click.option("--port", type=int, default=None, help=f"[default: {DEFAULT_PORT}]")
@click.option("--host", default=None, help="address to bind [default: 127.0.0.1]")
@click.option("--db", type=click.Path(path_type=Path), help="ledger [default: OUTPUT/.bcmanager]")
@click.option("--lease", "lease_s", type=float, help="seconds an engine may stay silent [90]")
@click.option("--batch-size", type=int, help="files per batch when an engine asks for 0 [10]")
@click.option("--max-batch", type=int, help="largest batch an engine may ask for [10000]")
@click.option("--max-attempts", type=int, help="failures before a file is quarantined [3]")
@click.option("--rescan", "rescan_s", type=float, help="seconds between input rescans [10]")
@click.option("--settle", "settle_s", type=float, help="seconds a file must stay unchanged [1]")
@click.option("--watch/--no-watch", default=None, help="inotify beside the rescans [watch]")
@click.option("--target-batch", "target_batch_s", type=float, help="seconds of work per batch [60]")
@click.option(
    "--exit-when-done", is_flag=True, help="exit 0 once every run ended and is basecalled"
)
@click.option(
    "--legacy-wait",
    "legacy_wait_s",
    type=float,
    help="hold a legacy /assignwork this long while work is still expected [60]",
)
@click.option("--idle-shutdown", "idle_shutdown_s", type=float, help="/heartbeat idle after [100]")
@click.option("--token-file", type=click.Path(path_type=Path), help="shared secret (or $BCM_TOKEN)")
@click.option("--legacy-auth", type=click.Choice(["open", "token", "off"]), help="legacy routes")
@click.option(
    "--output-layout",
    type=click.Choice(["minknow", "legacy"]),
    help="MinKNOW's tree per run, or the original {pass,fail}/job_id_* [minknow; legacy"
    " with --legacy-config; an existing OUTPUT keeps its own]",
)
@click.option(
    "--generation",
    "generation_specs",
    multiple=True,
    metavar="NAME=MODEL[:OPTIONS]",
    help="a model to basecall every file with (repeatable): the first is the live one,"
    " later ones backfill in order; OPTIONS: kit-name=KIT,modified-bases=M1+M2"
    " [none: one generation, the engines' own model]",
)
@click.option(
    "--live-window",
    "live_window_s",
    type=float,
    help="while files arrived this recently, engines the live work may need stay out of"
    " backfill generations [300; 0: backfill on any idle engine]",
)
@click.option(
    "--min-free",
    "min_free_mib",
    type=click.FloatRange(0, 1e9),
    help="while OUTPUT has less free space (MiB), no batch is handed out and batches"
    " failing for it count no attempt [100; 0: never pause]",
)
@click.option(
    "--slice-above",
    "slice_above_mib",
    type=click.FloatRange(0, 1e9),
    help="a complete pod5 larger than this (MiB) goes out in slices of its reads, sized"
    " like each engine's batch, to engines that take them [2048; 0: whole files only]",
)
@click.option(
    "--speed-book",
    type=click.Path(path_type=Path, dir_okay=False),
    help="engines' measured speeds, kept for the next start; share one file between runs"
    " to know engines (by --engine-id) from the first batch [beside the ledger]",
)
@click.option(
    "--expect-engines",
    type=int,
    help="engines this run is to have (the GPU jobs submitted): until that many have"
    " called, engines are still arriving and a part of the tail is kept for them"
    " [none: inferred from the gaps between engines' first calls]",
)
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="bcm.toml")
@click.option("--legacy-config", type=click.Path(path_type=Path), help="BC-pipelines JSON")
@click.option("--node-index", type=int, default=0, show_default=True, help="with --legacy-config")
@logging_options
@friendly_errors
def command(
    input_dir: Path | None,
    output_dir: Path | None,
    config_path: Path | None,
    legacy_config: Path | None,
    node_index: int,
    token_file: Path | None,
    generation_specs: tuple[str, ...],
    exit_when_done: bool,
    log_level: str,
    log_format: str,
    **flags: object,
) -> None:
    """Watch INPUT, hand batches to engines, merge their FASTQ into OUTPUT."""
    setup_logging(log_level, log_format)
    overrides = dict(flags, input=input_dir, output=output_dir, token=read_token(token_file))
    if generation_specs:
        overrides["generations"] = tuple(parse_spec(spec) for spec in generation_specs)
    settings = build_settings(overrides, config_path, legacy_config, node_index)
    url = f"http://{settings.host}:{settings.port}"
    # Listen before anything slow (imports, recovery, the first scan): an engine started
    # in the same breath is then queued by the kernel and answered, never refused.
    listener = listen(settings.host, settings.port)
    import uvicorn

    from bcmanager.api import create_app
    from bcmanager.manager import Manager

    raise_open_files_limit()
    manager = Manager(settings)
    report = manager.open()
    calm_garbage_collector()
    counts = ", ".join(f"{n} {state}" for state, n in report.counts.items())
    click.echo(f"bcmanager listening on {url}")
    click.echo(f"  input   {settings.input}\n  output  {settings.output}")
    click.echo(
        f"  ledger  {report.ledger_path}"
        + ("  (rebuilt from the layout)" if report.rebuilt else "")
    )
    click.echo(f"  files   {counts}; {report.running_jobs} job(s) running")
    for gen in sorted(manager.generations.values(), key=lambda g: g.id):
        role = "live" if gen.is_live else "backfill"
        click.echo(f"  generation {gen.describe()} [{role}] -> OUTPUT/{gen.output_root}")
    if report.recovered_merges:
        click.echo(f"  finished {report.recovered_merges} merge(s) interrupted by a crash")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.token is None:
        log.warning(
            "bound to %s without a token: anyone who can reach it can change state", settings.host
        )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handler found at start: make that one a clean exit, since the stop *was* clean.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(manager),
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            # above every client's own keep-alive (httpx: 5 s), so that a client never
            # sends on a connection the manager has just closed (a claim answered on it
            # would be lost, and its batch wait for its lease to run out)
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    )
    if exit_when_done:
        threading.Thread(target=_stop_when_done, args=(manager, server), daemon=True).start()
    server.run(sockets=[listener])


FULL_GC_EVERY = 1000  # young collections between two full ones (Python's default: 10)
KEEP_ALIVE_S = 65  # idle HTTP connections are kept this long


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one: every engine waiting in a claim
    holds a connection, and the usual soft limit (1,024) would refuse the engines of a
    large cluster ("too many open files") long before the manager is busy."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
            return
    log.info("open files limit: %d", resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def calm_garbage_collector() -> None:
    """Make Python's full garbage collections rare. A manager holds tens of thousands of
    long-lived objects (a connection and a waiting claim per engine, each engine's
    record); a full collection walks all of them and stops the event loop meanwhile: at
    5,000 engines 90-190 ms every second or two, finding nothing to free (measured with
    gc.callbacks): requests arriving meanwhile waited that long. Young collections,
    which free short-lived cycles, run as before; what start-up built is frozen out of
    collections altogether."""
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_EVERY)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, handed to uvicorn once the manager is open."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"could not listen on {host}:{port} (is the port in use?): {exc.strerror or exc}"
        ) from exc
    return sock


def _stop_when_done(manager: object, server: uvicorn.Server) -> None:
    while not server.should_exit:
        time.sleep(DONE_POLL_S)
        if server.started and manager.run_state() == "done":  # type: ignore[attr-defined]
            log.info("every run has ended and every file is basecalled or quarantined: exiting")
            server.should_exit = True


def _exit_cleanly(signum: int, _frame: object) -> None:
    log.info("stopped by %s; ledger closed", signal.Signals(signum).name)
    sys.exit(0)
