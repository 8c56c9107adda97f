"""`bcm demo`: a whole live run on this machine, no GPU.

A simulated sequencer writes pod5 files (one of them corrupt) of a barcoded run while a
real manager process hands them to two simulated engine processes; the terminal shows
progress. The engines basecall as `dorado basecaller --kit-name KIT --reference FASTA
--sample-sheet CSV` would: the demo first writes a small random reference and a sample
sheet naming each flow cell's barcodes by a sample alias into its work folder, so the
output is aligned BAM (real minimap2, through mappy) filed under the aliases. At the end
`verify` checks every read independently (once, by its primary record) and the demo
exits 0 only when each one is basecalled exactly once.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bcmanager.simulate import SimulationResult, plan_run, simulate_run
from bcmanager.verify import VerifyReport, scan_output_tree, verify_run

DEMO_KIT = "SQK-NBD114-24"  # barcoded reads, as a multiplexed run gives them
DEMO_EXPERIMENT = "experiment"  # the pod5's experiment_name: the sample sheet's experiment_id
# the barcodes the simulated basecaller classifies reads into (it uses the kit's first
# four), each flow cell's named by the sample sheet: its own samples, as on a sequencer
DEMO_BARCODES = ("barcode01", "barcode02", "barcode03", "barcode04")


@dataclass(frozen=True)
class DemoPlan:
    workdir: Path
    flowcells: int = 2
    files_per_flowcell: int = 20
    reads: int = 40
    samples: int = 8000
    interval_s: float = 1.5
    corrupt: int = 1
    engines: int = 2
    samples_per_s: float = 500_000.0
    lease_s: float = 10.0
    seed: int = 0
    # the reference: two random contigs, the second ending in a copy of the first's start
    # (reads from there align twice: minimap2's secondary records)
    contigs: tuple[int, int] = (60_000, 30_000)
    repeat: int = 8_000

    @property
    def input(self) -> Path:
        return self.workdir / "input"

    @property
    def reference(self) -> Path:
        return self.workdir / "reference.fa"

    @property
    def sample_sheet(self) -> Path:
        return self.workdir / "sample_sheet.csv"

    @property
    def output(self) -> Path:
        return self.workdir / "output"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"


@dataclass
class AlignmentTally:
    """What the aligned output holds, read back from its BAM files (pysam)."""

    bams: int = 0
    bams_with_sq: int = 0  # with the reference's @SQ lines: aligned BAM
    mapped: int = 0  # reads (primary records) mapped
    unmapped: int = 0  # reads (primary records) left unmapped
    secondary: int = 0  # records beside their primary
    supplementary: int = 0
    contigs: Counter[str] = field(default_factory=Counter)  # mapped reads per contig

    @property
    def reads(self) -> int:
        return self.mapped + self.unmapped


@dataclass
class DemoOutcome:
    report: VerifyReport
    simulation: SimulationResult
    manager_exit: int | None
    seconds: float
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # flow cell -> bc -> alias
    alignment: AlignmentTally = field(default_factory=AlignmentTally)
    engine_failures: dict[str, str] = field(default_factory=dict)  # engine -> its log's end

    @property
    def ok(self) -> bool:
        return self.report.ok and self.manager_exit == 0 and not self.engine_failures


def write_reference(path: Path, contigs: tuple[int, ...], repeat: int = 0, seed: int = 0) -> None:
    """A random genome as FASTA: contigs `chr1`, `chr2`, ... of the given lengths, the
    last one followed by a copy of chr1's first `repeat` bases (reads drawn from either
    copy align to both: a primary and a secondary record)."""
    rng = np.random.default_rng([seed, 0xFA57A])
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    sequences = [bases[rng.integers(0, 4, n)].tobytes().decode("ascii") for n in contigs]
    sequences[-1] += sequences[0][:repeat]
    with open(path, "w", encoding="ascii") as fh:
        for k, sequence in enumerate(sequences):
            fh.write(f">chr{k + 1}\n")
            fh.writelines(sequence[i : i + 80] + "\n" for i in range(0, len(sequence), 80))


def write_sample_sheet(
    path: Path, aliases: dict[str, dict[str, str]], experiment: str, kit: str
) -> None:
    """MinKNOW's sample sheet (as Dorado reads it): a row per flow cell and barcode."""
    rows = ["flow_cell_id,experiment_id,kit,barcode,alias,type"]
    rows += [
        f"{flow_cell},{experiment},{kit},{barcode},{alias},test_sample"
        for flow_cell, named in aliases.items()
        for barcode, alias in named.items()
    ]
    path.write_text("\n".join(rows) + "\n", encoding="ascii")


def prepare_inputs(plan: DemoPlan) -> dict[str, dict[str, str]]:
    """Write the demo's reference and sample sheet into its work folder; returns the
    sheet's aliases, {flow cell: {barcode: alias}} (the flow cells the sequencer will
    write, known ahead from its seed)."""
    cells = plan_run(
        plan.input,
        files=plan.files_per_flowcell,
        flowcells=plan.flowcells,
        layout="minknow",
        corrupt=plan.corrupt,
        seed=plan.seed,
        experiment=DEMO_EXPERIMENT,
    )
    numbers = itertools.count(1)
    aliases = {
        cell.flowcell: {barcode: f"patient-{next(numbers):02d}" for barcode in DEMO_BARCODES}
        for cell in cells
    }
    write_reference(plan.reference, plan.contigs, plan.repeat, plan.seed)
    write_sample_sheet(plan.sample_sheet, aliases, DEMO_EXPERIMENT, DEMO_KIT)
    return aliases


