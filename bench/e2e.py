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
  `assigned -> merging` event) to that engine starting its next batch (its JSON log
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
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
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
        " engine starting its next batch (bcmanager: `assigned -> merging` event to the"
        " engine's `job N` log line; original: the `/completed` access-log line, whole"
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
    args = p.parse_args(argv)
    args.engines = [int(e) for e in args.engines.split(",") if e]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    work = args.workdir / "e2e"
    remove_tree(work)
    work.mkdir(parents=True)
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
