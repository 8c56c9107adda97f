"""A seeded chaos run: a real manager, real engines, real pod5, and faults at random instants.

`run_chaos(seed, workdir)` writes ~150 real pod5 files (in waves, as a sequencer
does; every other one of a run whose files share a flow cell and an acquisition id but
each have their own protocol run id, all sharing their first 8 hex digits: issue 22), starts a `bcm manager` and three `bcm engine --basecaller simulated`
subprocesses, and works through a fault plan drawn from the seed:

- manager-kill       SIGKILL the manager at a random instant, restart it on the same port
- failpoint          restart the manager with BCM_FAILPOINT=<point> for one life: it kills
                     itself (SIGKILL) at that exact instant (mid-assign, mid-merge)
- engine-kill        SIGKILL an engine mid-batch, with its basecaller (a lost node), and
                     start a replacement under a new engine id
- engine-freeze      SIGSTOP an engine mid-batch until its lease has expired, then SIGCONT:
                     its late report must be fenced (job `late`, output set aside, not merged)
- ledger-loss        once per run: the manager is killed (plainly or at a failpoint) and
                     ledger.sqlite3, -wal and -shm are deleted before the restart

Then it waits for the run to finish and checks, independently of the manager, that
every read id written is in exactly one FASTQ record (its own read-id bookkeeping
against the FASTQ headers, and `bcmanager.verify.verify_run`), that every output file
reads to its end as users' tools read it (pysam with its truncation check, gzip to its
end), and that the real `bcm verify` passes for every generation. The plan depends on
the seed alone, so a failing seed replays the same faults (process timing varies).

With `ChaosConfig(aligned=True)` (issue 25) the run is a barcoded one aligned to a
reference with a sample sheet: a small random reference and a sheet naming the shared
flow cell's barcodes by aliases are written into the workdir, every engine runs with
`--kit-name`, `--reference` and `--sample-sheet`, and the check also asks that every BAM
holds the reference's @SQ lines, that secondary and supplementary records sit in their
primary's file, that no record is there twice, and that the aliases name the barcode
folders.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bcmanager.demo import write_reference, write_sample_sheet
from bcmanager.pod5io import write_pod5
from bcmanager.verify import scan_output_tree, verify_run
from tests.conftest import ManagerProcess
from tests.helpers import (
    SHARED_FLOWCELL,
    assert_outputs_whole,
    bcm_verify,
    fastq_read_ids,
    file_run_ids,
    free_port,
    write_run_pod5,
)

if TYPE_CHECKING:
    import pysam

FAILPOINTS = (
    "claim.after-commit",
    "complete.after-journal",
    "merge.after-move",
    "merge.after-append",
    "merge.after-rename",
)
KINDS = ("manager-kill", "failpoint", "engine-kill", "engine-freeze", "ledger-loss")
LEDGER_FILES = ("ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm")
POLL_S = 0.05
MAX_ENGINE_EXITS = 10  # engines that exit by themselves before the run is given up
JOB_STARTED = re.compile(r"INFO bcmanager\.engine: job (\d+): \d+ file")
# an aligned run (`ChaosConfig.aligned`): its kit, its reference's contigs (the last one
# ends in a copy of chr1's start: secondary records), and the shared flow cell's aliases
KIT = "SQK-NBD114-24"
CONTIGS = (40_000, 20_000)
REPEAT = 6_000
ALIASES = {f"barcode{n:02d}": f"sample-{n:02d}" for n in range(1, 5)}


@dataclass(frozen=True)
class ChaosConfig:
    files: int = 150
    first_wave: int = 90  # written before the start; the rest in waves between faults
    wave: int = 12
    reads: int = 3
    samples: int = 300
    engines: int = 3
    batch: int = 4
    lease_s: float = 2.5
    samples_per_s: float = 5000.0
    faults: int = 8  # ledger-loss included
    finish_timeout_s: float = 150.0
    generations: tuple[str, ...] = ()  # --generation specs; () the implicit one
    # every n-th file (0: none) is of one run whose files share a flow cell and an
    # acquisition id but each have their own protocol run id (`file_run_ids`)
    per_file_run_ids_every: int = 2
    # engines with --kit-name, --reference and --sample-sheet (written into the workdir):
    # aligned BAM under the aliases; reads need a few thousand samples (a base per ten)
    # to map
    aligned: bool = False
    # every n-th file (0: none) has `large_reads` reads and is handed out in slices
    # (`--slice-above slice_above_mib`) to the engines, which all take slices
    large_every: int = 0
    large_reads: int = 40
    slice_above_mib: float = 0.0
    target_batch_s: float = 60.0  # the manager's --target-batch

    def generation_names(self) -> list[str | None]:
        """The generations whose trees to check (None: the implicit one, at OUTPUT)."""
        return [spec.split("=", 1)[0] for spec in self.generations] or [None]


@dataclass(frozen=True)
class Fault:
    kind: str
    delay_s: float  # pause before it, while the run goes on
    failpoint: str = ""  # failpoint: the point; ledger-loss: "" = plain kill, else a point
    pick: float = 0.0  # which engine (fraction of the sorted candidates)
    down_s: float = 0.0  # manager-kill / ledger-loss: how long the manager stays down

    def describe(self) -> str:
        extra = f" at {self.failpoint}" if self.failpoint else ""
        return f"{self.kind}{extra} after {self.delay_s:.2f} s"


@dataclass
class ChaosResult:
    seed: int
    workdir: Path
    plan: list[Fault]
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)  # what was injected, by kind
    actions: list[str] = field(default_factory=list)  # timeline, for the failure message
    problems: list[str] = field(default_factory=list)
    alignments: Counter[str] = field(default_factory=Counter)  # aligned: BAM records by kind

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [f"chaos seed {self.seed}: {'ok' if self.ok else 'FAILED'} in {self.seconds:.1f} s"]
        lines += [f"  plan: {f.describe()}" for f in self.plan]
        lines += [f"  {a}" for a in self.actions]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append(f"  logs in {self.workdir}")
        return "\n".join(lines)


def plan_faults(seed: int, config: ChaosConfig) -> list[Fault]:
    """The fault plan of a seed: one of each kind (two failpoints), the rest drawn at random."""
    rng = random.Random(seed)
    kinds = ["manager-kill", "failpoint", "failpoint", "engine-kill", "engine-freeze"]
    extra = max(0, config.faults - len(kinds) - 1)
    kinds += rng.choices(["manager-kill", "failpoint", "engine-kill", "engine-freeze"], k=extra)
    rng.shuffle(kinds)
    # the ledger is lost once, when there is something on disk to rebuild from
    kinds.insert(rng.randint(2, len(kinds)), "ledger-loss")
    # the two sure failpoints follow from the seed, so that three consecutive seeds arm all
    n = len(FAILPOINTS)
    sure = [FAILPOINTS[seed % n], FAILPOINTS[(seed + n // 2 + 1) % n]]
    plan = []
    for kind in kinds:
        point = ""
        if kind == "failpoint":
            point = sure.pop(0) if sure else rng.choice(FAILPOINTS)
        elif kind == "ledger-loss" and rng.random() < 0.5:
            point = rng.choice(FAILPOINTS)
        plan.append(
            Fault(kind, rng.uniform(0.3, 2.5), point, rng.random(), rng.choice([0.0, 0.3, 1.0]))
        )
    return plan


# -- processes ----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _kill_group(pid: int) -> None:
    """SIGKILL a basecaller's process group (it runs in its own session)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class EngineProcess:
    """A real `bcm engine` subprocess with the simulated basecaller."""

    def __init__(self, engine_id: str, url: str, workdir: Path, config: ChaosConfig) -> None:
        self.id = engine_id
        self.log = workdir / f"engine-{engine_id}.log"
        cmd = [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "engine",
            "--manager",
            url,
            "--engine-id",
            engine_id,
            "--basecaller",
            "simulated",
            "--samples-per-s",
            str(config.samples_per_s),
            "--batch-size",
            str(config.batch),
            "--wait",
            "5",
        ]
        if config.aligned:
            cmd += ["--kit-name", KIT, "--reference", str(workdir / "reference.fa")]
            cmd += ["--sample-sheet", str(workdir / "sample_sheet.csv")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def was_told_off(self, job_id: int) -> bool:
        """The engine heard that job `job_id` is no longer its own (late, or unknown)."""
        text = self.log.read_text(errors="replace")
        return f"job {job_id}: lease lost" in text or f"job {job_id}: manager says" in text

    def current_job(self) -> int | None:
        """The job this engine last started, from its own log (not the manager's view)."""
        started = JOB_STARTED.findall(self.log.read_text(errors="replace"))
        return int(started[-1]) if started else None

    def last_line(self) -> str:
        """The last line of its log (why it exited)."""
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1][-300:] if lines else ""

    def signal(self, sig: int) -> None:
        with suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def kill_node(self) -> None:
        """SIGKILL the engine and its basecaller, as a lost node would be."""
        self.signal(signal.SIGSTOP)  # no new child between the listing and the kill
        kids = _children(self.proc.pid) if self.alive() else []
        self.signal(signal.SIGKILL)
        for kid in kids:
            _kill_group(kid)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (hands a batch back), SIGKILL if it does not go within 20 s."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_node()
        for kid in _children(self.proc.pid):
            _kill_group(kid)