def tally_alignments(output: Path) -> AlignmentTally:
    """Every BAM record under OUTPUT (as `verify` finds the files), by kind."""
    import pysam

    tally = AlignmentTally()
    for found in scan_output_tree(output).read_files:
        if not found.path.endswith(".bam"):
            continue
        tally.bams += 1
        with pysam.AlignmentFile(found.path, "rb", check_sq=False) as bam:
            tally.bams_with_sq += bool(bam.header.to_dict().get("SQ"))
            for seg in bam.fetch(until_eof=True):
                if seg.is_secondary:
                    tally.secondary += 1
                elif seg.is_supplementary:
                    tally.supplementary += 1
                elif seg.is_unmapped:
                    tally.unmapped += 1
                else:
                    tally.mapped += 1
                    tally.contigs[seg.reference_name or "*"] += 1
    return tally


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
    aliases = prepare_inputs(plan)
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
                "--reference",
                str(plan.reference),
                "--sample-sheet",
                str(plan.sample_sheet),
            ),
            plan.logs / f"engine-gpu{i + 1}.log",
        )
        for i in range(plan.engines)
    ]
    written = [0]
    failures: dict[str, str] = {}
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
                # an engine never exits by itself: one that did (a bad option, a reference
                # it cannot read) would leave the run waiting forever
                failures = _engine_failures(engines, plan)
                if failures:
                    break
                time.sleep(0.25)
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
        writer.join()
    report = verify_run(plan.input, plan.output)
    return DemoOutcome(
        report,
        sim["run"],
        manager.returncode,
        time.monotonic() - started,
        aliases=aliases,
        alignment=tally_alignments(plan.output),
        engine_failures=failures,
    )


def _engine_failures(engines: list[subprocess.Popen[bytes]], plan: DemoPlan) -> dict[str, str]:
    """{engine: the end of its log} for each engine that has exited."""
    failed = {}
    for i, proc in enumerate(engines):
        if proc.poll() is not None:
            name = f"gpu{i + 1}"
            log = (plan.logs / f"engine-{name}.log").read_text(errors="replace")
            failed[name] = f"exit code {proc.returncode}: {log.strip()[-600:]}"
    return failed


def summary_table(plan: DemoPlan, outcome: DemoOutcome) -> Table:
    r, a = outcome.report, outcome.alignment
    table = Table(title="bcm demo: result", show_header=False)
    table.add_row("pod5 files written", str(len(outcome.simulation.files)))
    table.add_row("reads in pod5 files", str(r.input_reads))
    table.add_row(
        "reads in the output (BAM)",
        f"{r.records}, each once by its primary record (split reads count once per piece)",
    )
    table.add_row("sequencing summary rows", str(r.summary_rows))
    table.add_row(
        "missing / duplicated / unexpected", f"{r.missing} / {r.duplicated} / {r.unexpected}"
    )
    for path, reason in sorted(r.quarantined.items()):
        table.add_row("quarantined", f"{path}\n[dim]{reason}[/]")
    for engine, why in sorted(outcome.engine_failures.items()):
        table.add_row(f"[red]engine {engine} exited[/]", f"[dim]{why}[/]")
    table.add_row("time", f"{outcome.seconds:.1f} s")
    lengths = [*plan.contigs[:-1], plan.contigs[-1] + plan.repeat]
    contigs = ", ".join(f"chr{k + 1} {n / 1000:g} kb" for k, n in enumerate(lengths))
    table.add_row(
        "reference",
        f"{plan.reference}: {contigs} (random; chr{len(lengths)} ends in a copy of chr1's start)",
    )
    share = f" ({100 * a.mapped / a.reads:.0f}%)" if a.reads else ""
    per_contig = ", ".join(f"{name} {n}" for name, n in sorted(a.contigs.items()))
    table.add_row(
        "aligned (minimap2)",
        f"{a.mapped} of {a.reads} reads mapped{share}: {per_contig or 'none'}; {a.unmapped}"
        f" unmapped; {a.secondary} secondary and {a.supplementary} supplementary records"
        f" beside their primaries; @SQ lines in {a.bams_with_sq} of {a.bams} BAM files",
    )
    for flow_cell, named in outcome.aliases.items():
        listed = ", ".join(f"{barcode} {alias}" for barcode, alias in named.items())
        table.add_row(f"sample sheet {flow_cell}", listed)
    for run in r.runs:
        barcodes = ", ".join(
            f"{b.barcode or '-'} {b.reads} ({100 * (b.pass_share or 0):.0f}% pass)"
            for b in run.barcodes
        )
        table.add_row(f"run {run.run_folder}", f"{run.reads} reads: {barcodes}")
    table.add_row(
        "outputs",
        f"{plan.output}/<run>/bam_{{pass,fail}}/<alias>/*.bam (aligned, unsorted, as Dorado"
        f" writes them) and sequencing_summary_*.txt (MinKNOW's tree, with the alignment"
        f" columns), {plan.output}/QUARANTINE, logs in {plan.logs}; reference and sample"
        f" sheet in {plan.workdir}",
    )
    verdict = "[green]every read basecalled exactly once[/]" if outcome.ok else "[red]FAILED[/]"
    table.add_row("verdict", verdict)
    return table


def default_workdir() -> Path:
    return Path(os.getcwd()) / "demo-run" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
