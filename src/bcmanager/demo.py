"""`bcm demo`: a whole live run on this machine, no GPU.

A simulated sequencer writes pod5 files (one of them corrupt) while a real manager
process hands them to two simulated engine processes; the terminal shows progress;
at the end `verify` checks every read independently and the demo exits 0 only when
each one is basecalled exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bcmanager.simulate import SimulationResult, simulate_run
from bcmanager.verify import VerifyReport, verify_run

DEMO_KIT = "SQK-NBD114-24"  # barcoded reads, as a multiplexed run gives them


@dataclass(frozen=True)
class DemoPlan:
    workdir: Path
    flowcells: int = 2
    files_per_flowcell: int = 20
    reads: int = 40
    samples: int = 4000
    interval_s: float = 1.5
    corrupt: int = 1
    engines: int = 2
    samples_per_s: float = 250_000.0
    lease_s: float = 10.0
    seed: int = 0

    @property
    def input(self) -> Path:
        return self.workdir / "input"

    @property
    def output(self) -> Path:
        return self.workdir / "output"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"


@dataclass
class DemoOutcome:
    report: VerifyReport
    simulation: SimulationResult
    manager_exit: int | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.report.ok and self.manager_exit == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bcm(*args: str) -> list[str]:
    return [sys.executable, "-m", "bcmanager.cli", *args]


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)


def _status(client: httpx.Client) -> dict | None:
    try:
        return client.get("/v1/status").json()
    except (httpx.HTTPError, ValueError):
        return None


def _progress_view(plan: DemoPlan, written: int, status: dict | None, elapsed: float) -> Group:
    total_planned = plan.flowcells * plan.files_per_flowcell + plan.corrupt
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]bcm demo[/] {elapsed:5.1f} s", f"sequencer wrote {written}/{total_planned} files"
    )
    files = Table(title="files", show_edge=False)
    engines = Table(title="engines", show_edge=False)
    for col in ("queued", "assigned", "done", "quarantined", "waiting to settle"):
        files.add_column(col, justify="right")
    for col in ("engine", "job", "files done"):
        engines.add_column(col)
    if status is None:
        return Group(head, "[yellow]manager starting…[/]")
    f = status["files"]
    files.add_row(
        *(str(f[k]) for k in ("queued", "assigned", "done", "quarantined")),
        str(status.get("pending", 0)),
    )
    for e in status["engines"]:
        engines.add_row(e["engine"], str(e["job_id"] or "-"), str(e["files_done"]))
    return Group(head, files, engines)


def run_demo(plan: DemoPlan, console: Console) -> DemoOutcome:
    """Run the whole demo; processes are always stopped, whatever happens."""
    for folder in (plan.input, plan.output, plan.logs):
        folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    manager = _spawn(
        _bcm(
            "manager",
            "--input", str(plan.input),
            "--output", str(plan.output),
            "--port", str(port),
            "--lease", str(plan.lease_s),
            "--max-attempts", "2",
            "--settle", "0.5",
            "--rescan", "2",
            "--exit-when-done",
        ),
        plan.logs / "manager.log",
    )  # fmt: skip
    engines = [
        _spawn(
            _bcm(
                "engine",
                "--manager",
                url,
                "--engine-id",
                f"gpu{i + 1}",
                "--samples-per-s",
                str(plan.samples_per_s),
                "--kit-name",
                DEMO_KIT,
            ),
            plan.logs / f"engine-gpu{i + 1}.log",
        )
        for i in range(plan.engines)
    ]
    written = [0]
    sim: dict[str, SimulationResult] = {}
    stop = threading.Event()
    started = time.monotonic()

    def sequencer() -> None:
        sim["run"] = simulate_run(
            plan.input,
            files=plan.files_per_flowcell,
            reads=plan.reads,
            samples=plan.samples,
            interval=plan.interval_s,
            flowcells=plan.flowcells,
            layout="minknow",
            corrupt=plan.corrupt,
            seed=plan.seed,
            on_file=lambda _f: written.__setitem__(0, written[0] + 1),
            stop=stop,
        )

    writer = threading.Thread(target=sequencer, name="sequencer", daemon=True)
    writer.start()
    try:
        with (
            httpx.Client(base_url=url, timeout=2) as client,
            Live(console=console, refresh_per_second=4) as live,
        ):
            while manager.poll() is None:
                live.update(
                    _progress_view(plan, written[0], _status(client), time.monotonic() - started)
                )
                time.sleep(0.25)
        writer.join()
    finally:
        stop.set()
        for proc in [*engines, manager]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*engines, manager]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    report = verify_run(plan.input, plan.output)
    return DemoOutcome(report, sim["run"], manager.returncode, time.monotonic() - started)


def summary_table(plan: DemoPlan, outcome: DemoOutcome) -> Table:
    r = outcome.report
    table = Table(title="bcm demo: result", show_header=False)
    table.add_row("pod5 files written", str(len(outcome.simulation.files)))
    table.add_row("reads in pod5 files", str(r.input_reads))
    table.add_row("output records (BAM)", f"{r.records} (split reads count once per piece)")
    table.add_row("sequencing summary rows", str(r.summary_rows))
    table.add_row(
        "missing / duplicated / unexpected", f"{r.missing} / {r.duplicated} / {r.unexpected}"
    )
    for path, reason in sorted(r.quarantined.items()):
        table.add_row("quarantined", f"{path}\n[dim]{reason}[/]")
    table.add_row("time", f"{outcome.seconds:.1f} s")
    for run in r.runs:
        barcodes = ", ".join(
            f"{b.barcode or '-'} {b.reads} ({100 * (b.pass_share or 0):.0f}% pass)"
            for b in run.barcodes
        )
        table.add_row(f"run {run.run_folder}", f"{run.reads} records: {barcodes}")
    table.add_row(
        "outputs",
        f"{plan.output}/<run>/bam_{{pass,fail}}/<barcode>/*.bam and sequencing_summary_*.txt"
        f" (MinKNOW's tree), {plan.output}/QUARANTINE, logs in {plan.logs}",
    )
    verdict = "[green]every read basecalled exactly once[/]" if outcome.ok else "[red]FAILED[/]"
    table.add_row("verdict", verdict)
    return table


def default_workdir() -> Path:
    return Path(os.getcwd()) / "demo-run" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