# -- the run ------------------------------------------------------------------------------


class ChaosRun:
    def __init__(self, seed: int, workdir: Path, config: ChaosConfig) -> None:
        self.seed, self.config = seed, config
        self.workdir = workdir
        self.input, self.output = workdir / "input", workdir / "output"
        self.input.mkdir(parents=True)
        self.port = free_port()
        self.result = ChaosResult(seed, workdir, plan_faults(seed, config))
        self.expected: dict[str, list[str]] = {}  # pod5 path -> read ids, as written
        self.manager: ManagerProcess | None = None
        self.armed = ""  # the failpoint of the current manager life
        self.engines: list[EngineProcess] = []
        self.next_engine = 1
        self.exited = 0  # engines that exited by themselves (each a problem)
        self.started = time.monotonic()

    # -- bookkeeping ----------------------------------------------------------------

    def note(self, text: str) -> None:
        self.result.actions.append(f"{time.monotonic() - self.started:6.1f} s  {text}")

    def problem(self, text: str) -> None:
        self.note(f"PROBLEM: {text}")
        self.result.problems.append(text)

    # -- input ----------------------------------------------------------------------

    def write_files(self, n: int) -> None:
        """Write the next `n` pod5 files (a sequencer's output arriving)."""
        start = len(self.expected)
        every = self.config.per_file_run_ids_every
        for i in range(start, min(self.config.files, start + n)):
            rel = f"chaos_{i:04d}.pod5"
            seed = self.seed * 100_000 + i + 1
            reads, samples = self.config.reads, self.config.samples
            large = self.config.large_every
            if large and i % large == large - 1:
                reads = self.config.large_reads
            if every and i % every == 0:
                self.expected[rel] = write_run_pod5(
                    self.input / rel, file_run_ids(seed), reads, seed, samples
                )
            else:
                self.expected[rel] = write_pod5(self.input / rel, reads, samples, seed=seed)

    # -- the manager ----------------------------------------------------------------

    def start_manager(self, failpoint: str = "", restart_if_dead: bool = True) -> None:
        args = ["--rescan", "0.2", "--lease", str(self.config.lease_s)]
        args += ["--batch-size", str(self.config.batch), "--max-attempts", "100"]
        args += ["--slice-above", repr(self.config.slice_above_mib)]
        args += ["--target-batch", repr(self.config.target_batch_s)]
        for spec in self.config.generations:
            args += ["--generation", spec]
        if self.config.generations:  # backfill on every engine 2 s after the last wave
            args += ["--live-window", "2"]
        env = {"BCM_FAILPOINT": failpoint} if failpoint else {"BCM_FAILPOINT": ""}
        log = self.workdir / "manager.log"
        with open(log, "a") as fh:
            fh.write(f"\n===== chaos: manager start (failpoint {failpoint or 'none'}) =====\n")
        self.manager = ManagerProcess(self.input, self.output, self.port, log, args, env)
        self.armed = failpoint
        if not self._wait_manager_ready() and restart_if_dead:
            self._manager_died("while starting")

    def _wait_manager_ready(self, timeout: float = 30.0) -> bool:
        """True once it answers; False if it died first (a failpoint hit during recovery)."""
        assert self.manager is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.manager.proc.poll() is not None:
                return False
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.manager.url}/healthz", timeout=1).status_code == 200:
                    return True
            time.sleep(POLL_S)
        self.problem("the manager did not answer within 30 s of its start")
        return True

    def _manager_died(self, when: str) -> None:
        """The manager exited on its own: a failpoint hit, or a crash (a problem)."""
        assert self.manager is not None
        code = self.manager.proc.wait()
        if code == -signal.SIGKILL and self.armed:
            self.result.faults[f"failpoint {self.armed} hit"] += 1
            self.note(f"manager killed itself at {self.armed} {when}")
        else:
            self.problem(f"manager exited with {code} {when} (failpoint {self.armed or 'none'})")
        self.start_manager()

    def kill_manager(self) -> None:
        assert self.manager is not None
        self.manager.kill9()

    def status(self) -> dict[str, Any] | None:
        if self.manager is None:
            return None
        try:
            r = httpx.get(f"{self.manager.url}/v1/status", timeout=10)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def job_state(self, job_id: int) -> str | None:
        assert self.manager is not None
        try:
            r = httpx.get(f"{self.manager.url}/v1/jobs/{job_id}", timeout=10)
        except httpx.HTTPError:
            return None
        return r.json().get("state") if r.status_code == 200 else "unknown"

    # -- supervision ----------------------------------------------------------------

    def supervise(self) -> None:
        """Restart a manager that died at its failpoint; replace an engine that exited."""
        if self.manager is not None and self.manager.proc.poll() is not None:
            self._manager_died("during the run")
        for engine in list(self.engines):
            if not engine.alive():
                last = engine.last_line()
                self.problem(
                    f"engine {engine.id} exited by itself ({engine.proc.returncode}): {last}"
                )
                self.engines.remove(engine)
                self.exited += 1
                if self.exited > MAX_ENGINE_EXITS:  # e.g. refused at its start: no point
                    raise RuntimeError(f"{self.exited} engines exited by themselves")
                self.start_engine()

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.supervise()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(POLL_S, left))

    def wait_for(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise()
            if check():
                return True
            time.sleep(POLL_S)
        return False

    # -- engines --------------------------------------------------------------------

    def start_engine(self) -> EngineProcess:
        assert self.manager is not None
        engine = EngineProcess(f"e{self.next_engine}", self.manager.url, self.workdir, self.config)
        self.next_engine += 1
        self.engines.append(engine)
        return engine

    def busy_engine(self, pick: float, timeout: float = 10.0) -> tuple[EngineProcess, int] | None:
        """An engine with a running (assigned) job, chosen by `pick`, and that job's id."""
        found: list[tuple[EngineProcess, int]] = []

        def look() -> bool:
            status = self.status() or {}
            by_id = {e.id: e for e in self.engines}
            found[:] = [
                (by_id[j["engine"]], j["job_id"])
                for j in status.get("running_jobs", [])
                if j["state"] == "assigned"
                and j["engine"] in by_id
                # not a job the engine never heard of (its claim's answer was lost)
                and by_id[j["engine"]].current_job() == j["job_id"]
            ]
            return bool(found)

        if not self.wait_for(look, timeout):
            return None
        found.sort(key=lambda item: item[0].id)
        return found[int(pick * len(found)) % len(found)]

    # -- faults ---------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        handler = {
            "manager-kill": self.fault_manager_kill,
            "failpoint": self.fault_failpoint,
            "engine-kill": self.fault_engine_kill,
            "engine-freeze": self.fault_engine_freeze,
            "ledger-loss": self.fault_ledger_loss,
        }[fault.kind]
        handler(fault)

    def let_failpoint_fire(self, timeout: float = 10.0) -> None:
        """Before the next manager fault, give an armed life the time to die at its point."""
        if self.armed and not self.wait_for(lambda: not self.armed, timeout):
            self.note(f"failpoint {self.armed} not reached within {timeout:g} s")
            self.result.faults[f"failpoint {self.armed} not reached"] += 1

    def fault_manager_kill(self, fault: Fault) -> None:
        self.let_failpoint_fire()
        self.kill_manager()
        self.note(f"manager SIGKILL (armed: {self.armed or 'none'}), down {fault.down_s} s")
        self.result.faults["manager-kill"] += 1
        time.sleep(fault.down_s)
        self.start_manager()

    def fault_failpoint(self, fault: Fault) -> None:
        self.let_failpoint_fire()
        self.kill_manager()
        self.note(f"manager restarted with BCM_FAILPOINT={fault.failpoint}")
        self.result.faults[f"failpoint {fault.failpoint} armed"] += 1
        self.start_manager(fault.failpoint)

    def fault_engine_kill(self, fault: Fault) -> None:
        busy = self.busy_engine(fault.pick)
        if busy is None:
            self.note("engine-kill skipped: no engine had a running job")
            self.result.faults["engine-kill skipped"] += 1
            return
        engine, job_id = busy
        engine.kill_node()
        self.engines.remove(engine)
        replacement = self.start_engine()
        self.note(f"engine {engine.id} SIGKILLed mid-job {job_id}; {replacement.id} started")
        self.result.faults["engine-kill"] += 1

    def fault_engine_freeze(self, fault: Fault) -> None:
        busy = self.busy_engine(fault.pick)
        if busy is None:
            self.note("engine-freeze skipped: no engine had a running job")
            self.result.faults["engine-freeze skipped"] += 1
            return
        engine, job_id = busy
        engine.signal(signal.SIGSTOP)
        self.note(f"engine {engine.id} SIGSTOPped mid-job {job_id}")
        ended = ("expired", "done", "merging", "failed", "released", "late", "unknown")
        lease = self.config.lease_s
        self.wait_for(lambda: self.job_state(job_id) in ended, timeout=lease * 4 + 10)
        state = self.job_state(job_id)
        self.pump(fault.down_s)
        engine.signal(signal.SIGCONT)
        if state != "expired":
            self.note(f"engine {engine.id} SIGCONT; job {job_id} was {state}, not expired")
            self.result.faults["engine-freeze missed"] += 1
            return
        self.result.faults["engine-freeze"] += 1
        told = self.wait_for(lambda: engine.was_told_off(job_id), 30)
        state = self.job_state(job_id)
        self.note(f"engine {engine.id} SIGCONT after its lease; job {job_id} {state}")
        if not told:
            self.problem(f"job {job_id}: the late engine {engine.id} was not told within 30 s")
        self.check_fenced(job_id, engine.id, state)

    def check_fenced(self, job_id: int, engine_id: str, state: str | None) -> None:
        """A late job's output is never merged; reported late, it is set aside.

        A job rebuilt after a ledger loss has a new token: its old engine's report is
        refused (409) before the job is marked late, and its output stays unmerged in place.
        """
        if state not in ("late", "expired", "unknown"):
            self.problem(f"late job {job_id} ended {state}")
        merged = [
            name
            for sub in ("pass", "fail")
            if (self.output / sub).is_dir()
            for name in os.listdir(self.output / sub)
            if name.startswith(f"job_id_{job_id}_")
        ]
        if merged:
            self.problem(f"late job {job_id} had output merged: {merged[:3]}")
        if state == "late" and (self.output / f"TMPOUTPUT_{job_id}_{engine_id}").exists():
            self.problem(f"late job {job_id}: its TMPOUTPUT folder was not set aside")

    def fault_ledger_loss(self, fault: Fault) -> None:
        self.let_failpoint_fire()
        self.kill_manager()
        if fault.failpoint:  # the ledger is lost after a crash at a failpoint
            self.start_manager(fault.failpoint, restart_if_dead=False)
            self.result.faults[f"failpoint {fault.failpoint} armed"] += 1
            died = self._wait_death(timeout=15)
            self.note(f"manager {'died at' if died else 'never reached'} {fault.failpoint}")
            outcome = "hit" if died else "not reached"
            self.result.faults[f"failpoint {fault.failpoint} {outcome}"] += 1
            if not died:
                self.kill_manager()
        for name in LEDGER_FILES:
            (self.output / ".bcmanager" / name).unlink(missing_ok=True)
        self.note("ledger.sqlite3 (+ -wal, -shm) deleted while the manager was down")
        self.result.faults["ledger-loss"] += 1
        time.sleep(fault.down_s)
        self.start_manager()

    def _wait_death(self, timeout: float) -> bool:
        """Wait for the armed manager to kill itself (not restarting it, unlike `supervise`)."""
        assert self.manager is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.manager.proc.poll() is not None:
                return True
            time.sleep(POLL_S)
        return False

    # -- the whole run --------------------------------------------------------------

    def run(self) -> ChaosResult:
        try:
            if self.config.aligned:  # the engines' reference and sample sheet
                write_reference(self.workdir / "reference.fa", CONTIGS, REPEAT, self.seed)
                sheet = {SHARED_FLOWCELL: ALIASES}  # the other flow cells' reads: unclassified
                write_sample_sheet(self.workdir / "sample_sheet.csv", sheet, "bcmanager", KIT)
            self.write_files(self.config.first_wave)
            self.start_manager()
            for _ in range(self.config.engines):
                self.start_engine()
            self.note(f"manager on port {self.port}, {len(self.engines)} engines")
            for fault in self.result.plan:
                self.pump(fault.delay_s)
                self.write_files(self.config.wave)
                self.inject(fault)
            self.write_files(self.config.files)
            self.finish()
        except Exception as exc:  # reported with the seed rather than lost in a traceback
            self.problem(f"driver error: {type(exc).__name__}: {exc}")
        finally:
            self.shut_down()
        self.check_output()
        self.result.seconds = time.monotonic() - self.started
        return self.result

    def finish(self) -> None:
        """Disarm a failpoint still waiting, then wait for every file to be done."""
        self.let_failpoint_fire()
        if self.armed:
            self.kill_manager()
            self.start_manager()
        total = len(self.expected) * len(self.config.generation_names())

        def done() -> bool:
            s = self.status()
            return bool(s and s["files"]["done"] + s["files"]["quarantined"] == total)

        if not self.wait_for(done, self.config.finish_timeout_s):
            self.problem(f"the run did not finish: {self.status()}")
            return
        status = self.status() or {}
        self.note(f"finished: {status.get('files')}, jobs {status.get('jobs')}")
        if status.get("files", {}).get("quarantined"):
            self.problem(f"files quarantined: {status.get('quarantined')}")

    def shut_down(self) -> None:
        """Stop the engines, then the manager cleanly (its last job folders removed; a
        manager that does not stop in time is killed, which leaves them: a problem)."""
        for engine in self.engines:
            engine.stop()
        if self.manager is not None:
            try:
                self.manager.terminate()
            except subprocess.TimeoutExpired:
                self.problem("the manager did not stop within 20 s of SIGTERM")
                self.manager.kill9()

    # -- the independent check ------------------------------------------------------

    def check_output(self) -> None:
        try:  # every read file of every tree, as users' tools read it
            assert_outputs_whole(self.output)
        except AssertionError as exc:
            self.problem(str(exc))
        for gen_id, name in enumerate(self.config.generation_names()):
            self.check_generation(gen_id, name)
            try:  # the real CLI, as users run it
                bcm_verify(self.input, self.output, name)
            except AssertionError as exc:
                self.problem(f"generation {name or 'default'}: {exc}")
        left = [d for d in os.listdir(self.input) if d.startswith("ASSIGNED_")]
        if left:
            self.problem(f"job folders left in INPUT: {left[:5]}")
        if self.config.aligned:
            try:
                self.check_aligned()
            except Exception as exc:  # a file pysam cannot read: named, not a traceback
                self.problem(f"aligned output: {type(exc).__name__}: {exc}")

    def check_aligned(self) -> None:
        """Aligned BAM filed whole: the reference's @SQ lines in every BAM, every
        secondary and supplementary record in its primary's file, no record twice, and
        the shared flow cell's barcodes under their aliases (no barcodeNN folder)."""
        import pysam

        kinds = self.result.alignments
        seen: Counter[tuple[str | None, int, int, int]] = Counter()
        folders: set[str] = set()
        expected_sq = [f"chr{k + 1}" for k in range(len(CONTIGS))]
        for found in scan_output_tree(self.output).read_files:
            folders.add(found.barcode or "")
            primaries, others = set(), set()
            with pysam.AlignmentFile(found.path, "rb", check_sq=False) as bam:
                names = [sq["SN"] for sq in bam.header.to_dict().get("SQ", [])]
                if names != expected_sq:
                    self.problem(f"{found.rel}: @SQ {names}, not the reference's")
                for seg in bam.fetch(until_eof=True):
                    kinds[record_kind(seg)] += 1
                    seen[(seg.query_name, seg.flag, seg.reference_id, seg.reference_start)] += 1
                    (others if seg.flag & 0x900 else primaries).add(seg.query_name)
            if others - primaries:
                orphans = len(others - primaries)
                self.problem(f"{found.rel}: {orphans} read(s) with alignments but no primary")
        twice = [key for key, n in seen.items() if n > 1]
        if twice:
            self.problem(f"{len(twice)} BAM records more than once, e.g. {twice[:2]}")
        if not (kinds["mapped"] and kinds["unmapped"]):
            self.problem(f"not an output aligned to the reference: {dict(kinds)}")
        numbered = [f for f in folders if re.fullmatch(r"barcode\d+", f)]
        if numbered or not set(ALIASES.values()) <= folders:
            self.problem(f"barcode folders {sorted(folders)}: not the sample sheet's aliases")
        self.note(f"aligned: {dict(kinds)} records; barcode folders {sorted(folders)}")

    def check_generation(self, gen_id: int, name: str | None) -> None:
        """Every read written in exactly one record of this generation's tree."""
        tree = self.output / "generations" / name if name else self.output
        where = f"generation {name}: " if name else ""
        expected = Counter(rid for ids in self.expected.values() for rid in ids)
        got = fastq_read_ids(tree)
        missing = set(expected) - set(got)
        doubled = sorted(rid for rid, n in got.items() if n > 1)
        unexpected = set(got) - set(expected)
        if missing or doubled or unexpected:
            self.problem(
                f"{where}{len(expected)} reads written: {len(missing)} missing, {len(doubled)}"
                f" in more than one record (e.g. {doubled[:2]}), {len(unexpected)} unexpected"
            )
        report = verify_run(self.input, self.output, workers=1, generation=name)
        if not report.ok or report.input_reads != len(expected):
            self.problem(
                f"{where}bcm verify: ok={report.ok}, {report.input_reads} input reads,"
                f" {report.missing} missing, {report.duplicated} duplicated"
            )
        if report.summary_rows != report.records:
            self.problem(f"{where}{report.summary_rows} summary rows for {report.records} records")
        counted = sum(y["reads"] for y in self.yield_totals() if y["gen"] == gen_id)
        if counted != report.records:  # the engines' counts, summed once per merged job
            self.problem(f"{where}yield counts {counted} reads; the output holds {report.records}")

    def yield_totals(self) -> list[dict]:
        """The ledger's yield rows, each with its generation id (`gen`)."""
        import json
        import sqlite3

        db = sqlite3.connect(
            f"file:{self.output / '.bcmanager' / 'ledger.sqlite3'}?mode=ro", uri=True
        )
        try:
            return [
                {**json.loads(t), "gen": g} for g, t in db.execute("SELECT gen, totals FROM yields")
            ]
        finally:
            db.close()


def record_kind(seg: pysam.AlignedSegment) -> str:
    """A BAM record's kind: mapped or unmapped (a read's primary), secondary, supplementary."""
    if seg.is_secondary:
        return "secondary"
    if seg.is_supplementary:
        return "supplementary"
    return "unmapped" if seg.is_unmapped else "mapped"


def run_chaos(seed: int, workdir: Path, config: ChaosConfig | None = None) -> ChaosResult:
    """One seeded chaos run in `workdir` (created; must not exist or be empty)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return ChaosRun(seed, workdir, config or ChaosConfig()).run()


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
