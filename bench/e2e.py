"""Whole runs: makespan against the ideal, and how long an engine waits between batches.

bcmanager: a `bcm manager` process and 2 or 4 `bcm engine --samples-per-s S`
processes (the simulated basecaller: it reads the real pod5 files, writes one FASTQ
record per read and takes total samples / S seconds, counted from its own start).
The engines start first and wait in long-poll claims; then a folder of N real pod5
files (hard links of a few distinct files, written with the pod5 library, older than a
minute so they are a backlog) is renamed into INPUT, and the clock starts.

- makespan: from that rename to the last job's merge (the manager's event log).
- ideal: sum over files of (samples / S) / engines: the work, perfectly shared.
- DONE -> next batch: from the manager taking an engine's DONE report (the job's
  `assigned -> done` event, or `-> merging` for a merge that waits) to that engine starting its next batch (its JSON log
  line `job N: k file(s)`, written just before it starts the basecaller), per engine.
- basecaller idle: from one basecaller's exit (the mtime of its `basecaller.log`, whose
  last line it writes as it ends) to the engine's next batch start: the GPU's idle time.

Side by side, a small run (2 engines x 8 files, batches of 2) through the original
BC-pipelines manager (`BCManagement.py`) with two original engines (`BCProcessors.py`),
unmodified, whose supervisor script is a stand-in that runs the same simulated
basecaller and notes its start and end; and the same small run through bcmanager
(engines asking `--batch-size 2`). Both small runs start their engines at t0 with the
files already known to the manager. For the original, DONE is the Werkzeug access-log
line of `/completed` (whole seconds).

    python bench/e2e.py [--engines 2,4] [--files 200] [--ideal 40] [--code-at HEAD]

Start-up mode (`--startup S`, issue 12): a basecaller that pays Dorado's start-up S before
every batch, time scaled by `--scale`; the before and after commits side by side, each
engine's GPU busy share and the makespan against S + total samples / the fleet's rate
(section `e2e-startup`; see `startup_main`). Each run goes in two modes (`--modes`):
`together` (every engine waits in a claim, then the backlog arrives: t0) and `arrival`
(the backlog is queued first: t0; then the engines start one by one, as Slurm starts
them when GPU nodes come free, gaps uniform in [0, `--arrival-gap`] Dorado seconds from a
fixed seed per engine count; the ideal then counts each engine from its arrival):

    python bench/e2e.py --startup 10 --target 60 --scale 0.1 --engines 4,8 --speeds mixed \
        --samples 40000

(reads of ~40,000 samples, a 3 kb read: with the default ~4,000 a pod5's fixed overhead
is a sixth of a small file, so its bytes say its samples to +-7 %, and the manager counts
pod5 bytes.) While changing the scheduler, `--only after --after worktree` runs this checkout's code
alone (uncommitted changes too, nothing written to docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from _common import (
    CODE,
    ORIGINAL_SOFTWARE,
    ORIGINAL_TEMPLATE,
    PORT,
    REPO,
    EventLog,
    JobTimes,
    Server,
    bcm_jobs,
    check_all_done,
    fmt,
    free_port,
    http_get_json,
    kill_tree,
    link_backlog,
    markdown_table,
    percentile,
    print_table,
    remove_tree,
    run_backlog,
    section_header,
    spawn,
    start_bcm_engine,
    start_bcmanager,
    start_original,
    start_when_port_free,
    stop_on_sigterm,
    update_doc,
    use_code_at,
    wait_files_done,
    wait_for_quiet,
    wait_until,
    write_pod5_sources,
)

TARGET_MAKESPAN = 1.05
TARGET_GAP_P99_MS = 50.0
CROWD_S = 0.5
RUN_TIMEOUT_S = 900.0
LEASE_S = 90.0  # the manager's default lease; heartbeats come every third of it
OTHER_BENCHES = r"bench/(protocol|startup)\.py"


@dataclass
class Gaps:
    """Per-engine pauses between batches, in seconds."""

    done_to_next: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)
    # bcmanager only: idle = exit_to_done + done_to_claim + claim_to_start
    exit_to_done: list[float] = field(default_factory=list)
    done_to_claim: list[float] = field(default_factory=list)
    claim_to_start: list[float] = field(default_factory=list)
    slow: int = 0  # DONE -> next batch over the target
    slow_crowded: int = 0  # ... of which another engine reported DONE within CROWD_S


@dataclass
class RunResult:
    system: str
    engines: int
    files: int
    batch: str
    samples_per_s: float
    ideal_s: float
    makespan_s: float
    jobs: int
    gaps: Gaps
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.ideal_s


# -- analysis ---------------------------------------------------------------------------


def gaps_between(jobs: list[JobTimes]) -> Gaps:
    """DONE -> next start and basecaller end -> next start, per engine, in order."""
    gaps = Gaps()
    by_engine: dict[str, list[JobTimes]] = {}
    for job in jobs:
        by_engine.setdefault(job.engine, []).append(job)
    for mine in by_engine.values():
        mine.sort(key=lambda j: j.start)
        for prev, nxt in pairwise(mine):
            gaps.done_to_next.append(nxt.start - prev.done)
            if nxt.start - prev.done > TARGET_GAP_P99_MS / 1000:
                gaps.slow += 1
                gaps.slow_crowded += crowded(prev, jobs)
            if prev.basecaller_end is not None:
                gaps.idle.append(nxt.start - prev.basecaller_end)
            if nxt.created is not None and prev.basecaller_end is not None:
                gaps.exit_to_done.append(prev.done - prev.basecaller_end)
                gaps.done_to_claim.append(nxt.created - prev.done)
                gaps.claim_to_start.append(nxt.start - nxt.created)
    return gaps


def crowded(job: JobTimes, jobs: list[JobTimes]) -> bool:
    """Another engine reported DONE within CROWD_S of this job's DONE."""
    return any(j.engine != job.engine and abs(j.done - job.done) <= CROWD_S for j in jobs)


