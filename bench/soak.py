"""A PromethION's days compressed into minutes, with a fault every minute (issue 27).

One command runs a whole live run on this machine and checks it at the end:

- **The run.** A simulated sequencer (this script's `--sequencer` mode, a process of its
  own, writing real pod5 files with the pod5 library and `bcmanager.simulate`'s reads)
  writes `--flowcells` flow cells in MinKNOW's layout: one run folder per flow cell
  (`<experiment>/<sample>/<YYYYMMDD_HHMM>_<position>_<flowcell>_<prot8>/`), files in
  `pod5_pass/` and `pod5_fail/` (barcode folders below them on the barcoded flow cells,
  whose pod5 name SQK-NBD114-24 as their kit), one protocol run id and one acquisition id
  per flow cell, each file growing in place while it is written, a few files eight times
  the usual size, and a `final_summary_*.txt` per run when it ends. Paced so that writing
  takes `--minutes`. Two generations: live `fast` from the start, and a backfill `sup`
  (barcoded: `kit-name=SQK-NBD114-24`) added with `bcm generations add` at 40 % of the run.
- **The fleet.** `--engines` `bcm engine --basecaller simulated` of mixed speeds
  (`--samples-per-s`) and start-ups (`--startup-s`); one more `bcm engine --basecaller
  dorado` whose `dorado` is the test stand-in behind a wrapper that can be told to fail
  (the "flaky" engine); and one original BC-pipelines engine (`BCProcessors.py`,
  unmodified, with the test stand-in supervisor) when the reference copy is beside the
  checkout and port 40765 is free (the original engine can reach no other port). Plain
  processes; Slurm is not used.
- **The faults**, one per `--fault-every` seconds at a moment and of a kind drawn from
  `random.Random(--seed)` (every kind once, shuffled, before any repeats), each logged with
  its time: `manager-kill` (SIGKILL, restart after 0-2 s), `failpoint` (SIGKILL, restart
  with `BCM_FAILPOINT` armed: the manager kills itself at that point, then is restarted
  plain), `engine-kill` (SIGKILL of an engine busy with a batch, and its basecaller;
  restarted under a new id), `engine-freeze` (SIGSTOP of a busy engine for 1.5 leases,
  then SIGCONT: its late report must be fenced), `ledger-loss` (SIGKILL, the ledger and its
  WAL deleted, restart; half the time armed at `rebuild.after-a-merge`, so that the
  rebuild itself dies midway and the next start must finish it), `basecaller-fail` (the
  flaky engine's next batch: its `dorado` exits 3), `truncated-pod5` (the sequencer
  writes a file cut short, then finishes it `--truncate-hold` seconds later), `disk-full`
  (OUTPUT is a tmpfs of its own, mounted here; it is filled to ENOSPC for `--disk-full-s`
  seconds; skipped when the mount fails, i.e. without root).
- **The checks.** Every `--check-every` seconds: the dashboard answers (GET / is 200), `bcm
  verify` of each generation finds no read twice and none unexpected (missing reads are
  expected mid-run). Every few seconds: the manager's RSS, how many closed pod5 files the
  live generation is behind the sequencer, and claims (the ledger read-only). At the end:
  every generation done with nothing quarantined; `bcm verify --generation` green for both
  (every read exactly once, every summary row once); every output read to its end by pysam
  (`tests.helpers.read_strictly`) and its records equal to verify's count; the reads bcm
  verify counts equal to those the sequencer wrote; no job folder left in INPUT; the
  dashboard answers; the manager's RSS at the end at most `max_rss_growth` (2) times its
  first settled sample; the live generation never more files behind the sequencer than it
  closes in `max_lag_s` (300 s); 99 % of batches handed out within `max_claim_p99_s` (1 s;
  the manager's `bcmanager_claim_seconds` histogram, read every 30 s and summed over its
  lives; a long poll's wait for work is not in it). A manager restarted while OUTPUT is full exits 1 with one
  line saying so (it cannot write its ledger); it is started again every 2 s, as systemd
  would, and that is no problem; any other exit is.

Output: a table of faults by kind, a table of the checks (reads, outputs, RSS at start and
end, pickup latency p50/p99, worst lag, the seed) and the `soak-seed-N` section of
docs/benchmarks.md (one per seed, so that several soaks stand side by side) (not with `--no-doc`, nor when a check failed unless `--doc-anyway`).
The exit status is 0 only when every check passed.

    python bench/soak.py                     # 15 minutes of sequencing (about 20 in all), seed 1
    python bench/soak.py --minutes 10 --seed 2
    python bench/soak.py --minutes 1.2 --flowcells 4 --fault-every 15 --no-doc   # a quick one

`tests/e2e/test_soak.py` runs a short one (`short_config`) in the suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import math
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from _common import (
    HOST,
    PORT,
    REFERENCE,
    REPO,
    descendants,
    fmt,
    free_port,
    machine,
    markdown_table,
    percentile,
    port_free,
    print_table,
    remove_tree,
    section_header,
    stop_on_sigterm,
    update_doc,
    utc_now,
)

if str(REPO) not in sys.path:  # tests.helpers: the strict reader the suite uses
    sys.path.insert(0, str(REPO))

WORK = REPO / "bench" / "_work" / "soak"
ORIGINAL_SOFTWARE = REFERENCE / "BC_software"
STANDIN_DORADO = REPO / "tests" / "fakes" / "dorado"
FAILPOINTS = (
    "claim.after-commit",
    "complete.after-journal",
    "merge.after-move",
    "merge.after-append",
    "merge.after-rename",
)
REBUILD_FAILPOINT = "rebuild.after-a-merge"
KINDS = (
    "manager-kill",
    "failpoint",
    "engine-kill",
    "engine-freeze",
    "ledger-loss",
    "basecaller-fail",
    "truncated-pod5",
    "disk-full",
)
LEDGER_FILES = ("ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm")
BARCODE_KIT = "SQK-NBD114-24"
LIVE, BACKFILL = "fast", "sup"
TICK_S = 0.2
SAMPLE_S = 3.0
CLAIMS_EVERY_S = 30.0  # /metrics' claim histogram, read per manager life
# simulated engines: speed (x --speed samples/s, for the hac model) and start-up (s)
FLEET = ((1.0, 0.3), (1.0, 1.0), (0.6, 0.2), (0.4, 1.5), (0.3, 0.5), (0.2, 0.3), (0.8, 2.0))


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 15.0  # how long the sequencer writes (72 h of a PromethION, compressed)
    seed: int = 1
    flowcells: int = 48
    interval_s: float = 15.0  # one file per flow cell every interval
    reads: int = 18  # reads per file (x0.5-1.5; large files x8)
    samples: int = 2000  # mean samples per read
    barcoded_every: int = 3  # every n-th flow cell is barcoded
    fail_share: float = 0.15  # pod5 files written to pod5_fail
    large_every: int = 4  # every n-th flow cell writes one file 8x larger
    engines: int = 6  # simulated engines (plus the flaky one and the original)
    speed: float = 400_000.0  # samples/s of the fastest simulated engine (hac model)
    lease_s: float = 15.0
    target_batch_s: float = 20.0
    max_attempts: int = 10
    live_window_s: float = 60.0
    fault_every_s: float = 60.0
    kinds: tuple[str, ...] = KINDS
    check_every_s: float = 120.0
    truncate_hold_s: float = 30.0
    disk_full_s: float = 60.0
    tmpfs_size: str = "2g"
    original: bool = True  # the original engine, when its code and port 40765 are there
    slurm_engines: int = 2  # engines the real `bcm slurm controller` keeps as Slurm jobs (0: none)
    backfill_at: float = 0.4  # `bcm generations add` at this share of the run
    finish_timeout_s: float = 900.0
    max_lag_s: float = 300.0  # the live generation may lag what the sequencer closes in this
    max_rss_growth: float = 2.0  # the manager's RSS at the end over its first settled sample
    max_claim_p99_s: float = 1.0  # a batch handed out (long poll excluded), 99th percentile

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    @property
    def files_per_flowcell(self) -> int:
        return max(1, math.ceil(self.duration_s / self.interval_s))

    @property
    def max_behind(self) -> int:
        """Closed live files not yet basecalled, at most: what the sequencer closes in
        `max_lag_s` (a minute of full disk and a few manager restarts fit in it)."""
        return math.ceil(self.flowcells * self.max_lag_s / self.interval_s)


def short_config(seed: int = 7) -> SoakConfig:
    """The suite's soak: ~70 s of sequencing by 4 flow cells, a fault every ~12 s, every
    kind but a full disk once or more (a fault of each of the seven fits in 84 s)."""
    return SoakConfig(
        minutes=1.4,
        seed=seed,
        flowcells=4,
        interval_s=5.0,
        reads=30,
        samples=1500,
        barcoded_every=2,
        large_every=2,
        engines=3,
        speed=300_000.0,
        lease_s=4.0,
        target_batch_s=3.0,
        live_window_s=10.0,
        fault_every_s=12.0,
        kinds=tuple(k for k in KINDS if k != "disk-full"),
        check_every_s=30.0,
        truncate_hold_s=8.0,
        disk_full_s=8.0,
        original=False,
        slurm_engines=0,
        finish_timeout_s=150.0,
    )


# -- the fault plan -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    number: int
    at_s: float  # seconds after the sequencer started
    kind: str
    failpoint: str = ""
    pick: float = 0.0  # which engine: a fraction of the sorted candidates
    down_s: float = 0.0  # how long the manager stays down (manager-kill, ledger-loss)

    def describe(self) -> str:
        extra = f" at {self.failpoint}" if self.failpoint else ""
        return f"#{self.number} {self.kind}{extra} at {self.at_s:.1f} s"


def plan_faults(config: SoakConfig) -> list[Fault]:
    """One fault per `fault_every_s` of the run, at a seeded moment inside its period;
    kinds: each of `config.kinds` once (shuffled), then drawn at random."""
    rng = random.Random(config.seed)
    n = int(config.duration_s // config.fault_every_s)
    kinds = list(config.kinds)
    rng.shuffle(kinds)
    while len(kinds) < n:
        kinds.append(rng.choice(config.kinds))
    plan = []
    for i, kind in enumerate(kinds[:n]):
        at = (i + rng.uniform(0.15, 0.85)) * config.fault_every_s
        point = rng.choice(FAILPOINTS) if kind == "failpoint" else ""
        plan.append(Fault(i + 1, at, kind, point, rng.random(), rng.choice([0.0, 0.5, 2.0])))
    return plan


# -- the sequencer (a process of its own: `soak.py --sequencer SPEC`) ----------------------


@dataclass(frozen=True)
class Cell:
    k: int
    flowcell: str
    position: str
    protocol_run_id: str
    acquisition_id: str
    run_dir: str  # INPUT-relative
    kit: str

    @property
    def barcoded(self) -> bool:
        return self.kit == BARCODE_KIT


def plan_cells(config: SoakConfig, stamp: str) -> list[Cell]:
    rng = random.Random(f"cells-{config.seed}")
    cells = []
    for k in range(config.flowcells):
        flowcell = f"PA{'WXYZ'[k % 4]}{rng.randrange(10_000, 100_000)}"
        position = f"{1 + k // 8}{'ABCDEFGH'[k % 8]}"
        prot = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        acq = f"{rng.getrandbits(160):040x}"
        kit = BARCODE_KIT if config.barcoded_every and k % config.barcoded_every == 0 else ""
        run_dir = f"soak/sample{k % 4}/{stamp}_{position}_{flowcell}_{prot[:8]}"
        cells.append(Cell(k, flowcell, position, prot, acq, run_dir, kit or "SQK-LSK114"))
    return cells


class Sequencer:
    """Writes every flow cell's files over time and notes each one in `manifest.jsonl`."""

    def __init__(self, spec: dict) -> None:
        self.config = SoakConfig(**{**spec["config"], "kinds": tuple(spec["config"]["kinds"])})
        self.input = Path(spec["input"])
        self.manifest = Path(spec["manifest"])
        self.control = Path(spec["control"])
        self.scratch = Path(spec["scratch"])
        self.t0 = float(spec["t0"])
        self.cells = [Cell(**c) for c in spec["cells"]]
        self.lock = threading.Lock()
        self.pending: list[threading.Thread] = []
        self.written: dict[int, list[tuple[str, int]]] = {c.k: [] for c in self.cells}

    def note(self, **entry: object) -> None:
        with self.lock, open(self.manifest, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": time.time(), **entry}) + "\n")
            fh.flush()

    def run(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        threads = [
            threading.Thread(target=self.run_cell, args=(c,), name=f"fc{c.k}") for c in self.cells
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for t in list(self.pending):
            t.join()
        for cell in self.cells:
            self.final_summary(cell)
        self.note(event="ended")

    def flow_cell(self, cell: Cell):  # -> bcmanager.simulate.FlowCell
        from bcmanager.simulate import FlowCell

        return FlowCell(
            cell.flowcell,
            cell.position,
            cell.protocol_run_id,
            cell.acquisition_id,
            self.input / cell.run_dir,
            self.input / cell.run_dir / "pod5",
        )

    def run_info(self, cell: Cell):  # -> pod5.RunInfo
        from bcmanager.simulate import _run_info

        started = datetime.fromtimestamp(self.t0, UTC)
        info = _run_info(self.flow_cell(cell), "soak", f"sample{cell.k % 4}", started)
        return dataclasses.replace(info, sequencing_kit=cell.kit.lower())

    def run_cell(self, cell: Cell) -> None:
        import numpy as np

        config = self.config
        rng = random.Random(f"files-{config.seed}-{cell.k}")
        info = self.run_info(cell)
        n = config.files_per_flowcell
        large = n // 2 if config.large_every and cell.k % config.large_every == 0 else -1
        first = self.t0 + cell.k * config.interval_s / len(self.cells)
        for i in range(n):
            slot = first + i * config.interval_s
            status = "fail" if rng.random() < config.fail_share else "pass"
            folder = f"{cell.run_dir}/pod5_{status}"
            name = f"{cell.flowcell}_{status}_"
            if cell.barcoded:
                barcode = rng.choice([f"barcode{b:02d}" for b in range(1, 7)] + ["unclassified"])
                folder += f"/{barcode}"
                name += f"{barcode}_"
            name += f"{cell.acquisition_id[:8]}_{cell.protocol_run_id[:8]}_{i}.pod5"
            rel = f"{folder}/{name}"
            reads = max(1, round(config.reads * rng.uniform(0.5, 1.5) * (8 if i == large else 1)))
            gen = np.random.default_rng([config.seed, cell.k, i])
            (self.input / folder).mkdir(parents=True, exist_ok=True)
            if self.take_truncation(cell):
                self.write_truncated(rel, info, gen, reads, slot)
            else:
                self.write_growing(rel, info, gen, reads, slot)

    def make_reads(self, gen, info, n: int) -> list:
        from bcmanager.simulate import _make_read

        out, start = [], 0
        for number in range(n):
            read = _make_read(gen, info, number, self.config.samples, start)
            start += len(read.signal) + int(gen.integers(100, 5000))
            out.append(read)
        return out

    def write_growing(self, rel: str, info, gen, n: int, slot: float) -> None:
        """Under its final name, in three chunks spread over the interval, closed at its end."""
        import pod5

        reads = self.make_reads(gen, info, n)
        parts = [reads[j * n // 3 : (j + 1) * n // 3] for j in range(3)]
        interval = self.config.interval_s
        with pod5.Writer(self.input / rel, software_name="bcmanager soak sequencer") as writer:
            for j, part in enumerate(parts):
                sleep_until(slot + interval * (j + 1) / 3 * 0.95)
                if part:
                    writer.add_reads(part)
            sleep_until(slot + interval)
        self.closed(rel, reads)

    def closed(self, rel: str, reads: list) -> None:
        samples = sum(len(r.signal) for r in reads)
        size = os.stat(self.input / rel).st_size
        self.note(event="closed", path=rel, reads=len(reads), samples=samples, bytes=size)

    def take_truncation(self, cell: Cell) -> bool:
        """A truncation the driver asked for (a file `truncate.N` in the control folder),
        taken by the first flow cell to start a file after it appeared."""
        for entry in sorted(os.listdir(self.control)):
            if entry.startswith("truncate."):
                with suppress(FileNotFoundError):
                    os.rename(self.control / entry, self.control / f"taken.{entry}.{cell.k}")
                    return True
        return False

    def write_truncated(self, rel: str, info, gen, n: int, slot: float) -> None:
        """The whole file written elsewhere; under its final name, its first 30-85 % only
        (written and closed, as by a writer that stopped); the rest `truncate_hold_s`
        later (appended, closed: the file is then exactly the whole one)."""
        import pod5

        from bcmanager.layout import POD5_SIGNATURE

        reads = self.make_reads(gen, info, n)
        whole_path = self.scratch / Path(rel).name
        with pod5.Writer(whole_path, software_name="bcmanager soak sequencer") as writer:
            writer.add_reads(reads)
        whole = whole_path.read_bytes()
        whole_path.unlink()
        sleep_until(slot + self.config.interval_s * 0.5)
        rng = random.Random(f"cut-{rel}")
        cut = int(len(whole) * rng.uniform(0.3, 0.85))
        while whole[:cut].endswith(POD5_SIGNATURE[-1:]):  # never ends like a whole file
            cut -= 1
        with open(self.input / rel, "xb") as fh:
            fh.write(whole[:cut])
        self.note(event="truncated", path=rel, cut=cut, size=len(whole))

        def finish() -> None:
            time.sleep(self.config.truncate_hold_s)
            with open(self.input / rel, "ab") as fh:
                fh.write(whole[cut:])
            self.closed(rel, reads)

        t = threading.Thread(target=finish, name=f"finish-{Path(rel).name}")
        t.start()
        self.pending.append(t)

    def final_summary(self, cell: Cell) -> None:
        """MinKNOW's end-of-run marker (`bcmanager.simulate`'s, written whole by rename)."""
        from bcmanager.simulate import write_final_summary

        written = [
            e for e in read_manifest(self.manifest) if e.get("event") == "closed"
            and e["path"].startswith(cell.run_dir + "/")
        ]  # fmt: skip
        write_final_summary(
            self.flow_cell(cell),
            len(written),
            sum(e["reads"] for e in written),
            datetime.fromtimestamp(self.t0, UTC),
            "soak",
            f"sample{cell.k % 4}",
            kit=cell.kit,
            instrument="soak",
        )


def sleep_until(when: float) -> None:
    while (left := when - time.time()) > 0:
        time.sleep(min(left, 1.0))


def read_manifest(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with suppress(ValueError):
            out.append(json.loads(line))
    return out


def sequencer_main(spec_path: Path) -> int:
    Sequencer(json.loads(spec_path.read_text(encoding="utf-8"))).run()
    return 0


# -- processes ----------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    kind: str  # manager, simulated, flaky, original, sequencer
    spec: dict = field(default_factory=dict)  # how to start another like it
    frozen: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill_tree(self) -> None:
        """SIGKILL it and everything below it (an engine's basecaller has its own session)."""
        self.signal(signal.SIGSTOP)  # no new child between the listing and the kill
        below = descendants(self.pid) if self.alive() else []
        self.signal(signal.SIGKILL)
        for pid in below:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=15)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (an engine hands its batch back); SIGKILL of the tree if it lingers."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_tree()
        for pid in descendants(self.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 15) -> str:
        with suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def spawn(name: str, cmd: list[str], log: Path, kind: str, **kw) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
    # A session of its own: when the shell that started the soak exits, the kernel sends
    # SIGCONT to every stopped process of an orphaned process group, which would thaw
    # an engine the soak has frozen (it did, once). The soak stops them itself.
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            **kw,
        )
    return Proc(name, popen, log, kind)


def http(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url`: (status, body); (0, b'') when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def get_json(url: str, timeout: float = 5.0) -> dict | None:
    status, body = http(url, timeout)
    if status != 200:
        return None
    with suppress(ValueError):
        return json.loads(body)
    return None


# -- the soak -----------------------------------------------------------------------------


@dataclass
class SoakResult:
    config: SoakConfig
    workdir: Path
    plan: list[Fault]
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why
    files: int = 0
    reads: int = 0
    verify: dict[str, dict] = field(default_factory=dict)  # generation -> bcm verify --json
    strict: dict[str, tuple[int, int]] = field(default_factory=dict)  # gen -> (files, records)
    rss: list[tuple[float, int, float]] = field(default_factory=list)  # (t, life, MiB)
    pickup_s: list[float] = field(default_factory=list)  # close -> first claim, live
    close_to_done_s: list[float] = field(default_factory=list)  # live generation
    claim_buckets: dict[int, dict[float, float]] = field(default_factory=dict)  # life -> le -> n
    worst_behind: int = 0  # closed live files not yet basecalled, at the worst sample
    worst_behind_at: float = 0.0
    checks: int = 0  # mid-run checks done
    dashboard_ok: int = 0
    dashboard_failed: int = 0
    manager_lives: int = 0
    engines_started: int = 0
    original: str = ""  # "" unused, else what happened to it
    original_starts: int = 0
    disk_full: str = ""  # the tmpfs used, or why not
    slurm: str = ""  # the Slurm used, or why not
    slurm_jobs: Counter[str] = field(default_factory=Counter)  # engine jobs by final state

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [f"soak seed {self.config.seed}: {'ok' if self.ok else 'FAILED'}"]
        lines += [f"  {entry}" for entry in self.log]
        lines += [f"  NOTE: {n}" for n in self.notes]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append(f"  logs in {self.workdir}")
        return "\n".join(lines)


class Soak:
    def __init__(self, config: SoakConfig, workdir: Path, keep_output: bool = False) -> None:
        self.config = config
        self.keep_output = keep_output
        self.work = workdir
        self.input = workdir / "input"
        self.output = workdir / "output"
        self.logs = workdir / "logs"
        self.control = workdir / "control"
        self.manifest = workdir / "manifest.jsonl"
        self.result = SoakResult(config, workdir, plan_faults(config))
        self.rng = random.Random(f"soak-{config.seed}")
        self.t0 = 0.0  # the sequencer's start (time.time())
        self.port = 0
        self.url = ""
        self.manager: Proc | None = None
        self.manager_down = False  # down on purpose (a restart is scheduled)
        self.armed = ""  # the failpoint of the current manager life
        self.life = 0
        self.engines: list[Proc] = []
        self.original: Proc | None = None
        self.original_config: Path | None = None
        self.cluster: object | None = None  # tests.slurm.SlurmCluster
        self.controller: Proc | None = None
        self.jobs_file = workdir / "slurm-jobs.json"
        self.sequencer: Proc | None = None
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_seq = 0
        self.mounted = False
        self.ballast: Path | None = None
        self.space_back_at = 0.0
        self.backfill_added = False
        self.first_claim: dict[str, float] = {}  # live generation, path -> jobs.created
        self.done_at: dict[str, float] = {}  # live generation, path -> files.done_at
        self.next_sample = 0.0
        self.next_check = 0.0
        self.next_claims = 0.0
        self.flaky_trigger = self.control / "fail-next-batch"
        self.checker: threading.Thread | None = None
        self.flaky_failures_seen = 0

    # -- bookkeeping ----------------------------------------------------------------

    def now(self) -> float:
        return time.time() - self.t0 if self.t0 else 0.0

    def note(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        line = f"{self.now():7.1f} s ({stamp})  {text}"
        self.result.log.append(line)
        print(f"  {line}", flush=True)
        with open(self.work / "soak.log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def problem(self, text: str) -> None:
        self.note(f"PROBLEM: {text}")
        self.result.problems.append(text)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (time.time() + delay, self.timer_seq, fn))

    # -- the manager ----------------------------------------------------------------

    def manager_args(self) -> list[str]:
        c = self.config
        return [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "manager",
            "--input",
            str(self.input),
            "--output",
            str(self.output),
            "--port",
            str(self.port),
            "--lease",
            repr(c.lease_s),
            "--rescan",
            "5",
            "--max-attempts",
            str(c.max_attempts),
            "--target-batch",
            repr(c.target_batch_s),
            "--live-window",
            repr(c.live_window_s),
            "--generation",
            f"{LIVE}={LIVE}",
        ]

    def start_manager(self, failpoint: str = "") -> None:
        self.life += 1
        self.result.manager_lives += 1
        log = self.logs / "manager.log"
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"\n===== soak: manager life {self.life} (failpoint {failpoint or 'none'})\n")
        self.manager = spawn(
            "manager",
            self.manager_args(),
            log,
            "manager",
            env={"BCM_FAILPOINT": failpoint},
        )
        self.armed = failpoint
        self.manager_down = False

    def wait_manager(self, timeout: float = 60.0) -> bool:
        """True once it answers /healthz; False if it died first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.manager is None or not self.manager.alive():
                return False
            if http(f"{self.url}/healthz", 1.0)[0] == 200:
                return True
            time.sleep(0.1)
        self.problem(f"the manager did not answer within {timeout:g} s of its start")
        return False

    def kill_manager(self) -> None:
        if self.manager is not None and self.manager.alive():
            self.manager.kill_tree()

    def restart_manager(self, failpoint: str = "") -> None:
        self.start_manager(failpoint)
        if failpoint:
            self.note(f"manager restarted, armed at {failpoint}")
        self.wait_manager()

    def supervise_manager(self) -> None:
        m = self.manager
        if m is None or self.manager_down or m.alive():
            return
        code = m.popen.returncode
        if code == -signal.SIGKILL and self.armed:
            self.result.faults[f"failpoint {self.armed} hit"] += 1
            self.note(f"manager killed itself at {self.armed}; restarted")
        elif self.refused_for_full_disk(m):
            self.result.faults["manager start refused: OUTPUT full"] += 1
            self.note(
                f"manager exited {code}: OUTPUT is full (one line, as it should); again in 2 s"
            )
            self.manager_down = True
            self.later(2.0, self.restart_manager)
            return
        else:
            self.problem(f"manager exited with {code} (failpoint {self.armed or 'none'})")
            self.note(m.log_tail())
        self.restart_manager()

    def refused_for_full_disk(self, m: Proc) -> bool:
        """A manager restarted while OUTPUT (its ledger's disk) is full cannot write its
        ledger: it exits 1 with one line saying so, and is started again (as systemd
        would) until there is room. Anything else is a problem."""
        if self.ballast is None and time.time() - self.space_back_at > 10:
            return False
        lines = [line for line in m.log_tail(3).splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        return (
            m.popen.returncode == 1
            and last.startswith("Error:")
            and any(word in last for word in ("No space left", "disk is full"))
        )

    def disarm(self, grace_s: float = 10.0) -> None:
        """Before another manager fault (and at the end): give an armed life time to die
        at its point, then restart it plain."""
        if not self.armed:
            return
        deadline = time.time() + grace_s
        while time.time() < deadline and self.armed and self.manager and self.manager.alive():
            self.pump(0.2, faults=False)
        if self.manager is not None and not self.manager.alive():
            self.supervise_manager()
            return
        if self.armed:
            self.result.faults[f"failpoint {self.armed} not reached"] += 1
            self.note(f"failpoint {self.armed} not reached in {grace_s:g} s; disarmed")
            self.kill_manager()
            self.restart_manager()

    # -- engines --------------------------------------------------------------------

    def engine_cmd(self, engine_id: str, extra: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "engine",
            "--manager",
            self.url,
            "--engine-id",
            engine_id,
            "--wait",
            "10",
            "--log-format",
            "json",
            *extra,
        ]

    def start_engine(self, spec: dict) -> Proc:
        self.result.engines_started += 1
        n = spec.setdefault("lives", 0) + 1
        spec["lives"] = n
        engine_id = spec["base"] if n == 1 else f"{spec['base']}.r{n - 1}"
        proc = spawn(
            engine_id,
            self.engine_cmd(engine_id, spec["options"]),
            self.logs / f"engine-{engine_id}.log",
            spec["kind"],
            env=spec.get("env", {}),
        )
        proc.spec = spec
        self.engines.append(proc)
        return proc

    def fleet(self) -> list[dict]:
        c = self.config
        specs = []
        for k in range(c.engines):
            speed, startup = FLEET[k % len(FLEET)]
            rate = c.speed * speed
            specs.append(
                {
                    "base": f"sim{k + 1}",
                    "kind": "simulated",
                    "rate": rate,
                    "startup": startup,
                    "options": [
                        "--basecaller",
                        "simulated",
                        "--samples-per-s",
                        f"{rate:.0f}",
                        "--startup-s",
                        repr(startup),
                    ],
                }
            )
        wrapper = self.work / "bin" / "dorado"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(
            "#!/bin/sh\n"
            "# the soak's dorado: the test stand-in, but a batch the driver marks fails\n"
            'if [ "$1" = basecaller ] && mv "$SOAK_FAIL_TRIGGER" "$SOAK_FAIL_TRIGGER.taken.$$"'
            " 2>/dev/null; then\n"
            '  echo "[error] soak: injected basecaller failure, exit 3" >&2\n'
            "  exit 3\n"
            "fi\n"
            f'exec {shlex.quote(str(STANDIN_DORADO))} "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o755)
        specs.append(
            {
                "base": "flaky",
                "kind": "flaky",
                "options": [
                    "--basecaller",
                    "dorado",
                    "--dorado",
                    str(wrapper),
                    "--model",
                    LIVE,
                    "--device",
                    "cpu",
                ],
                "env": {
                    "BCM_PYTHON": sys.executable,
                    "BCM_STANDIN_STARTUP_S": "0.3",
                    "SOAK_FAIL_TRIGGER": str(self.flaky_trigger),
                },
            }
        )
        return specs

    def supervise_engines(self) -> None:
        for proc in list(self.engines):
            if proc.alive():
                continue
            self.engines.remove(proc)
            if self.manager_down or (self.manager and not self.manager.alive()):
                self.note(
                    f"engine {proc.name} exited ({proc.popen.returncode}) with the manager down"
                )
            else:
                self.problem(f"engine {proc.name} exited by itself ({proc.popen.returncode})")
                self.note(proc.log_tail(5))
            self.start_engine(proc.spec)

    # -- the original engine --------------------------------------------------------

    def setup_original(self) -> bool:
        if not self.config.original:
            return False
        if not (ORIGINAL_SOFTWARE / "BCProcessors.py").exists():
            self.result.original = f"skipped: no reference copy at {REFERENCE}"
            self.result.notes.append(self.result.original)
            return False
        deadline = time.time() + 120  # others' tests take it for seconds at a time
        while not port_free(PORT) and time.time() < deadline:
            time.sleep(0.5)
        if not port_free(PORT):
            self.result.original = (
                f"skipped: port {PORT} (the only one it can reach) was busy for 2 minutes"
            )
            self.result.notes.append(self.result.original)
            return False
        script = self.work / "bin" / "supervisor.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(
            f"#!/bin/sh\ncd {shlex.quote(str(REPO))} && exec {shlex.quote(sys.executable)}"
            ' -m tests.fakes.standin_supervisor "$@"\n',
            encoding="utf-8",
        )
        script.chmod(0o755)
        conf = {
            "General": {"batch_size": "4"},
            "Basecalling": {
                "model": "dna_r10.4.1_e8.2_400bps_fast.cfg",
                "input_dir": str(self.input),
                "output_dir": str(self.output),
                "supervisor_script_path": str(script),
            },
            "Resources": {
                "index_host": "0",
                "nodes_list": ["legacy001"],
                "nodes_ip": [HOST],
                "batch_size_list": ["4"],
            },
        }
        self.original_config = self.work / "original-config.json"
        self.original_config.write_text(json.dumps(conf, indent=1), encoding="utf-8")
        self.result.original = "ran (BCProcessors.py, unmodified; it exits when the manager is"
        self.result.original += " unreachable or has nothing for it, and was restarted each time)"
        return True

    def start_original(self) -> None:
        assert self.original_config is not None
        self.original = spawn(
            "original",
            [sys.executable, "BCProcessors.py", str(self.original_config), "0"],
            self.logs / "engine-original.log",
            "original",
            cwd=ORIGINAL_SOFTWARE,
        )
        self.result.original_starts += 1

    def supervise_original(self) -> None:
        if self.original is None or self.original.alive():
            return
        if self.manager_down or not (self.manager and self.manager.alive()):
            return
        if self.sequencer is not None and not self.sequencer.alive() and self.live_left() == 0:
            return  # the live work is done: nothing left for it
        self.start_original()

    # -- the Slurm engines ------------------------------------------------------------

    def setup_slurm(self) -> bool:
        """A real single-node Slurm (`tests.slurm`: the running one, or a private one)."""
        if not self.config.slurm_engines:
            return False
        from tests.slurm import start_slurm

        try:
            self.cluster = start_slurm()
        except RuntimeError as exc:  # not installed, or it would not start (not root)
            self.result.slurm = f"skipped: {str(exc).splitlines()[0]}"
            self.result.notes.append(self.result.slurm)
            return False
        private = "a private single-node one" if self.cluster.conf_dir else "the running one"
        self.result.slurm = (
            f"{self.config.slurm_engines} engine jobs at most, submitted and cancelled by"
            f" `bcm slurm controller` on Slurm ({private}, partition {self.cluster.partition})"
        )
        return True

    def controller_cmd(self) -> list[str]:
        rate, startup = FLEET[len(FLEET) // 2]
        return [
            sys.executable, "-m", "bcmanager.cli", "slurm", "controller",
            "--manager", self.url,
            "--partition", self.cluster.partition,
            "--max-engines", str(self.config.slurm_engines),
            "--interval", "5",
            "--idle-after", "60",
            "--target-drain", "5",
            "--jobs-file", str(self.jobs_file),
            "--log-dir", str(self.logs),
            "--job-name", "bcm-soak",
            "--basecaller", "simulated",
            "--samples-per-s", f"{self.config.speed * rate:.0f}",
            "--startup-s", repr(startup),
            "--wait", "10",
            "--log-format", "json",
        ]  # fmt: skip

    def start_controller(self) -> None:
        self.controller = spawn(
            "controller", self.controller_cmd(), self.logs / "controller.log", "controller"
        )

    def supervise_controller(self) -> None:
        if self.controller is None or self.controller.alive():
            return
        self.problem(f"bcm slurm controller exited by itself ({self.controller.popen.returncode})")
        self.note(self.controller.log_tail(5))
        self.start_controller()

    def stop_slurm(self) -> None:
        """Stop the controller, note what became of its jobs, cancel those left."""
        if self.controller is not None and self.controller.alive():
            self.controller.stop()
        if self.cluster is None:
            return
        from tests.slurm import stop_slurm

        with suppress(OSError, ValueError):
            jobs = json.loads(self.jobs_file.read_text(encoding="utf-8")).get("jobs", {})
            self.result.slurm_jobs = Counter(info.get("state", "?") for info in jobs.values())
            live = [j for j, info in jobs.items() if info.get("state") == "submitted"]
            if live:
                subprocess.run(["scancel", *live], capture_output=True, timeout=30)
        stop_slurm(self.cluster)
        self.cluster = None

    # -- the sequencer --------------------------------------------------------------

    def start_sequencer(self, cells: list[Cell]) -> None:
        spec = {
            "config": {**dataclasses.asdict(self.config), "kinds": list(self.config.kinds)},
            "input": str(self.input),
            "manifest": str(self.manifest),
            "control": str(self.control),
            "scratch": str(self.work / "scratch"),
            "t0": self.t0,
            "cells": [dataclasses.asdict(c) for c in cells],
        }
        path = self.work / "sequencer.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--sequencer", str(path)]
        self.sequencer = spawn("sequencer", cmd, self.logs / "sequencer.log", "sequencer")

    def closed_files(self) -> dict[str, dict]:
        return {e["path"]: e for e in read_manifest(self.manifest) if e.get("event") == "closed"}

    # -- the output disk --------------------------------------------------------------

    def mount_output(self) -> None:
        if "disk-full" not in self.config.kinds:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        options = f"size={self.config.tmpfs_size}"
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.output)],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0:
            self.mounted = True
            self.result.disk_full = f"OUTPUT on a tmpfs of its own ({options})"
            return
        why = (r.stderr or r.stdout).strip()
        self.result.disk_full = f"skipped: mounting a tmpfs as OUTPUT failed ({why}; needs root)"
        self.result.notes.append(self.result.disk_full)

    def unmount_output(self) -> None:
        if not self.mounted:
            return
        if subprocess.run(["umount", str(self.output)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.output)], capture_output=True)
        self.mounted = False

    # -- faults -----------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        self.note(f"fault {fault.describe()} (seed {self.config.seed})")
        handler = {
            "manager-kill": self.fault_manager_kill,
            "failpoint": self.fault_failpoint,
            "engine-kill": self.fault_engine_kill,
            "engine-freeze": self.fault_engine_freeze,
            "ledger-loss": self.fault_ledger_loss,
            "basecaller-fail": self.fault_basecaller_fail,
            "truncated-pod5": self.fault_truncated,
            "disk-full": self.fault_disk_full,
        }[fault.kind]
        handler(fault)

    def fault_manager_kill(self, fault: Fault) -> None:
        self.disarm()
        self.kill_manager()
        self.manager_down = True
        self.result.faults["manager-kill"] += 1
        self.note(f"manager SIGKILLed (life {self.life}); restart in {fault.down_s:g} s")
        self.later(fault.down_s, self.restart_manager)

    def fault_failpoint(self, fault: Fault) -> None:
        self.disarm()
        self.kill_manager()
        self.result.faults["failpoint armed"] += 1
        self.restart_manager(fault.failpoint)

    def fault_ledger_loss(self, fault: Fault) -> None:
        self.disarm()
        self.kill_manager()
        for name in LEDGER_FILES:
            (self.output / ".bcmanager" / name).unlink(missing_ok=True)
        self.manager_down = True
        self.result.faults["ledger-loss"] += 1
        # half the time the rebuild itself is killed midway (as a full disk once did)
        armed = REBUILD_FAILPOINT if self.rng.random() < 0.5 else ""
        self.note(
            f"manager SIGKILLed, ledger deleted; restart in {fault.down_s:g} s"
            + (f", armed at {armed}" if armed else "")
        )
        self.later(fault.down_s, lambda: self.restart_manager(armed))

    def busy_engines(self) -> list[tuple[Proc, int]]:
        """Engines of ours holding a running job, by the manager's status."""
        status = get_json(f"{self.url}/v1/status", 10) or {}
        by_name = {p.name: p for p in self.engines if p.alive() and not p.frozen}
        return sorted(
            (
                (by_name[j["engine"]], j["job_id"])
                for j in status.get("running_jobs", [])
                if j.get("state") == "assigned" and j.get("engine") in by_name
            ),
            key=lambda item: item[0].name,
        )

    def pick_engine(self, fault: Fault) -> tuple[Proc, int | None] | None:
        busy = self.busy_engines()
        if busy:
            proc, job = busy[int(fault.pick * len(busy)) % len(busy)]
            return proc, job
        idle = sorted((p for p in self.engines if p.alive() and not p.frozen), key=lambda p: p.name)
        if not idle:
            return None
        return idle[int(fault.pick * len(idle)) % len(idle)], None

    def fault_engine_kill(self, fault: Fault) -> None:
        picked = self.pick_engine(fault)
        if picked is None:
            self.note("engine-kill skipped: no engine up")
            self.result.faults["engine-kill skipped"] += 1
            return
        proc, job = picked
        proc.kill_tree()
        self.engines.remove(proc)
        new = self.start_engine(proc.spec)
        what = f"mid-job {job}" if job is not None else "idle (no engine held a job)"
        self.note(f"engine {proc.name} and its basecaller SIGKILLed {what}; {new.name} started")
        self.result.faults["engine-kill"] += 1

    def fault_engine_freeze(self, fault: Fault) -> None:
        picked = self.pick_engine(fault)
        if picked is None:
            self.note("engine-freeze skipped: no engine up")
            self.result.faults["engine-freeze skipped"] += 1
            return
        proc, job = picked
        hold = self.config.lease_s * 1.5 + 2
        proc.signal(signal.SIGSTOP)
        proc.frozen = True
        what = f"mid-job {job}" if job is not None else "idle"
        self.note(
            f"engine {proc.name} SIGSTOPped {what} for {hold:g} s (lease {self.config.lease_s:g} s)"
        )
        self.result.faults["engine-freeze"] += 1

        def thaw() -> None:
            state = None
            if job is not None:
                state = (get_json(f"{self.url}/v1/jobs/{job}", 10) or {}).get("state")
            proc.signal(signal.SIGCONT)
            proc.frozen = False
            self.note(f"engine {proc.name} SIGCONT; its job {job} is {state}")
            if job is not None:
                fenced = state in ("expired", "late", None)
                self.result.faults[
                    "engine-freeze: job expired" if fenced else "engine-freeze: job ended first"
                ] += 1

        self.later(hold, thaw)

    def fault_basecaller_fail(self, fault: Fault) -> None:
        self.flaky_trigger.write_text(f"fault {fault.number}\n", encoding="utf-8")
        self.result.faults["basecaller-fail armed"] += 1
        self.note("the flaky engine's next batch will exit 3")

    def fault_truncated(self, fault: Fault) -> None:
        (self.control / f"truncate.{fault.number:04d}").write_text("", encoding="utf-8")
        self.result.faults["truncated-pod5 asked"] += 1
        self.note("the sequencer's next file will be cut short, and finished later")

    def fault_disk_full(self, fault: Fault) -> None:
        if not self.mounted:
            self.result.faults["disk-full skipped"] += 1
            self.note(f"disk-full skipped: {self.result.disk_full}")
            return
        if self.ballast is not None:
            self.note("disk-full: the disk is still full from the last one")
            return
        self.ballast = self.output / ".soak-ballast"
        filled = 0
        with open(self.ballast, "wb", buffering=0) as fh:
            st = os.statvfs(self.output)
            with suppress(OSError):
                os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize)
            block = b"\0" * (1 << 16)
            with suppress(OSError):
                while True:
                    fh.write(block)
            filled = os.fstat(fh.fileno()).st_size
        free = os.statvfs(self.output).f_bavail * os.statvfs(self.output).f_frsize
        self.result.faults["disk-full"] += 1
        self.note(
            f"OUTPUT filled ({filled / 2**20:.0f} MiB ballast, {free} bytes free) for"
            f" {self.config.disk_full_s:g} s"
        )

        def release() -> None:
            if self.ballast is not None:
                self.ballast.unlink(missing_ok=True)
                self.ballast = None
                self.space_back_at = time.time()
                self.note("OUTPUT has space again")

        self.later(self.config.disk_full_s, release)

    # -- measuring --------------------------------------------------------------------

    def live_left(self) -> int:
        gens = (get_json(f"{self.url}/v1/generations", 10) or {}).get("generations") or []
        if not gens:
            return -1
        files = gens[0].get("files", {})
        return files.get("queued", 0) + files.get("assigned", 0)

    def sample(self) -> None:
        """RSS, lag behind the sequencer and claims so far (every SAMPLE_S)."""
        m = self.manager
        if m is None or not m.alive() or self.manager_down:
            return
        rss = rss_mib(m.pid)
        if rss is not None:
            self.result.rss.append((self.now(), self.life, rss))
        gens = (get_json(f"{self.url}/v1/generations", 10) or {}).get("generations") or []
        if gens and self.sequencer is not None:
            closed = len(self.closed_files())
            done = gens[0].get("files", {}).get("done", 0)
            behind = closed - done
            if behind > self.result.worst_behind:
                self.result.worst_behind = behind
                self.result.worst_behind_at = self.now()
        self.read_ledger()

    def read_claims(self) -> None:
        """The manager's claim histogram (`bcmanager_claim_seconds`), this life's so far."""
        from prometheus_client.parser import text_string_to_metric_families

        if self.manager_down or not (self.manager and self.manager.alive()):
            return
        status, body = http(f"{self.url}/metrics", 10)
        if status != 200:
            return
        buckets = {
            float(sample.labels["le"]): sample.value
            for family in text_string_to_metric_families(body.decode("utf-8", "replace"))
            if family.name == "bcmanager_claim_seconds"
            for sample in family.samples
            if sample.name.endswith("_bucket")
        }
        if buckets:
            self.result.claim_buckets[self.life] = buckets

    def read_ledger(self) -> None:
        """Claims and done times of the live generation, from the ledger (read-only): kept
        across ledger losses, the earliest seen of each."""
        path = self.output / ".bcmanager" / "ledger.sqlite3"
        if not path.exists():
            return
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            try:
                rows = db.execute(
                    "SELECT f.path, j.created, f.done_at FROM files f"
                    " LEFT JOIN jobs j ON j.id = f.job_id WHERE f.gen ="
                    " (SELECT id FROM generations WHERE name = ?)",
                    (LIVE,),
                ).fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            return
        for path_, created, done_at in rows:
            if created is not None:
                was = self.first_claim.get(path_)
                self.first_claim[path_] = created if was is None else min(was, created)
            if done_at is not None:
                was = self.done_at.get(path_)
                self.done_at[path_] = done_at if was is None else min(was, done_at)

    def dashboard(self) -> bool:
        status, body = http(f"{self.url}/", 15)
        if status == 200 and body:
            self.result.dashboard_ok += 1
            return True
        self.result.dashboard_failed += 1
        self.problem(f"the dashboard answered {status} to GET /")
        return False

    def verify(self, generation: str, workers: int = 2, timeout: float = 900) -> dict | None:
        argv = [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "verify",
            "--input",
            str(self.input),
            "--output",
            str(self.output),
            "--generation",
            generation,
            "--workers",
            str(workers),
            "--json",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        try:
            return json.loads(done.stdout)
        except ValueError:
            self.problem(f"bcm verify --generation {generation} exited {done.returncode}:"
                         f" {done.stderr[-1500:]}")  # fmt: skip
            return None

    def mid_check(self) -> None:
        """Cheap checks while the run goes on: the dashboard; no read twice, none unexpected
        (`bcm verify` in a thread of its own, one at a time, so faults keep their times)."""
        if self.manager_down or not (self.manager and self.manager.alive()):
            return
        if self.checker is not None and self.checker.is_alive():
            return
        self.result.checks += 1
        self.dashboard()
        gens = [LIVE] + ([BACKFILL] if self.backfill_added else [])
        self.checker = threading.Thread(target=self.verify_so_far, args=(gens,), daemon=True)
        self.checker.start()

    def verify_so_far(self, gens: list[str]) -> None:
        found = []
        for gen in gens:
            report = self.verify(gen, workers=1)
            if report is None:
                continue
            found.append(f"{gen}: {report['records']} records, {report['missing']} not yet")
            if report["duplicated"] or report["unexpected"] or report["read_errors"]:
                self.problem(
                    f"mid-run verify of {gen}: {report['duplicated']} reads twice,"
                    f" {report['unexpected']} unexpected, read errors {report['read_errors']}"
                )
        self.note(f"check {self.result.checks}: dashboard up; " + "; ".join(found))

    # -- the loop ---------------------------------------------------------------------

    def pump(self, seconds: float, faults: bool = True) -> None:
        """Run timers, supervise, sample and check for `seconds`."""
        deadline = time.time() + seconds
        while True:
            while self.timers and self.timers[0][0] <= time.time():
                _, _, fn = heapq.heappop(self.timers)
                fn()
            self.supervise_manager()
            if self.manager is not None and self.manager.alive():
                self.supervise_engines()
                self.supervise_original()
            self.supervise_controller()
            if faults:
                self.flaky_failures()
                if time.time() >= self.next_sample:
                    self.next_sample = time.time() + SAMPLE_S
                    self.sample()
                if time.time() >= self.next_claims:
                    self.next_claims = time.time() + CLAIMS_EVERY_S
                    self.read_claims()
                if time.time() >= self.next_check:
                    self.next_check = time.time() + self.config.check_every_s
                    self.mid_check()
            left = deadline - time.time()
            if left <= 0:
                return
            time.sleep(min(TICK_S, left))

    def flaky_failures(self) -> None:
        taken = len(list(self.control.glob("fail-next-batch.taken.*")))
        if taken > self.flaky_failures_seen:
            self.flaky_failures_seen = taken
            self.result.faults["basecaller-fail"] += 1
            self.note("the flaky engine's dorado exited 3 on a batch")

    def add_backfill(self) -> None:
        if self.backfill_added:
            return
        if self.manager_down or not (self.manager and self.manager.alive()):
            self.later(1.0, self.add_backfill)
            return
        spec = f"{BACKFILL}={BACKFILL}:kit-name={BARCODE_KIT}"
        argv = [sys.executable, "-m", "bcmanager.cli", "generations", "add", "--manager"]
        done = subprocess.run([*argv, self.url, spec], capture_output=True, text=True)
        if done.returncode != 0:
            self.note(f"bcm generations add failed ({done.stderr.strip()[-200:]}); again in 1 s")
            self.later(1.0, self.add_backfill)
            return
        self.backfill_added = True
        self.note(f"bcm generations add {spec}: {done.stdout.strip()}")

    def run(self) -> SoakResult:
        started = time.monotonic()
        try:
            try:
                self.setup()
                self.drive()
                self.finish()
            except Exception as exc:  # reported with the seed rather than lost in a traceback
                import traceback

                self.problem(f"driver error: {type(exc).__name__}: {exc}")
                self.note(traceback.format_exc())
            finally:
                self.shut_down()
            if not any(p.startswith("driver error") for p in self.result.problems):
                self.check_output()
                self.check_measures()
        finally:
            if self.mounted and (self.result.problems or self.keep_output):
                kept = self.work / "output.kept"
                shutil.copytree(self.output, kept, symlinks=True, dirs_exist_ok=True)
                self.note(f"OUTPUT (a tmpfs, unmounted now) copied to {kept}")
            self.unmount_output()
            self.result.seconds = time.monotonic() - started
        return self.result

    def setup(self) -> None:
        for folder in (self.input, self.logs, self.control):
            folder.mkdir(parents=True, exist_ok=True)
        self.mount_output()
        use_original = self.setup_original()
        self.port = PORT if use_original else free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.note(
            f"seed {self.config.seed}: {self.config.flowcells} flow cells x"
            f" {self.config.files_per_flowcell} files over {self.config.minutes:g} min,"
            f" {self.config.engines} simulated engines + flaky"
            + (" + original" if use_original else "")
            + (f" + {self.config.slurm_engines} Slurm jobs" if self.config.slurm_engines else "")
            + f", manager on port {self.port}"
        )
        for fault in self.result.plan:
            self.note(f"plan: {fault.describe()}")
        self.start_manager()
        if not self.wait_manager():
            raise RuntimeError(
                f"the manager did not start:\n{self.manager and self.manager.log_tail()}"
            )
        for spec in self.fleet():
            self.start_engine(spec)
        if use_original:
            self.start_original()
        if self.setup_slurm():
            self.start_controller()
        stamp = datetime.now().strftime("%Y%m%d_%H%M")
        self.t0 = time.time()
        self.start_sequencer(plan_cells(self.config, stamp))
        self.next_sample = time.time() + SAMPLE_S
        self.next_check = time.time() + self.config.check_every_s
        self.later(self.config.duration_s * self.config.backfill_at, self.add_backfill)

    def drive(self) -> None:
        for fault in self.result.plan:
            wait = self.t0 + fault.at_s - time.time()
            if wait > 0:
                self.pump(wait)
            while self.manager_down:  # a manager fault waits for the last restart
                self.pump(0.2)
            self.inject(fault)
        assert self.sequencer is not None
        while self.sequencer.alive():
            self.pump(1.0)
        if self.sequencer.popen.returncode != 0:
            raise RuntimeError(f"the sequencer failed:\n{self.sequencer.log_tail()}")
        self.note(f"the sequencer ended: {len(self.closed_files())} pod5 files")

    def finish(self) -> None:
        """Every timer run (thawed, space back, restarted), the failpoint disarmed, then
        wait until every generation has every file done."""
        while self.timers or self.manager_down:
            self.pump(0.5)
        self.disarm()
        self.add_backfill()
        while not self.backfill_added:
            self.pump(0.5)
        total = len(self.closed_files())
        self.result.files = total
        deadline = time.time() + self.config.finish_timeout_s
        last = None
        idle_since = None  # nothing queued or running, but files the manager never queued
        while time.time() < deadline:
            self.pump(1.0)
            gens = (get_json(f"{self.url}/v1/generations", 10) or {}).get("generations") or []
            byname = {g["name"]: g.get("files", {}) for g in gens}
            last = byname
            idle = all(
                name in byname
                and not byname[name].get("queued")
                and not byname[name].get("assigned")
                for name in (LIVE, BACKFILL)
            )
            ended = {
                name: byname[name].get("done", 0) + byname[name].get("quarantined", 0)
                for name in byname
            }
            if idle and all(ended.get(name) == total for name in (LIVE, BACKFILL)):
                break
            idle_since = (idle_since or time.time()) if idle else None
            if idle_since is not None and time.time() - idle_since > 60:  # 12 rescans
                self.problem(
                    f"complete pod5 files never queued: the sequencer closed {total}, the"
                    f" manager knows {ended} per generation and has been idle for 60 s:"
                    f" {self.unqueued()[:3]}"
                )
                return
        else:
            self.problem(f"the run did not finish in {self.config.finish_timeout_s:g} s: {last}")
            return
        self.note(f"every generation finished: {last}")
        for name, files in (last or {}).items():
            if files.get("quarantined"):
                self.problem(f"generation {name}: {files['quarantined']} file(s) quarantined")
        self.sample()
        self.read_claims()
        self.dashboard()
        metrics = http(f"{self.url}/metrics", 15)
        if metrics[0] != 200:
            self.problem(f"GET /metrics answered {metrics[0]}")

    def unqueued(self) -> list[str]:
        """Closed pod5 files the ledger does not list for the live generation."""
        path = self.output / ".bcmanager" / "ledger.sqlite3"
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                known = {p for (p,) in db.execute("SELECT path FROM files")}
            finally:
                db.close()
        except sqlite3.Error as exc:
            return [f"(ledger unreadable: {exc})"]
        return sorted(set(self.closed_files()) - known)

    def shut_down(self) -> None:
        if self.checker is not None:
            self.checker.join(timeout=600)
        if self.sequencer is not None and self.sequencer.alive():
            self.sequencer.kill_tree()
        if self.original is not None:
            self.original.kill_tree()
        self.stop_slurm()
        for proc in self.engines:
            proc.stop()
        if self.manager is not None and self.manager.alive():
            self.manager.signal(signal.SIGTERM)
            try:
                self.manager.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.problem("the manager did not stop within 30 s of SIGTERM")
                self.manager.kill_tree()
        if self.ballast is not None:
            self.ballast.unlink(missing_ok=True)

    # -- the end checks ---------------------------------------------------------------

    def check_measures(self) -> None:
        """The manager's memory stays flat and the live work keeps up with the sequencer."""
        c, r = self.config, self.result
        first, last = rss_ends(r.rss, c)
        if first and last and last[2] > c.max_rss_growth * first[2]:
            self.problem(
                f"manager RSS grew from {first[2]:.0f} MiB (at {first[0]:.0f} s) to"
                f" {last[2]:.0f} MiB at the end: over {c.max_rss_growth:g} x"
            )
        p99, claims = claim_p99(r.claim_buckets)
        if claims and p99 > c.max_claim_p99_s:
            self.problem(
                f"claim p99 over {c.max_claim_p99_s:g} s: {p99:g} s (of {claims} hand-outs)"
            )
        if r.worst_behind > c.max_behind:
            self.problem(
                f"the live generation fell {r.worst_behind} files behind the sequencer (at"
                f" {r.worst_behind_at:.0f} s); at most {c.max_behind} (what it closes in"
                f" {c.max_lag_s:g} s)"
            )

    def check_output(self) -> None:
        from tests.helpers import read_files_under, read_strictly

        self.read_ledger()
        closed = self.closed_files()
        expected_reads = sum(e["reads"] for e in closed.values())
        self.result.reads = expected_reads
        self.result.files = len(closed)
        for gen in (LIVE, BACKFILL):
            report = self.verify(gen)
            if report is None:
                continue
            self.result.verify[gen] = report
            if not report["ok"]:
                self.problem(
                    f"bcm verify --generation {gen}: missing {report['missing']}, twice"
                    f" {report['duplicated']}, unexpected {report['unexpected']}, unreadable"
                    f" {report['unreadable']}, summary problems {report['summary_problems']},"
                    f" read errors {list(report['read_errors'])[:3]}"
                )
            if report["input_reads"] != expected_reads or report["pod5_files"] != len(closed):
                self.problem(
                    f"{gen}: bcm verify read {report['input_reads']} reads in"
                    f" {report['pod5_files']} pod5; the sequencer wrote {expected_reads} in"
                    f" {len(closed)}"
                )
            tree = self.output / "generations" / gen
            records, files, errors = 0, 0, []
            for path in read_files_under(tree):
                files += 1
                try:
                    records += read_strictly(path)
                except Exception as exc:  # pysam: OSError, ValueError; gzip: EOFError
                    errors.append(f"{path.relative_to(self.output)}: {type(exc).__name__}: {exc}")
            self.result.strict[gen] = (files, records)
            if errors:
                self.problem(f"{gen}: {len(errors)} output(s) not whole: {errors[:3]}")
            if records != report["records"]:
                self.problem(f"{gen}: pysam read {records} records, bcm verify {report['records']}")
        left = [p for p in self.input.rglob("ASSIGNED_*")]
        if left:
            self.problem(f"job folders left in INPUT: {[str(p) for p in left[:3]]}")
        if self.result.faults["truncated-pod5 asked"]:
            truncated = [e for e in read_manifest(self.manifest) if e.get("event") == "truncated"]
            self.result.faults["truncated-pod5"] = len(truncated)
        # pickup (close -> first claim) and close -> done, live generation
        for path, entry in closed.items():
            if path in self.first_claim:
                self.result.pickup_s.append(self.first_claim[path] - entry["t"])
            if path in self.done_at:
                self.result.close_to_done_s.append(self.done_at[path] - entry["t"])


def unmount_under(folder: Path) -> None:
    """Unmount what an earlier soak left mounted below `folder` (its OUTPUT tmpfs)."""
    root = str(folder.resolve())
    with open("/proc/mounts", encoding="utf-8") as fh:
        points = [line.split()[1] for line in fh if len(line.split()) > 1]
    for point in sorted(points, reverse=True):
        if point == root or point.startswith(root + "/"):
            subprocess.run(["umount", "-l", point], capture_output=True)


def run_soak(config: SoakConfig, workdir: Path, keep_output: bool = False) -> SoakResult:
    """One soak in `workdir` (emptied first); `keep_output` copies a tmpfs OUTPUT aside
    before it is unmounted (always done when a check failed)."""
    if workdir.exists():
        unmount_under(workdir)
    remove_tree(workdir)
    workdir.mkdir(parents=True)
    return Soak(config, workdir, keep_output).run()


# -- the report ---------------------------------------------------------------------------


def fault_rows(result: SoakResult) -> list[list[str]]:
    return [[kind, str(n)] for kind, n in sorted(result.faults.items())]


def claim_p99(lives: dict[int, dict[float, float]]) -> tuple[float, int]:
    """(the bucket bound under which 99 % of the hand-outs took, hand-outs): every manager
    life's histogram summed (each as last read, up to CLAIMS_EVERY_S before its end)."""
    total: Counter[float] = Counter()
    for buckets in lives.values():
        total.update(buckets)
    count = int(total.get(math.inf, 0))
    if not count:
        return math.nan, 0
    bound = next(le for le in sorted(total) if total[le] >= 0.99 * count)
    return bound, count


def rss_ends(
    rss: list[tuple[float, int, float]], c: SoakConfig
) -> tuple[tuple[float, int, float] | None, tuple[float, int, float] | None]:
    """The manager's first RSS sample once settled (a minute in, or a quarter of a short
    run) and its last."""
    settled = [r for r in rss if r[0] >= min(60.0, c.duration_s / 4)] or rss
    return (settled[0], rss[-1]) if rss else (None, None)


def summary_rows(result: SoakResult) -> list[list[str]]:
    c = result.config
    rss = result.rss
    first, last = rss_ends(rss, c)
    peak = max((r[2] for r in rss), default=float("nan"))
    v = result.verify
    rows = [
        ["seed", str(c.seed)],
        ["sequencer", f"{c.minutes:g} min, {c.flowcells} flow cells, {result.files} pod5 files"],
        ["reads written", f"{result.reads:,}"],
        ["wall time", f"{result.seconds:.0f} s"],
        ["faults injected", str(len(result.plan))],
        ["manager lives", str(result.manager_lives)],
        ["engines started (restarts included)", str(result.engines_started)],
    ]
    for gen in (LIVE, BACKFILL):
        if gen not in v:
            rows.append([f"bcm verify {gen}", "not run"])
            continue
        r = v[gen]
        rows.append(
            [
                f"bcm verify {gen}",
                f"{'ok' if r['ok'] else 'FAILED'}: {r['input_reads']:,} reads, missing"
                f" {r['missing']}, twice {r['duplicated']}, {r['summary_rows']:,} summary rows,"
                f" {r['summary_problems']} summary problems",
            ]
        )
        files, records = result.strict.get(gen, (0, 0))
        rows.append([f"outputs {gen} (pysam, strict)", f"{files} files, {records:,} records"])
    rows += [
        [
            "manager RSS start / end / peak",
            f"{fmt(first[2]) if first else '-'} / {fmt(last[2]) if last else '-'}"
            f" / {fmt(peak)} MiB (lives {first[1] if first else '-'} and"
            f" {last[1] if last else '-'})",
        ],
        [
            "pickup latency (close -> claim), live: p50 / p99 / max",
            f"{fmt(percentile(result.pickup_s, 0.5), 2)} / {fmt(percentile(result.pickup_s, 0.99), 2)}"
            f" / {fmt(max(result.pickup_s, default=float('nan')), 2)} s"
            f" ({len(result.pickup_s)} files)",
        ],
        [
            "claim (a batch handed out, long poll excluded): p99",
            claim_row(result),
        ],
        [
            "close -> basecalled, live: p50 / p99 / max",
            f"{fmt(percentile(result.close_to_done_s, 0.5))} /"
            f" {fmt(percentile(result.close_to_done_s, 0.99))} /"
            f" {fmt(max(result.close_to_done_s, default=float('nan')))} s",
        ],
        [
            "worst lag behind the sequencer (live)",
            f"{result.worst_behind} files closed but not basecalled, at"
            f" {result.worst_behind_at:.0f} s (at most {c.max_behind})",
        ],
        [
            "dashboard GET /",
            f"{result.dashboard_ok} x 200, {result.dashboard_failed} failed",
        ],
        ["mid-run checks", str(result.checks)],
        [
            "Slurm engines",
            f"{result.slurm or 'not asked for'}; jobs by state at the end:"
            f" {dict(result.slurm_jobs) or '-'}",
        ],
        [
            "original engine",
            f"{result.original or 'not asked for'}; started {result.original_starts} x",
        ],
        ["result", "ok" if result.ok else f"FAILED: {len(result.problems)} problem(s)"],
    ]
    return rows


def claim_row(result: SoakResult) -> str:
    p99, claims = claim_p99(result.claim_buckets)
    if not claims:
        return "not read"
    return (
        f"<= {p99:g} s ({claims:,} hand-outs over {len(result.claim_buckets)} manager lives;"
        f" at most {result.config.max_claim_p99_s:g} s)"
    )


def write_doc(result: SoakResult, args: argparse.Namespace) -> None:
    c = result.config
    m = machine()
    body = [
        section_header(
            f"Soak, seed {c.seed}: a PromethION's run compressed, a fault a minute"
            " (`bench/soak.py`)"
        ),
        "",
        f"- seed {c.seed}; the fault plan is `random.Random(seed)`'s (kinds and moments), the"
        " process timing is the machine's. Replay: the same command.",
        f"- run: {c.flowcells} flow cells in MinKNOW's layout (`pod5_pass`/`pod5_fail`; one"
        f" flow cell in {c.barcoded_every} barcoded, with barcode folders; one in"
        f" {c.large_every} writes one file 8x larger), one pod5 per flow cell every"
        f" {c.interval_s:g} s for {c.minutes:g} min, {c.reads} reads of ~{c.samples} samples"
        " per file (+-50 %); generations"
        f" `{LIVE}` (live) and `{BACKFILL}` (backfill, `kit-name={BARCODE_KIT}`, added at"
        f" {c.backfill_at:.0%} of the run by `bcm generations add`)",
        f"- fleet: {c.engines} `bcm engine --basecaller simulated` at"
        f" {', '.join(f'{c.speed * s / 1000:.0f}k' for s, _ in FLEET[: c.engines])} samples/s"
        f" (hac; fast 3x, sup 0.25x), start-ups"
        f" {', '.join(f'{t:g}' for _, t in FLEET[: c.engines])} s; one `--basecaller dorado`"
        " engine whose `dorado` (the test stand-in) fails a batch when told; original engine:"
        f" {result.original or 'not asked for'}; these as plain processes. Slurm:"
        f" {result.slurm or 'not asked for'}. Manager `--lease"
        f" {c.lease_s:g} --target-batch {c.target_batch_s:g} --max-attempts {c.max_attempts}"
        f" --live-window {c.live_window_s:g}`",
        f"- faults: one every {c.fault_every_s:g} s at a seeded moment; full disk:"
        f" {result.disk_full or 'not asked for'}",
        f"- {m.cores} cores for everything: the sequencer, the manager, every engine and"
        " basecaller, and the checks",
        "",
        markdown_table(["fault", "count"], fault_rows(result)),
        "",
        markdown_table(["measure", "value"], summary_rows(result)),
    ]
    if result.notes:
        body += ["", *[f"- skipped: {n}" for n in result.notes]]
    if result.problems:
        body += ["", *[f"- PROBLEM: {p}" for p in result.problems]]
    update_doc(f"soak-seed-{c.seed}", "\n".join(body))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = SoakConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=d.minutes, help="how long the sequencer writes")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--flowcells", type=int, default=d.flowcells)
    p.add_argument(
        "--interval", type=float, default=d.interval_s, help="s between a flow cell's files"
    )
    p.add_argument("--reads", type=int, default=d.reads, help="mean reads per pod5")
    p.add_argument("--samples", type=int, default=d.samples, help="mean samples per read")
    p.add_argument("--engines", type=int, default=d.engines, help="simulated engines (<= 7 speeds)")
    p.add_argument("--speed", type=float, default=d.speed, help="the fastest engine's samples/s")
    p.add_argument("--lease", type=float, default=d.lease_s)
    p.add_argument("--fault-every", type=float, default=d.fault_every_s)
    p.add_argument(
        "--kinds", default=",".join(KINDS), help=f"fault kinds, comma-separated [{','.join(KINDS)}]"
    )
    p.add_argument("--check-every", type=float, default=d.check_every_s)
    p.add_argument("--truncate-hold", type=float, default=d.truncate_hold_s)
    p.add_argument("--disk-full-s", type=float, default=d.disk_full_s)
    p.add_argument("--no-original", action="store_true", help="leave the original engine out")
    p.add_argument(
        "--slurm-engines",
        type=int,
        default=d.slurm_engines,
        help="engine jobs `bcm slurm controller` may keep on a real Slurm (0: no Slurm)",
    )
    p.add_argument("--finish-timeout", type=float, default=d.finish_timeout_s)
    p.add_argument("--workdir", type=Path, default=WORK)
    p.add_argument("--keep", action="store_true", help="keep the work folder when all passed")
    p.add_argument("--no-doc", action="store_true", help="write nothing to docs/benchmarks.md")
    p.add_argument("--doc-anyway", action="store_true", help="write the doc even when it failed")
    p.add_argument("--sequencer", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sequencer is not None:
        return sequencer_main(args.sequencer)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise SystemExit(f"unknown fault kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    config = SoakConfig(
        minutes=args.minutes,
        seed=args.seed,
        flowcells=args.flowcells,
        interval_s=args.interval,
        reads=args.reads,
        samples=args.samples,
        engines=args.engines,
        speed=args.speed,
        lease_s=args.lease,
        fault_every_s=args.fault_every,
        kinds=kinds,
        check_every_s=args.check_every,
        truncate_hold_s=args.truncate_hold,
        disk_full_s=args.disk_full_s,
        original=not args.no_original,
        slurm_engines=args.slurm_engines,
        finish_timeout_s=args.finish_timeout,
    )
    stop_on_sigterm()
    print(f"soak: seed {config.seed}, {config.minutes:g} min, work in {args.workdir}", flush=True)
    print(f"started {utc_now()}", flush=True)
    result = run_soak(config, args.workdir, keep_output=args.keep)
    print_table(f"faults (seed {config.seed})", ["fault", "count"], fault_rows(result))
    print_table(f"soak (seed {config.seed})", ["measure", "value"], summary_rows(result))
    for n in result.notes:
        print(f"skipped: {n}")
    for p in result.problems:
        print(f"PROBLEM: {p}")
    if not args.no_doc and (result.ok or args.doc_anyway):
        write_doc(result, args)
        print("wrote the soak section of docs/benchmarks.md")
    if result.ok and not args.keep:
        remove_tree(args.workdir)
    else:
        print(f"work folder kept: {args.workdir}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
