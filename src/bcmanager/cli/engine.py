"""`bcm engine`: claim batches from a manager and keep one basecaller busy."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sys
from pathlib import Path

import click

from bcmanager.cli._common import friendly_errors, logging_options, read_token, setup_logging
from bcmanager.layout import is_engine_id


def default_engine_id() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40] or "engine"
    return f"{host}-{os.getpid()}"


@click.command("engine")
@click.option("--manager", "manager_url", required=True, help="e.g. http://127.0.0.1:40765")
@click.option("--engine-id", default=None, help="a name [A-Za-z0-9._-]{1,64} [host-pid]")
@click.option(
    "--basecaller",
    type=click.Choice(["dorado", "dorado-server", "script", "command", "simulated"]),
    default="simulated",
    show_default=True,
)
@click.option("--batch-size", type=click.IntRange(min=1), help="files per batch [manager's]")
@click.option(
    "--until-empty",
    is_flag=True,
    help="exit 0 once nothing is queued, settling, being scanned or in a job its engine "
    "has not confirmed",
)
@click.option(
    "--model", default="", help="basecalling model (dorado, script, command; dorado-server: config)"
)
@click.option("--dorado", default="dorado", show_default=True, help="dorado executable")
@click.option(
    "--device", default="cuda:all", show_default=True, help="dorado (or its server's) --device"
)
@click.option("--dorado-batchsize", type=click.IntRange(min=1), help="dorado --batchsize")
@click.option(
    "--dorado-server",
    "server",
    default="dorado_basecall_server",
    show_default=True,
    help="basecall server executable (dorado-server)",
)
@click.option(
    "--supervisor",
    default="ont_basecaller_supervisor",
    show_default=True,
    help="the server's client, run per batch (dorado-server)",
)
@click.option(
    "--server-port",
    help="the server's --port: a unix socket path, or a TCP port number"
    " [a socket under $TMPDIR per engine] (dorado-server)",
)
@click.option(
    "--server-log-path",
    type=click.Path(path_type=Path, file_okay=False),
    help="the server's --log_path [beside its default socket] (dorado-server)",
)
@click.option(
    "--num-clients",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="the supervisor's --num_clients (dorado-server)",
)
@click.option(
    "--server-timeout",
    "server_timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="seconds the server may take to answer at start (dorado-server)",
)
@click.option("--script", type=click.Path(path_type=Path), help="SCRIPT INPUT OUTPUT MODEL")
@click.option("--command", "command_template", help="e.g. 'mytool {input} {output} {model}'")
@click.option(
    "--samples-per-s",
    type=float,
    default=0.0,
    show_default=True,
    help="simulated speed (0: as fast as it reads)",
)
@click.option(
    "--startup-s",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="simulated start-up cost before the first read, as Dorado's model loading",
)
@click.option("--kit-name", help="barcoding kit, as Dorado names it (dorado, simulated)")
@click.option(
    "--min-qscore",
    type=click.FloatRange(0, 60),
    help="pass/fail threshold [MinKNOW's: fast 8, hac 9, sup 10]",
)
@click.option(
    "--modified-bases",
    help="modifications, as Dorado takes them, e.g. '5mCG_5hmCG 6mA' (dorado, simulated)",
)
@click.option(
    "--models-directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="where models live; the model is fetched there once at start (dorado, simulated)",
)
@click.option("--emit-fastq", is_flag=True, help="gzipped FASTQ instead of BAM (dorado, simulated)")
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="FASTA or minimap2 index (.mmi) to align to: aligned BAM, not with --emit-fastq"
    " (dorado, simulated)",
)
@click.option(
    "--mm2-opts",
    help="minimap2 options for the alignment, as Dorado takes them, e.g. '-k 15 -w 10'"
    " (dorado, simulated)",
)
@click.option(
    "--sample-sheet",
    type=click.Path(path_type=Path),
    help="MinKNOW/Dorado sample sheet (CSV) naming each barcode's sample; needs --kit-name,"
    " checked at start (dorado, simulated)",
)
@click.option(
    "--dorado-args",
    help="more dorado basecaller options, e.g. '--trim adapters'; not those bcmanager sets"
    " (--kit-name, --device, ...: use the engine's own) (dorado)",
)
@click.option("--wait", "wait_s", type=click.FloatRange(0, 60), default=30.0, show_default=True)
@click.option("--token-file", type=click.Path(path_type=Path), help="shared secret (or $BCM_TOKEN)")
@logging_options
@friendly_errors
def command(
    manager_url: str,
    engine_id: str | None,
    basecaller: str,
    batch_size: int | None,
    until_empty: bool,
    model: str,
    dorado: str,
    device: str,
    dorado_batchsize: int | None,
    server: str,
    supervisor: str,
    server_port: str | None,
    server_log_path: Path | None,
    num_clients: int,
    server_timeout_s: float,
    script: Path | None,
    command_template: str | None,
    samples_per_s: float,
    startup_s: float,
    kit_name: str | None,
    min_qscore: float | None,
    modified_bases: str | None,
    models_directory: Path | None,
    emit_fastq: bool,
    reference: Path | None,
    mm2_opts: str | None,
    sample_sheet: Path | None,
    dorado_args: str | None,
    wait_s: float,
    token_file: Path | None,
    log_level: str,
    log_format: str,
) -> None:
    """Basecall batches from a manager until stopped (SIGTERM hands the batch back)."""
    setup_logging(log_level, log_format)
    from bcmanager.basecallers import make_basecaller
    from bcmanager.engine import Engine, EngineConfig

    engine_id = engine_id or default_engine_id()
    if not is_engine_id(engine_id):
        raise click.BadParameter(
            "use letters, digits, '.', '_' or '-' (1-64, no '..')", param_hint="--engine-id"
        )
    try:
        extra_args = shlex.split(dorado_args or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--dorado-args") from exc
    backend = make_basecaller(
        basecaller,
        model=model,
        dorado=dorado,
        device=device,
        batchsize=dorado_batchsize,
        server=server,
        supervisor=supervisor,
        server_port=server_port,
        server_log_path=server_log_path,
        num_clients=num_clients,
        server_timeout_s=server_timeout_s,
        script=script,
        command=command_template,
        samples_per_s=samples_per_s,
        startup_s=startup_s,
        kit_name=kit_name,
        modified_bases=(modified_bases or "").replace(",", " ").split(),
        models_directory=models_directory,
        emit_fastq=emit_fastq,
        reference=reference,
        mm2_opts=mm2_opts,
        sample_sheet=sample_sheet,
        extra_args=extra_args,
    )
    config = EngineConfig(
        manager_url=manager_url,
        engine_id=engine_id,
        batch_size=batch_size,
        until_empty=until_empty,
        wait_s=wait_s,
        token=read_token(token_file),
        min_qscore=min_qscore,
    )
    engine = Engine(config, backend)

    def on_signal(signum: int, _frame: object) -> None:
        engine.stop()
        if engine.idle:  # blocked in a long-poll claim: leave it now
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.exit(engine.run())