def gap_cell(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
    return f"{fmt(p50, 1)} / {fmt(p99, 1)} (n={len(values)})"


# -- bcmanager runs -----------------------------------------------------------------------


def run_bcmanager_backlog(
    work: Path, sources: list[tuple[Path, int]], n_files: int, n_engines: int, speed: float
) -> RunResult:
    """Engines wait in long-poll claims; the backlog folder is renamed into INPUT at t0."""
    engines = {f"gpu{k + 1}": ["--samples-per-s", repr(speed)] for k in range(n_engines)}
    run = run_backlog(work, sources, n_files, engines)
    return RunResult(
        "bcmanager",
        n_engines,
        n_files,
        "adaptive",
        speed,
        run.total_samples / speed / n_engines,
        run.makespan_s,
        len(run.jobs),
        gaps_between(run.jobs),
    )


def run_bcmanager_small(
    work: Path, sources: list[tuple[Path, int]], n_files: int, batch: int, speed: float
) -> RunResult:
    """The small side-by-side run: files known first, both engines started at t0."""
    remove_tree(work)
    total_samples = link_backlog(work / "input", sources, n_files)
    port = free_port()
    manager = start_bcmanager(
        work / "input", work / "output", work / "logs" / "manager.log", port=port, lease_s=90
    )
    started = [manager]
    try:
        wait_until(lambda: queued(port) == n_files, manager, 60, what="queued")
        events = EventLog(port)
        opts = ["--samples-per-s", repr(speed), "--batch-size", str(batch)]
        logs = [work / "logs" / f"engine-gpu{k + 1}.log" for k in range(2)]
        t0 = time.time()
        for k, log in enumerate(logs):
            started.append(start_bcm_engine(f"gpu{k + 1}", port, log, opts))
        wait_files_done(events, n_files, started)
        check_all_done(work / "output", n_files, port)
        jobs = bcm_jobs(events, logs, work / "output")
        finished = max(events.job_times("done").values())
    finally:
        for s in reversed(started):
            kill_tree(s)
    return RunResult(
        "bcmanager",
        2,
        n_files,
        f"{batch} (engines ask)",
        speed,
        total_samples / speed / 2,
        finished - t0,
        len(jobs),
        gaps_between(jobs),
    )


def queued(port: int) -> int | None:
    return (http_get_json("/v1/status", port) or {}).get("files", {}).get("queued")


# -- the original BC-pipelines system -------------------------------------------------------

STAND_IN = """#!/bin/bash
# Stand-in for BC_scripts/supervisor.sh (INPUT_DIR OUTPUT_DIR MODEL): the simulated
# basecaller, timed. Written by bench/e2e.py.
start=$(date +%s.%N)
{env}{python} -m bcmanager.basecallers.simulated "$1" "$2" --samples-per-s {speed}
rc=$?
end=$(date +%s.%N)
echo "$(basename "$1") $start $end $rc" >> {timings}
exit $rc
"""

_COMPLETED = re.compile(
    r"\[(\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d)\] \"GET /completed\?job_id=(\d+)&job_state=(\w+)"
)


def write_stand_in(path: Path, timings: Path, speed: float) -> Path:
    env = f"PYTHONPATH={CODE.src} " if CODE.src is not None else ""
    path.write_text(
        STAND_IN.format(env=env, python=sys.executable, speed=repr(speed), timings=timings),
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


def engine_config(work: Path, script: Path, batch: int) -> Path:
    """The BC-pipelines JSON for two engines on this machine (node 0 hosts the manager)."""
    config = json.loads(ORIGINAL_TEMPLATE.read_text(encoding="utf-8"))
    config["Basecalling"]["input_dir"] = str(work / "input")
    config["Basecalling"]["output_dir"] = str(work / "output")
    config["Basecalling"]["supervisor_script_path"] = str(script)
    res = config["Resources"]
    res["index_host"] = "0"
    res["nodes_list"] = ["orig1", "orig2"]
    res["nodes_ip"] = ["127.0.0.1", "127.0.0.1"]
    res["batch_size_list"] = [str(batch), str(batch)]
    path = work / "engine-config.json"
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return path


def original_done(output: Path, n: int) -> bool:
    merged = [p for p in (output / "pass").iterdir() if p.name.startswith("job_id_")]
    pending = [p for p in output.iterdir() if p.name.startswith("TMPOUTPUT_")]
    return len(merged) >= n and not pending


def original_jobs(timings: Path, manager_log: Path, batch: int) -> list[JobTimes]:
    """Jobs of the original run: the stand-in's start/end, the access log's /completed."""
    completed: dict[str, float] = {}
    for line in manager_log.read_text(errors="replace").splitlines():
        match = _COMPLETED.search(line)
        if match and match.group(3) == "DONE":
            completed[match.group(2)] = time.mktime(
                time.strptime(match.group(1), "%d/%b/%Y %H:%M:%S")
            )
    jobs = []
    for line in timings.read_text().splitlines():
        folder, start, end, _rc = line.split()
        _, job_id, engine = folder.split("_", 2)
        jobs.append(
            JobTimes(int(job_id), engine, batch, float(start), completed[job_id], float(end))
        )
    return jobs


def run_original(
    work: Path, sources: list[tuple[Path, int]], n_files: int, batch: int, speed: float
) -> RunResult:
    remove_tree(work)
    total_samples = link_backlog(work / "input", sources, n_files)
    (work / "output").mkdir(parents=True)
    (work / "logs").mkdir()
    timings = work / "timings.txt"
    script = write_stand_in(work / "supervisor-stand-in.sh", timings, speed)
    config = engine_config(work, script, batch)
    manager, _ = start_when_port_free(
        lambda: start_original(work / "input", work / "output", work / "logs" / "original.log"),
        lambda s: wait_until(lambda: http_get_json("/heartbeat", PORT), s, 60, what="up"),
    )
    engines: list[Server] = []
    try:
        t0 = time.time()
        engines = [
            spawn(
                f"orig{k + 1}",
                [sys.executable, "BCProcessors.py", str(config), str(k)],
                work / "logs" / f"engine-orig{k + 1}.log",
                cwd=ORIGINAL_SOFTWARE,
            )
            for k in range(2)
        ]
        wait_until(
            lambda: original_done(work / "output", n_files),
            manager,
            RUN_TIMEOUT_S,
            interval=0.1,
            what="done",
        )
        finished = time.time()
        time.sleep(1.5)  # let the access log line of the last /completed be written
        jobs = original_jobs(timings, manager.log, batch)
    finally:
        for s in [*engines, manager]:
            kill_tree(s)
    return RunResult(
        "original",
        2,
        n_files,
        f"{batch} (engines ask)",
        speed,
        total_samples / speed / 2,
        finished - t0,
        len(jobs),
        gaps_between(jobs),
        "engines started at t0; DONE from the access log (1 s)",
    )


# -- report -------------------------------------------------------------------------------

HEADERS = [
    "system",
    "engines",
    "files",
    "batch",
    "samples/s per engine",
    "jobs",
    "ideal s",
    "makespan s",
    "makespan / ideal",
    "DONE -> next batch ms p50 / p99",
    "basecaller idle between batches ms p50 / p99",
]
SPLIT_HEADERS = [
    "system",
    "engines",
    "files",
    "basecaller's last write -> DONE taken",
    "DONE taken -> next claim answered",
    "claim answered -> engine starts the basecaller",
    f"DONE -> next batch over {TARGET_GAP_P99_MS:g} ms (with another engine's DONE"
    f" within {CROWD_S:g} s)",
]


def rows(results: list[RunResult]) -> list[list[str]]:
    return [
        [
            r.system,
            str(r.engines),
            str(r.files),
            r.batch,
            f"{r.samples_per_s:,.0f}",
            str(r.jobs),
            fmt(r.ideal_s, 1),
            fmt(r.makespan_s, 1),
            fmt(r.ratio, 3),
            gap_cell(r.gaps.done_to_next),
            gap_cell(r.gaps.idle),
        ]
        for r in results
    ]


def split_rows(results: list[RunResult]) -> list[list[str]]:
    return [
        [
            r.system,
            str(r.engines),
            str(r.files),
            gap_cell(r.gaps.exit_to_done),
            gap_cell(r.gaps.done_to_claim),
            gap_cell(r.gaps.claim_to_start),
            f"{r.gaps.slow} of {len(r.gaps.done_to_next)} ({r.gaps.slow_crowded})",
        ]
        for r in results
        if r.gaps.done_to_claim
    ]


def target_rows(results: list[RunResult]) -> list[list[str]]:
    out = []
    big = [r for r in results if r.system == "bcmanager" and r.batch == "adaptive"]
    for r in big:
        out.append(
            [
                f"makespan, {r.engines} engines x {r.files} files",
                f"{r.ratio:.3f} x ideal",
                f"<= {TARGET_MAKESPAN} x ideal",
                "met" if r.ratio <= TARGET_MAKESPAN else "NOT met",
            ]
        )
    gaps = [g for r in big for g in r.gaps.done_to_next]
    if gaps:
        p99 = percentile(gaps, 0.99) * 1000
        out.append(
            [
                f"DONE -> next batch p99 (all {len(gaps)} gaps of these runs)",
                f"{p99:.1f} ms",
                f"<= {TARGET_GAP_P99_MS:g} ms",
                "met" if p99 <= TARGET_GAP_P99_MS else "NOT met",
            ]
        )
    return out


def report(results: list[RunResult], setup: str) -> str:
    table, targets = rows(results), target_rows(results)
    print_table("whole runs", HEADERS, table)
    t_headers = ["target", "measured", "wanted", "result"]
    if targets:
        print_table("targets", t_headers, targets)
    parts = [
        section_header("Whole runs: makespan and the wait between batches (`bench/e2e.py`)"),
        setup,
        "- makespan: bcmanager's big runs from the rename of the backlog folder into INPUT"
        " (engines already waiting in long-poll claims) to the last merge in the manager's"
        " event log; the small runs from starting the engines (files already known) to the"
        " last merge (bcmanager) or to the last FASTQ merged into OUTPUT/pass (original,"
        " polled every 0.1 s). ideal = sum over files of (samples / S) / engines.",
        "- DONE -> next batch: from the manager taking an engine's DONE report to that"
        " engine starting its next batch (bcmanager: `assigned -> done` event, or"
        " `-> merging` for a merge that waits, to the engine's `job N` log line; original: the `/completed` access-log line, whole"
        " seconds, to the stand-in supervisor's start). basecaller idle: from a basecaller's"
        " end (bcmanager: its last write; original: the stand-in's end) to the same"
        " engine's next basecaller start.",
        "",
        markdown_table(HEADERS, table),
    ]
    split = split_rows(results)
    if split:
        print_table("bcmanager: where the time between batches goes (ms)", SPLIT_HEADERS, split)
        parts += [
            "",
            "Where bcmanager's time between two batches of one engine goes (ms, p50 / p99):"
            " the basecaller's last write (mtime of its `basecaller.log`) -> the manager takes"
            " DONE (basecaller exit, the engine noticing it, the report) -> the manager answers"
            " the engine's next claim (merge, answer, claim) -> the engine starts the next"
            " basecaller (answer received, logged).",
            "",
            markdown_table(SPLIT_HEADERS, split),
        ]
    if targets:
        parts += ["", markdown_table(t_headers, targets)]
    return "\n".join(parts)


# -- start-up mode: a basecaller that pays Dorado's start-up cost at every batch -----------

SPEED_MIX = (1.0, 1.5, 2.0, 3.0)  # engine i runs at SPEED_MIX[i % 4] x the slowest
TARGET_BUSY = 0.97
TARGET_STARTUP_MAKESPAN = 1.03
MODES = ("together", "arrival")  # engines all waiting at t0 | arriving one by one after t0
ARRIVAL_ORDERS = ("given", "slow-first", "fast-first")
BEFORE_REV = "234f5e5"
AFTER_REV = "e116cae"
WORKTREE = "worktree"  # --after worktree: this checkout's src/, uncommitted changes too

# The before code's simulated basecaller has no --startup-s. This wrapper gives it the
# after code's cost shape exactly: nothing happens until `startup` after the process
# start (Python's start-up included, as in the after code), then the basecaller runs with
# its clock started there, so it basecalls for samples / rate after the start-up.
# (`sh -c 'sleep S; python -m ...'` would add Python's own start to S, and with `exec`
# the sleep would be counted inside samples / rate.)
STARTUP_WRAPPER = '''"""Written by bench/e2e.py: the simulated basecaller with a fixed start-up cost."""
import sys
import time

from bcmanager.basecallers import simulated

argv = sys.argv[1:]
i = argv.index("--startup-s")
startup = float(argv[i + 1])
del argv[i : i + 2]
remaining = startup - simulated.seconds_since_process_start()
if remaining > 0:
    time.sleep(remaining)
simulated.seconds_since_process_start = lambda: 0.0
sys.exit(simulated.main(argv))
'''


@dataclass(frozen=True)
class Variant:
    key: str  # before, after, after-command
    label: str
    rev: str | None  # None: the working tree
    backend: str  # simulated | wrapper | command


@dataclass
class EngineStats:
    name: str
    factor: float
    rate: float  # samples/s
    batches: int
    samples: int
    busy_model_s: float  # sum of samples / rate: what the simulated GPU basecalls
    busy_wall_s: float  # sum of (basecaller end - start - S)
    last_end: float  # last basecaller end, seconds after t0
    timeline: list[tuple[float, float, int]]  # (start, end, files), seconds after t0
    reported: tuple[float, float | None] | None = None  # manager's startup_s, bytes/s
    arrival_s: float = 0.0  # spawned this long after t0 (arrival mode; together: 0)

    def present_s(self, makespan_s: float) -> float:
        """How long the engine was there: from its arrival to the end of the run."""
        return makespan_s - self.arrival_s


def ideal_makespan(
    rates: Sequence[float], arrivals: Sequence[float], startup: float, total: float
) -> float:
    """The earliest F with sum_i rates[i] * max(0, F - arrivals[i] - startup) = total: a
    perfect split in which every engine pays one start-up after its arrival and all that
    get work finish at once. Exact: sorted by arrival, the sum is piecewise linear in F.
    With every arrival 0: startup + total / sum(rates)."""
    ready = sorted(zip((a + startup for a in arrivals), rates, strict=True))
    rate = weighted = 0.0
    for k, (at, r) in enumerate(ready):
        rate += r
        weighted += r * at
        f = (total + weighted) / rate  # with engines 0..k working: rate * F - weighted
        if k + 1 == len(ready) or f <= ready[k + 1][0]:
            return f
    raise ValueError("no engines")


def arrival_plan(factors: Sequence[float], gap_s: float, seed: int, order: str) -> list[float]:
    """When each engine (in `factors` order) arrives, seconds after t0: the first at 0,
    then gaps uniform in [0, gap_s] from random.Random(seed), in start order `order`
    (given: the list's order; slow-first / fast-first: by speed factor, ties as given)."""
    rng = random.Random(seed)
    offsets = [0.0]
    for _ in range(len(factors) - 1):
        offsets.append(offsets[-1] + rng.uniform(0.0, gap_s))
    position = list(range(len(factors)))
    if order == "slow-first":
        position.sort(key=lambda i: factors[i])
    elif order == "fast-first":
        position.sort(key=lambda i: -factors[i])
    arrivals = [0.0] * len(factors)
    for at, i in zip(offsets, position, strict=True):
        arrivals[i] = at
    return arrivals


def arrival_seed(base: int, n_engines: int) -> int:
    return 1000 * base + n_engines


@dataclass
class StartupRun:
    variant: Variant
    mode: str  # together | arrival
    code: str
    n_engines: int
    files: int
    startup_s: float
    total_samples: int
    makespan_s: float
    engines: list[EngineStats]

    @property
    def fleet_rate(self) -> float:
        return sum(e.rate for e in self.engines)

    @property
    def ideal_s(self) -> float:
        """A perfect split: every engine starts its basecaller once after its arrival, and
        all finish at once (see ideal_makespan)."""
        return ideal_makespan(
            [e.rate for e in self.engines],
            [e.arrival_s for e in self.engines],
            self.startup_s,
            self.total_samples,
        )

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.ideal_s

    def share(self, e: EngineStats, wall: bool = False) -> float:
        """An engine's basecalling over the time it was there (NaN: it came after the end)."""
        present = e.present_s(self.makespan_s)
        if present <= 0:
            return float("nan")
        return (e.busy_wall_s if wall else e.busy_model_s) / present

    def ideal_share(self, e: EngineStats) -> float:
        """An engine's busy share in the ideal split (one start-up after its arrival, every
        engine ending at the ideal makespan): the most any schedule gives it, before its
        own process start and claims (NaN: the ideal gives it no work)."""
        present = self.ideal_s - e.arrival_s
        if present <= self.startup_s:
            return float("nan")
        return (present - self.startup_s) / present

    def busy(self, wall: bool = False) -> list[float]:
        """Busy shares of the engines that arrived before the run ended."""
        shares = [self.share(e, wall) for e in self.engines]
        return [b for b in shares if b == b]

    @property
    def batches(self) -> int:
        return sum(e.batches for e in self.engines)

    @property
    def mean_batch_s(self) -> float:
        spans = [end - start for e in self.engines for start, end, _ in e.timeline]
        return sum(spans) / len(spans) if spans else float("nan")


def engine_factors(n: int, speeds: str) -> list[float]:
    if speeds == "equal":
        return [1.0] * n
    return [SPEED_MIX[i % len(SPEED_MIX)] for i in range(n)]


def write_mixed_sources(
    folder: Path, reads: list[int], distinct: int, samples: int, grouped: bool = False
) -> list[tuple[Path, int]]:
    """`distinct` pod5 files for each read count in `reads`, interleaved (sizes differ).

    The manager queues a backlog by (mtime, path). With one mtime for all sources the
    queue follows the link names, so sizes alternate (files of a run are much alike);
    `grouped` keeps one mtime per read count, so every small file is queued first."""
    groups = [write_pod5_sources(folder / f"r{r}", distinct, r, samples) for r in reads]
    sources = [group[i] for i in range(distinct) for group in groups]
    if not grouped:
        then = min(os.stat(path).st_mtime for path, _ in sources)
        for path, _ in sources:
            os.utime(path, (then, then))
    return sources


def job_samples(output: Path, sources: list[tuple[Path, int]]) -> dict[int, int]:
    """Samples per job, from the ledger (files.job_id) and the backlog's round robin."""
    import sqlite3

    db = sqlite3.connect(f"file:{output / '.bcmanager' / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT path, job_id FROM files").fetchall()
    finally:
        db.close()
    out: dict[int, int] = {}
    for path, job_id in rows:
        index = int(Path(path).stem.split("_")[1])
        out[job_id] = out.get(job_id, 0) + sources[index % len(sources)][1]
    return out


def engine_options(variant: Variant, rate: float, startup: float, wrapper: Path) -> list[str]:
    if variant.backend == "simulated":
        return [
            "--basecaller",
            "simulated",
            "--samples-per-s",
            repr(rate),
            "--startup-s",
            repr(startup),
        ]
    if variant.backend == "wrapper":
        program = f"{shlex.quote(sys.executable)} {shlex.quote(str(wrapper))}"
    else:
        program = f"{shlex.quote(sys.executable)} -m bcmanager.basecallers.simulated"
    template = (
        f"{program} {{input}} {{output}} --samples-per-s {rate!r} --startup-s {startup!r}"
        " --style legacy"
    )
    return ["--basecaller", "command", "--command", template]


def run_startup_variant(
    work: Path,
    variant: Variant,
    sources: list[tuple[Path, int]],
    n_files: int,
    factors: list[float],
    fleet_rate: float,
    args: argparse.Namespace,
    arrivals: list[float] | None = None,
    speed_book: Path | None = None,
) -> StartupRun:
    """One run; with `arrivals` (seconds after t0 per engine), in arrival mode; with
    `speed_book`, the manager starts knowing the engines' speeds from it (warm)."""
    code = use_code_at(variant.rev, work.parent / "code")
    wrapper = work.parent / "startup_wrapper.py"
    wrapper.write_text(STARTUP_WRAPPER, encoding="utf-8")
    startup = args.startup * args.scale
    rates = {f"gpu{k + 1}": fleet_rate * f / sum(factors) for k, f in enumerate(factors)}
    engines = {
        name: engine_options(variant, rate, startup, wrapper) for name, rate in rates.items()
    }
    manager = ["--target-batch", repr(args.target * args.scale), *args.manager_arg]
    if args.expect and variant.key != "before":
        manager += ["--expect-engines", str(len(factors))]
    if speed_book is not None:
        manager += ["--speed-book", str(speed_book)]
    reported: dict[str, tuple[float, float | None]] = {}

    def before_stop(port: int) -> None:
        for e in (http_get_json("/v1/status", port, timeout=10) or {}).get("engines", []):
            if "startup_s" in e:
                reported[e["engine"]] = (e["startup_s"], e.get("bytes_per_s"))

    run = run_backlog(
        work,
        sources,
        n_files,
        engines,
        manager_extra=manager,
        batch_size=args.first_batch,
        before_stop=before_stop,
        lease_s=LEASE_S * args.scale,
        arrivals=arrivals,
    )
    samples = job_samples(work / "output", sources)
    stats = []
    for (name, rate), factor in zip(rates.items(), factors, strict=True):
        mine = sorted((j for j in run.jobs if j.engine == name), key=lambda j: j.start)
        ends = [j.basecaller_end if j.basecaller_end is not None else j.done for j in mine]
        done_samples = sum(samples[j.job_id] for j in mine)
        stats.append(
            EngineStats(
                name,
                factor,
                rate,
                len(mine),
                done_samples,
                done_samples / rate,
                sum(max(0.0, end - j.start - startup) for j, end in zip(mine, ends, strict=True)),
                max(ends) - run.t0 if ends else float("nan"),
                [
                    (j.start - run.t0, end - run.t0, j.files)
                    for j, end in zip(mine, ends, strict=True)
                ],
                reported.get(name),
                max(0.0, run.engine_starts_s[name]) if arrivals is not None else 0.0,
            )
        )
    return StartupRun(
        variant,
        ("together" if arrivals is None else "arrival") + (" (warm)" if speed_book else ""),
        code.describe,
        len(factors),
        n_files,
        startup,
        run.total_samples,
        run.makespan_s,
        stats,
    )


def report_startup_run(r: StartupRun, results: list[StartupRun]) -> None:
    results.append(r)
    busy = r.busy()
    print(
        f"  makespan {r.makespan_s:.1f} s, ideal {r.ideal_s:.1f} s ({r.ratio:.3f}),"
        f" busy mean {pct(sum(busy) / len(busy))} min {pct(min(busy))},"
        f" {r.batches} batches",
        flush=True,
    )
    print(timeline(r), flush=True)


STARTUP_HEADERS = [
    "code",
    "mode",
    "engines",
    "files",
    "batches",
    "mean batch s",
    "makespan s",
    "ideal s",
    "makespan / ideal",
    "busy share mean / min",
    "busy share (wall) mean / min",
    "idle at the end s max",
]


def pct(value: float) -> str:
    return f"{100 * value:.1f} %" if value == value else "-"


def idle_at_end(r: StartupRun, e: EngineStats) -> float:
    """From an engine's last basecaller end (or its arrival, if it had no batch) to the end."""
    return r.makespan_s - e.last_end if e.timeline else max(0.0, e.present_s(r.makespan_s))


def startup_rows(results: list[StartupRun]) -> list[list[str]]:
    out = []
    for r in results:
        busy, wall = r.busy(), r.busy(wall=True)
        out.append(
            [
                r.variant.label,
                r.mode,
                str(r.n_engines),
                str(r.files),
                str(r.batches),
                fmt(r.mean_batch_s, 1),
                fmt(r.makespan_s, 1),
                fmt(r.ideal_s, 1),
                fmt(r.ratio, 3),
                f"{pct(sum(busy) / len(busy))} / {pct(min(busy))}",
                f"{pct(sum(wall) / len(wall))} / {pct(min(wall))}",
                fmt(max(idle_at_end(r, e) for e in r.engines), 1),
            ]
        )
    return out


ENGINE_HEADERS = [
    "code",
    "mode",
    "engines",
    "engine",
    "speed",
    "arrival s",
    "batches",
    "files per batch",
    "busy share",
    "busy share (wall)",
    "ideal split's share",
    "arrival to first batch s",
    "last end s",
    "manager's start-up s",
]


def engine_rows(results: list[StartupRun]) -> list[list[str]]:
    out = []
    for r in results:
        for e in r.engines:
            sizes = [f for _, _, f in e.timeline]
            out.append(
                [
                    r.variant.label,
                    r.mode,
                    str(r.n_engines),
                    e.name,
                    f"{e.factor:g}x",
                    fmt(e.arrival_s, 1),
                    str(e.batches),
                    " ".join(str(s) for s in sizes) or "-",
                    pct(r.share(e)),
                    pct(r.share(e, wall=True)),
                    pct(r.ideal_share(e)),
                    fmt(e.timeline[0][0] - e.arrival_s, 1) if e.timeline else "-",
                    fmt(e.last_end, 1),
                    fmt(e.reported[0], 2) if e.reported else "-",
                ]
            )
    return out


LOSS_HEADERS = [
    "code",
    "mode",
    "engines",
    "batches per engine",
    "in batches, not basecalling s",
    "between batches s",
    "idle at the end s",
    "makespan - arrival - basecalling s",
]


def loss_rows(results: list[StartupRun]) -> list[list[str]]:
    """Where each engine's makespan goes besides basecalling (means over engines): inside
    its batches (start-up, Python's start, reading), between its batches (report, claim,
    spawn), after its last batch; all counted from its arrival (together mode: t0)."""
    out = []
    for r in results:
        inside, between, end = [], [], []
        for e in r.engines:
            starts = [s for s, _, _ in e.timeline]
            ends = [t for _, t, _ in e.timeline]
            present = max(0.0, e.present_s(r.makespan_s))
            if not starts:  # no batch at all: there, idle, until the end
                inside.append(0.0)
                between.append(0.0)
                end.append(present)
                continue
            inside.append(sum(t - s for s, t, _ in e.timeline) - e.busy_model_s)
            gaps = sum(s - t for t, s in zip(ends, starts[1:], strict=False))
            between.append(starts[0] - e.arrival_s + gaps)
            end.append(r.makespan_s - e.last_end)
        n = len(r.engines)
        there = [max(0.0, e.present_s(r.makespan_s)) - e.busy_model_s for e in r.engines]
        out.append(
            [
                r.variant.label,
                r.mode,
                str(n),
                fmt(r.batches / n, 1),
                fmt(sum(inside) / n, 1),
                fmt(sum(between) / n, 1),
                fmt(sum(end) / n, 1),
                fmt(sum(there) / n, 1),
            ]
        )
    return out


def comparison_rows(results: list[StartupRun]) -> list[list[str]]:
    out = []
    keys = sorted(
        {(r.mode, r.n_engines) for r in results},
        key=lambda k: (MODES.index(k[0].split(" ")[0]), k[0], k[1]),
    )
    for mode, n in keys:
        by = {r.variant.key: r for r in results if (r.mode, r.n_engines) == (mode, n)}
        before, after = by.get("before"), by.get("after")
        if before is None or after is None:
            continue
        out.append(
            [
                mode,
                str(n),
                f"{fmt(before.ratio, 3)} -> {fmt(after.ratio, 3)}",
                fmt(after.makespan_s / before.makespan_s, 3),
                f"{pct(min(before.busy()))} -> {pct(min(after.busy()))}",
                f"{before.batches} -> {after.batches}",
            ]
        )
    return out


def startup_targets(results: list[StartupRun]) -> list[list[str]]:
    out = []
    for r in results:
        if r.variant.key != "after":
            continue
        low = min(r.busy())
        out.append(
            [
                f"busy share, {r.mode}, {r.n_engines} engines (min over engines)",
                pct(low),
                f">= {pct(TARGET_BUSY)}",
                "met" if low >= TARGET_BUSY else "NOT met",
            ]
        )
        out.append(
            [
                f"makespan, {r.mode}, {r.n_engines} engines",
                f"{r.ratio:.3f} x ideal",
                f"<= {TARGET_STARTUP_MAKESPAN} x ideal",
                "met" if r.ratio <= TARGET_STARTUP_MAKESPAN else "NOT met",
            ]
        )
    return out


def timeline(r: StartupRun) -> str:
    lines = [f"{r.variant.label}, {r.mode}, {r.n_engines} engines (seconds after t0; files):"]
    for e in r.engines:
        spans = " ".join(f"[{s:.1f}-{t:.1f} {f}]" for s, t, f in e.timeline) or "no batch"
        lines.append(f"  {e.name} {e.factor:g}x, arrives {e.arrival_s:.1f}: {spans}")
    return "\n".join(lines)


def startup_main(args: argparse.Namespace, work: Path) -> int:
    after_rev = None if args.after == WORKTREE else args.after
    after_label = "working tree" if after_rev is None else args.after
    variants = [
        Variant("before", f"before ({args.before})", args.before, "wrapper"),
        Variant("after", f"after ({after_label})", after_rev, "simulated"),
    ]
    if args.only:
        variants = [v for v in variants if v.key == args.only]
    fallback = Variant(
        "after-command", f"after ({after_label}), command backend", after_rev, "command"
    )
    reads = [int(r) for r in args.reads_mix.split(",") if r]
    grouped = args.size_order == "grouped"
    sources = write_mixed_sources(work / "sources", reads, args.distinct, args.samples, grouped)
    per_file = sum(s for _, s in sources) / len(sources)
    results: list[StartupRun] = []
    gap = args.arrival_gap * args.scale
    for n in args.engines:
        factors = engine_factors(n, args.speeds)
        n_files = args.files_per_engine * n
        # files are linked round robin over the sources: whole rounds, then a part of one
        total = sum(sources[i % len(sources)][1] for i in range(n_files))
        fleet_rate = total / (args.work * args.scale)
        plan = arrival_plan(factors, gap, arrival_seed(args.arrival_seed, n), args.arrival_order)
        with_fallback = n in args.fallback_engines and args.only != "before"
        runs = [*variants, fallback] if with_fallback else variants
        for variant in runs:
            for mode in args.modes:
                arrivals = plan if mode == "arrival" else None
                planned = (
                    " arriving at " + ", ".join(f"{a:.1f}" for a in plan) + " s"
                    if arrivals is not None
                    else ""
                )
                print(
                    f"{variant.label}, {mode}: {n} engines x {args.files_per_engine} files,"
                    f" {fleet_rate:,.0f} samples/s in all{planned} ...",
                    flush=True,
                )
                run_dir = work / f"{variant.key}-{mode}-{n}"
                r = run_startup_variant(
                    run_dir, variant, sources, n_files, factors, fleet_rate, args, arrivals
                )
                report_startup_run(r, results)
                if args.warm and variant.key == "after":
                    book = work / f"speeds-{mode}-{n}.json"
                    shutil.copyfile(run_dir / "output" / ".bcmanager" / "speeds.json", book)
                    print(f"{variant.label}, {mode}, warm: the engines' speeds from {book}")
                    r = run_startup_variant(
                        work / f"{variant.key}-{mode}-warm-{n}",
                        variant,
                        sources,
                        n_files,
                        factors,
                        fleet_rate,
                        args,
                        arrivals,
                        speed_book=book,
                    )
                    report_startup_run(r, results)
    summary, per_engine = startup_rows(results), engine_rows(results)
    compare, targets = comparison_rows(results), startup_targets(results)
    print_table("start-up: whole runs", STARTUP_HEADERS, summary)
    print_table("start-up: per engine", ENGINE_HEADERS, per_engine)
    losses = loss_rows(results)
    print_table("start-up: where the makespan goes besides basecalling", LOSS_HEADERS, losses)
    c_headers = [
        "mode",
        "engines",
        "makespan / ideal, before -> after",
        "makespan after / before",
        "min busy share, before -> after",
        "batches",
    ]
    print_table("start-up: before -> after", c_headers, compare)
    t_headers = ["target", "measured", "wanted", "result"]
    print_table("start-up: targets", t_headers, targets)
    if args.no_doc or args.only or after_rev is None:
        if not args.no_doc:
            print("docs/benchmarks.md not updated: the record needs both commits side by side")
        return 0
    CODE.describe = (
        f"before: commit {args.before}, after: commit {args.after} (exported with git archive)"
    )
    scale = args.scale
    body = "\n".join(
        [
            section_header(
                "A basecaller's start-up: GPU busy share and makespan (`bench/e2e.py --startup`)"
            ),
            f"- setup: Dorado's cost shape scaled by {scale:g} (seconds here stand for"
            f" {1 / scale:g} s): a start-up of {args.startup:g} s ({args.startup * scale:g} s"
            f" here) before every batch, then samples / rate; the manager's target batch"
            f" {args.target:g} s (`--target-batch {args.target * scale:g}`), so start-up ="
            f" {args.startup / args.target:.3g} x target. Engines of {args.speeds} speeds"
            f" ({', '.join(f'{f:g}' for f in SPEED_MIX)} x the slowest, repeated); a backlog"
            f" of {args.files_per_engine} pod5 files per engine ({', '.join(map(str, reads))}"
            f" reads of ~{args.samples} samples, {per_file:,.0f} samples a file on average,"
            f" hard-linked, mtime an hour back, sizes {args.size_order} in queue order),"
            f" as much work as {args.work:g} s"
            f" ({args.work * scale:g} s here) of basecalling per engine in a perfect split;"
            f" the manager's default batch `--batch-size {args.first_batch}` (the before code's"
            " first batch while an engine's speed is unknown; since e46efe0 a quarter of an"
            " even split of the backlog when that is more).",
            "- before: the before code's simulated basecaller through the `command` backend,"
            " behind a wrapper that waits S after its process start (the after code's"
            " `--startup-s` exactly); after: `bcm engine --basecaller simulated --samples-per-s"
            " R --startup-s S` (since b635aeb its first output comes when S is over, as its"
            " clock counts; before, after its own imports, which the engine measured as"
            " start-up); after, command backend: the after code with the same basecaller"
            " through the `command` backend (`--style legacy`), whose engine does not report"
            " start-up and basecalling time, so the manager falls back to claim -> report.",
            f"- modes ({', '.join(args.modes)}): `together`: every engine starts first and"
            " waits in a long-poll claim; t0 is the rename of the backlog into INPUT."
            " `arrival` (Slurm starting engines as GPU nodes come free): the backlog is"
            " renamed into INPUT first, t0 is the moment the manager has queued all its files"
            " (v1 status files.queued), and engine k is spawned at t0 + a_k: a_0 = 0, the gaps"
            f" between consecutive starts uniform in [0, {args.arrival_gap:g}] s"
            f" ([0, {gap:g}] s here; `--arrival-gap`), drawn from"
            f" `random.Random(1000 x {args.arrival_seed} + engines)`, the same arrivals for"
            " every code of one engine count; engines start in"
            + (
                " the order of the speeds above (so a slow one may come first)"
                if args.arrival_order == "given"
                else f" {args.arrival_order} order of speed"
            )
            + f" (`--arrival-order {args.arrival_order}`). An arriving engine pays its"
            " Python start and its first claim after a_k (in together mode both lie before"
            " t0); a_k in the tables is when it was actually spawned."
            + (
                " The after code's manager is told the fleet's size (`--expect-engines N`,"
                " `--expect`): engines are arriving while fewer than N have called."
                if args.expect
                else ""
            ),
            "- makespan: from t0 to the last merge. ideal: the earliest F with sum over"
            " engines of rate_i x max(0, F - a_i - S) = total samples (a perfect split: one"
            " start-up per engine after its arrival, every engine that gets work finishing at"
            " once; solved exactly, piecewise linear in F); in together mode every a_i = 0, so"
            " ideal = S + total samples / the fleet's total rate.",
            "- busy share: an engine's basecalling over the time it was there, makespan - a_i"
            " (together mode: the makespan). `busy share`: the sum of"
            " samples / rate over its batches (samples per batch from the ledger's files),"
            " exactly what the simulated GPU basecalls; `(wall)`: the sum of (basecaller end -"
            " start - S), start = the engine's `job N` log line (just before it spawns the"
            " basecaller), end = the mtime of the batch's basecaller.log, so it counts Python's"
            " start and file reading beyond S as busy. idle at the end: makespan - an engine's"
            " last basecaller end. manager's start-up: what the manager had learnt (v1 status)."
            " ideal split's share: (F - a_i - S) / (F - a_i) at the ideal makespan F, the busy"
            " share a perfect split gives an engine (a bound on any schedule's, before the"
            " engine's own process start; an engine whose speed is not known when it arrives"
            " pays a probe, a second S, on top). arrival to first batch: from its spawn to its"
            " first basecaller start (Python's start and its first claim: not scaled with S).",
            " Targets, for each mode and engine count: min busy share >="
            f" {pct(TARGET_BUSY)}, makespan <= {TARGET_STARTUP_MAKESPAN} x ideal.",
            "",
            markdown_table(STARTUP_HEADERS, summary),
            "",
            markdown_table(ENGINE_HEADERS, per_engine),
            "",
            "Where an engine's time from its arrival (together mode: t0) to the end goes besides"
            " basecalling (seconds, mean over engines): inside its batches (start-up S, plus"
            " Python's start and file reading where they outlast S), between its batches (from"
            " its arrival to its first batch, then basecaller end -> next start: report,"
            " claim, spawn), and idle after its last batch.",
            "",
            markdown_table(LOSS_HEADERS, losses),
            "",
            markdown_table(c_headers, compare),
            "",
            markdown_table(t_headers, targets),
            "",
            "Batch timelines (seconds after t0, each engine's arrival, files per batch):",
            "",
            "```",
            *[timeline(r) for r in results],
            "```",
        ]
    )
    update_doc("e2e-startup", body)
    print("updated docs/benchmarks.md")
    return 0


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="2,4", help="engine counts of the big runs")
    p.add_argument("--files", type=int, default=200, help="pod5 files in the big runs")
    p.add_argument("--reads", type=int, default=20, help="reads per pod5 file")
    p.add_argument("--samples", type=int, default=4000, help="samples per read (about)")
    p.add_argument("--distinct", type=int, default=8, help="distinct pod5 files, linked")
    p.add_argument("--ideal", type=float, default=40.0, help="seconds an ideal big run takes")
    p.add_argument("--small-files", type=int, default=8, help="files in the small runs")
    p.add_argument("--small-batch", type=int, default=2, help="batch size in the small runs")
    p.add_argument("--small-batch-s", type=float, default=10.0, help="seconds per small batch")
    p.add_argument("--no-original", action="store_true", help="skip the original system")
    p.add_argument("--no-small", action="store_true", help="skip both small runs")
    p.add_argument("--workdir", type=Path, default=REPO / "bench" / "_work", help="scratch")
    p.add_argument("--keep", action="store_true", help="keep the scratch folders")
    p.add_argument("--code-at", metavar="REV", help="run bcmanager from this commit")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--no-wait", action="store_true", help="do not wait for other benchmarks")
    s = p.add_argument_group("start-up mode (--startup S): before and after, side by side")
    s.add_argument(
        "--startup", type=float, metavar="S", help="a basecaller start-up of S Dorado seconds"
    )
    s.add_argument("--target", type=float, default=60.0, help="target batch, Dorado seconds")
    s.add_argument("--scale", type=float, default=0.1, help="seconds here per Dorado second")
    s.add_argument("--speeds", choices=["mixed", "equal"], default="mixed")
    s.add_argument("--work", type=float, default=1200.0, help="Dorado s per engine, ideal")
    s.add_argument("--files-per-engine", type=int, default=100)
    s.add_argument("--reads-mix", default="10,20,40", help="reads per file of the sources")
    s.add_argument("--first-batch", type=int, default=10, help="manager --batch-size")
    s.add_argument(
        "--size-order",
        choices=["interleaved", "grouped"],
        default="interleaved",
        help="queue order of the file sizes (grouped: all small files first)",
    )
    s.add_argument(
        "--before",
        default=BEFORE_REV,
        help="the before commit, run through the `command` backend behind a start-up"
        " wrapper (code older than `--startup-s`); to compare two recent commits, run"
        " `--only after --after REV` for each",
    )
    s.add_argument(
        "--after",
        default=AFTER_REV,
        help=f"the after commit ({WORKTREE!r}: the working tree, while iterating; no record)",
    )
    s.add_argument(
        "--only",
        choices=["before", "after"],
        help="run one side only, while iterating (no record in docs/benchmarks.md)",
    )
    s.add_argument(
        "--fallback-engines",
        default="4",
        help="engine counts that also run the after code through the command backend",
    )
    s.add_argument(
        "--modes",
        default=",".join(MODES),
        help="together: every engine waits in a claim before the backlog arrives; arrival:"
        " the backlog is queued first and the engines start one by one (comma-separated)",
    )
    s.add_argument(
        "--expect",
        action="store_true",
        help="the after code's manager is told the fleet's size (`--expect-engines N`, as"
        " the GPU jobs submitted would tell it), so engines still to come are known",
    )
    s.add_argument(
        "--warm",
        action="store_true",
        help="after each run of the after code, run it again with the speed book that run"
        " left (`--speed-book`): engines known from their first batch",
    )
    s.add_argument(
        "--arrival-gap",
        type=float,
        default=300.0,
        metavar="GAP",
        help="arrival mode: gaps between engine starts uniform in [0, GAP] Dorado seconds",
    )
    s.add_argument(
        "--arrival-order",
        choices=ARRIVAL_ORDERS,
        default="given",
        help="arrival mode: engines start in the speeds' order, or sorted by speed",
    )
    s.add_argument(
        "--arrival-seed",
        type=int,
        default=1,
        help="arrival mode: the gaps come from random.Random(1000 x this + engines)",
    )
    p.add_argument(
        "--manager-arg",
        action="append",
        default=[],
        help="start-up runs: extra argument for `bcm manager`, repeatable, as"
        " --manager-arg=ARG (e.g. --manager-arg=--log-level=debug: each claim's sizing"
        " in the manager's log, kept with --keep)",
    )
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.modes or set(args.modes) - set(MODES):
        p.error(f"--modes: a comma-separated choice of {', '.join(MODES)}")
    args.engines = [int(e) for e in args.engines.split(",") if e]
    args.fallback_engines = [int(e) for e in args.fallback_engines.split(",") if e]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    work = args.workdir / "e2e"
    remove_tree(work)
    work.mkdir(parents=True)
    if args.startup is not None:
        if not args.no_wait:
            wait_for_quiet(OTHER_BENCHES)
        try:
            return startup_main(args, work)
        finally:
            if not args.keep:
                remove_tree(work)
    code = use_code_at(args.code_at, work)
    if code.src is not None:
        sys.path.insert(0, str(code.src))
    if not args.no_wait:
        wait_for_quiet(OTHER_BENCHES)
    sources = write_pod5_sources(work / "sources", args.distinct, args.reads, args.samples)
    per_file = sum(s for _, s in sources) / len(sources)
    results: list[RunResult] = []
    try:
        for n in args.engines:
            speed = round(per_file * args.files / (n * args.ideal))
            print(f"bcmanager: {n} engines x {args.files} files at {speed:,} samples/s ...")
            results.append(run_bcmanager_backlog(work / f"bcm-{n}", sources, args.files, n, speed))
            print(f"  makespan {results[-1].makespan_s:.1f} s, ideal {results[-1].ideal_s:.1f} s")
        small_speed = round(per_file * args.small_batch / args.small_batch_s)
        if not args.no_small:
            print(f"bcmanager small run ({args.small_files} files) ...")
            results.append(
                run_bcmanager_small(
                    work / "bcm-small", sources, args.small_files, args.small_batch, small_speed
                )
            )
            print(f"  makespan {results[-1].makespan_s:.1f} s")
        if not args.no_small and not args.no_original:
            print(f"original small run ({args.small_files} files; minutes) ...")
            results.append(
                run_original(
                    work / "original", sources, args.small_files, args.small_batch, small_speed
                )
            )
            print(f"  makespan {results[-1].makespan_s:.1f} s")
    finally:
        if not args.keep:
            remove_tree(work)
    setup = (
        f"- setup: pod5 files of {args.reads} reads x ~{args.samples} samples"
        f" ({per_file:,.0f} samples per file on average; {args.distinct} distinct files"
        " written with the pod5 library, hard-linked under distinct names, mtime an hour"
        " back); simulated engines (`bcm engine --samples-per-s S`), S chosen so an ideal"
        f" big run takes {args.ideal:g} s and a small batch {args.small_batch_s:g} s;"
        " bcmanager with `--lease 90 --batch-size 10` (default sizing: adaptive, target"
        " 60 s, fair share of the queue at the tail). The original engines sleep 60 s"
        " after every batch and report DONE from a keep-alive thread that wakes every"
        " report_back_interval / 2 = 45 s. Every file was checked DONE in the ledger"
        " with one FASTQ in OUTPUT/pass (bcmanager) or merged into OUTPUT/pass (original)."
    )
    body = report(results, setup)
    if not args.no_doc:
        update_doc("e2e", body)
        print("updated docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
