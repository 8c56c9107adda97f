"""Live runs: from a pod5 being closed to its claim, and the tail of a run.

1. Pickup latency. A simulated PromethION (`bcmanager.simulate.simulate_run`, in
   this process: 48 flow cells, each writing its files one after another, growing
   in place and closed at the end of every interval, staggered) writes into INPUT
   while a `bcm manager` watches it and engines wait in long-poll claims. For every
   file: close (the simulator's `on_file` callback, right after the writer closed it)
   -> claim (the manager creates the job, its `created`) -> the engine has it (the
   engine's `job N` log line, ms, written as the claim answer arrives). Flat and
   MinKNOW layouts, with inotify (`--watch`, the default) and with rescans only
   (`--no-watch --rescan R`). The engines run `bcm engine --basecaller command
   --command 'true {output}'`: a batch is claimed, "basecalled" in a millisecond and
   reported DONE, so every engine is waiting again at once; this measures pickup,
   not basecalling (a Python basecaller process per batch would need more CPU than
   two cores have at this pace, and engines would no longer be waiting).

2. Tail of a run. The same backlog (hard links of real pod5 files renamed into
   INPUT at t0) through 4 simulated engines of different speeds (S, S, S/2, S/4),
   with batches fixed at 20 (engines ask `--batch-size 20`, the manager's rate-based
   sizing out of the way with `--target-batch 1e6`), with engines asking 20 under
   adaptive sizing, and with adaptive sizing alone (no `--batch-size`; batches sized
   from each engine's measured rate to take `--target-batch T`, and at most a fair
   share of the queue). makespan from t0 to the last merge; ideal = total samples /
   sum of the engines' speeds.

    python bench/live.py [--interval 4] [--files 15] [--rescan 1] [--code-at HEAD]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    REPO,
    EventLog,
    Server,
    engine_job_starts,
    fmt,
    free_port,
    http_get_json,
    kill_tree,
    markdown_table,
    percentile,
    print_table,
    remove_tree,
    run_backlog,
    section_header,
    start_bcm_engine,
    start_bcmanager,
    stop_on_sigterm,
    update_doc,
    use_code_at,
    wait_bcm_ready,
    wait_engines_seen,
    wait_files_done,
    wait_for_quiet,
    write_pod5_sources,
)

TARGET_P99_S = 1.0
OTHER_BENCHES = r"bench/(protocol|startup)\.py"
FLOWCELLS = 48
SPEEDS = (1.0, 1.0, 0.5, 0.25)


# -- pickup latency ---------------------------------------------------------------------


@dataclass
class Pickup:
    layout: str
    mode: str  # "inotify" or "rescan R s"
    files: int
    seconds: float  # the writer's run
    to_queue: list[float] = field(default_factory=list)  # close -> queued (discovered_at)
    to_claim: list[float] = field(default_factory=list)  # close -> job created
    to_engine: list[float] = field(default_factory=list)  # close -> engine has it
    jobs: int = 0


def job_files(port: int, job_ids: list[int]) -> dict[int, list[str]]:
    """Each job's files (paths relative to INPUT), from GET /v1/jobs/{id}."""
    out = {}
    for job_id in job_ids:
        detail = http_get_json(f"/v1/jobs/{job_id}", port, timeout=10) or {}
        out[job_id] = list(detail.get("files", []))
    return out


def discovered_at(ledger: Path) -> dict[str, float]:
    """When the manager queued each file (the ledger's `discovered_at`), read-only after
    the manager has stopped; empty if the ledger has no such column."""
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT path, discovered_at FROM files"))
    except sqlite3.Error:
        return {}
    finally:
        db.close()


def write_live(
    input_dir: Path, args: argparse.Namespace, layout: str
) -> tuple[dict[str, float], float]:
    """Run the simulated sequencer; returns each file's close time (relative path) and
    how long the run took."""
    from bcmanager.simulate import WrittenFile, simulate_run

    closed: dict[str, float] = {}
    lock = threading.Lock()

    def on_file(f: WrittenFile) -> None:
        at = time.time()
        with lock:
            closed[f.path.relative_to(input_dir).as_posix()] = at

    result = simulate_run(
        input_dir,
        files=args.files,
        reads=args.reads,
        samples=args.samples,
        interval=args.interval,
        flowcells=FLOWCELLS,
        layout=layout,
        seed=7,
        on_file=on_file,
    )
    return closed, result.elapsed_s


def run_pickup(work: Path, args: argparse.Namespace, layout: str, watch: bool) -> Pickup:
    mode = "inotify" if watch else f"rescan {args.rescan:g} s"
    remove_tree(work)
    (work / "input").mkdir(parents=True)
    port = free_port()
    extra = [] if watch else ["--no-watch", "--rescan", repr(args.rescan)]
    manager = start_bcmanager(
        work / "input",
        work / "output",
        work / "logs" / "manager.log",
        port=port,
        lease_s=90,
        batch_size=10,
        extra=extra,
    )
    started: list[Server] = [manager]
    names = [f"live{k + 1}" for k in range(args.engines)]
    logs = [work / "logs" / f"engine-{n}.log" for n in names]
    options = ["--basecaller", "command", "--command", "true {output}"]
    try:
        wait_bcm_ready(manager)
        for name, log in zip(names, logs, strict=True):
            started.append(start_bcm_engine(name, port, log, options))
        wait_engines_seen(port, names, started)
        events = EventLog(port)
        closed, seconds = write_live(work / "input", args, layout)
        wait_files_done(events, len(closed), started, timeout=120)
        created = events.job_times("assigned")
        files = job_files(port, sorted(created))
    finally:
        for s in reversed(started):
            kill_tree(s)
    engine_has: dict[int, float] = {}
    for log in logs:
        engine_has.update(engine_job_starts(log))
    queued = discovered_at(work / "output" / ".bcmanager" / "ledger.sqlite3")
    result = Pickup(layout, mode, len(closed), seconds, jobs=len(created))
    for job_id, paths in files.items():
        for path in paths:
            if path in queued:
                result.to_queue.append(queued[path] - closed[path])
            result.to_claim.append(created[job_id] - closed[path])
            result.to_engine.append(engine_has[job_id] - closed[path])
    if len(result.to_claim) != len(closed):
        raise RuntimeError(f"{len(result.to_claim)} claims for {len(closed)} files")
    return result


# -- tail of a run ------------------------------------------------------------------------


@dataclass
class Tail:
    name: str
    how: str
    ideal_s: float
    makespan_s: float
    batches: dict[str, list[int]]  # engine -> its batch sizes, in order
    last_done: dict[str, float]  # engine -> its last DONE, seconds after t0

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.ideal_s


TAIL_VARIANTS = {  # name: (label, how)
    "fixed": ("fixed 20", "engines `--batch-size 20`, manager `--target-batch 1e6`"),
    "ask20": ("ask 20, adaptive", "engines `--batch-size 20`, manager `--target-batch T`"),
    "adaptive": ("adaptive", "engines without `--batch-size`, manager `--target-batch T`"),
}


def run_tail(
    work: Path, sources: list[tuple[Path, int]], args: argparse.Namespace, variant: str
) -> Tail:
    per_file = sum(s for _, s in sources) / len(sources)
    speed = round(per_file * args.tail_files / (sum(SPEEDS) * args.tail_ideal))
    ask = ["--batch-size", "20"] if variant in ("fixed", "ask20") else []
    engines = {
        f"e{k + 1}-x{rel:g}": ["--samples-per-s", repr(speed * rel), *ask]
        for k, rel in enumerate(SPEEDS)
    }
    target = "1e6" if variant == "fixed" else repr(args.tail_target)
    run = run_backlog(
        work, sources, args.tail_files, engines, manager_extra=["--target-batch", target]
    )
    ideal = run.total_samples / (speed * sum(SPEEDS))
    batches: dict[str, list[int]] = {name: [] for name in engines}
    for job in sorted(run.jobs, key=lambda j: j.start):
        batches[job.engine].append(job.files)
    last = {name: max(j.done for j in run.jobs if j.engine == name) - run.t0 for name in engines}
    label, how = TAIL_VARIANTS[variant]
    return Tail(label, how, ideal, run.makespan_s, batches, last)


# -- report -------------------------------------------------------------------------------

PICKUP_HEADERS = [
    "layout",
    "discovery",
    "files",
    "jobs",
    "close -> queued p50 / p99 / max s",
    "close -> claim p50 / p99 / max s",
    "close -> engine has it p50 / p99 / max s",
]
TAIL_HEADERS = ["batches", "how", "ideal s", "makespan s", "makespan / ideal", "batch sizes"]


def lat_cell(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p99, top = percentile(values, 0.5), percentile(values, 0.99), max(values)
    return f"{fmt(p50, 3)} / {fmt(p99, 3)} / {fmt(top, 3)}"


def pickup_rows(results: list[Pickup]) -> list[list[str]]:
    return [
        [
            r.layout,
            r.mode,
            str(r.files),
            str(r.jobs),
            lat_cell(r.to_queue),
            lat_cell(r.to_claim),
            lat_cell(r.to_engine),
        ]
        for r in results
    ]


def tail_rows(results: list[Tail]) -> list[list[str]]:
    return [
        [
            r.name,
            r.how,
            fmt(r.ideal_s, 1),
            fmt(r.makespan_s, 1),
            fmt(r.ratio, 3),
            "; ".join(
                f"{name}: {','.join(map(str, sizes))} (last at {fmt(r.last_done[name], 1)} s)"
                for name, sizes in r.batches.items()
            ),
        ]
        for r in results
    ]


def target_rows(results: list[Pickup]) -> list[list[str]]:
    out = []
    for r in results:
        if r.mode != "inotify":
            continue
        p99 = percentile(r.to_engine, 0.99)
        out.append(
            [
                f"close -> engine has it p99, {r.layout}, inotify",
                f"{p99:.3f} s",
                f"<= {TARGET_P99_S:g} s",
                "met" if p99 <= TARGET_P99_S else "NOT met",
            ]
        )
    return out


def report(
    pickups: list[Pickup], tails: list[Tail], args: argparse.Namespace, per_file: float
) -> str:
    title = "Live runs: pickup latency and the tail of a run (`bench/live.py`)"
    parts = [section_header(title)]
    t_headers = ["target", "measured", "wanted", "result"]
    if pickups:
        p_rows, t_rows = pickup_rows(pickups), target_rows(pickups)
        print_table("close -> claim", PICKUP_HEADERS, p_rows)
        rate = FLOWCELLS / args.interval
        parts += [
            f"- pickup setup: {FLOWCELLS} flow cells, each closing a pod5 file every"
            f" {args.interval:g} s ({rate:g} files/s in all, staggered), {args.files} files"
            f" each, {args.reads} reads x ~{args.samples} samples per file, written growing"
            " in place by `bcmanager.simulate.simulate_run` in the benchmark process;"
            f" {args.engines} engines `bcm engine --basecaller command --command 'true"
            " {output}'` waiting in long-poll claims; manager with default `--settle 1`."
            " close: the simulator's `on_file` callback, right after the writer closed the"
            " file; claim: the job's `created` time in the manager; engine has it: the"
            " engine's `job N` log line (ms), written when the claim answer arrives.",
            "",
            markdown_table(PICKUP_HEADERS, p_rows),
        ]
        if t_rows:
            print_table("targets", t_headers, t_rows)
            parts += ["", markdown_table(t_headers, t_rows)]
    if tails:
        rows = tail_rows(tails)
        print_table("tail of a run", TAIL_HEADERS, rows)
        speeds = ", ".join(f"S x {s:g}" for s in SPEEDS)
        parts += [
            "",
            f"- tail setup: {args.tail_files} pod5 files ({args.reads_tail} reads x"
            f" ~{args.samples_tail} samples, {per_file:,.0f} samples per file on average;"
            " hard links of 8 distinct real files, renamed into INPUT at t0 while the"
            f" engines wait), 4 simulated engines at {speeds}, S chosen so the ideal"
            f" (total samples / sum of speeds) is {args.tail_ideal:g} s; T ="
            f" {args.tail_target:g} s (the default 60 s is meant for runs of hours);"
            " manager `--batch-size 10` (the size for an engine with no measured rate yet)."
            " makespan: t0 to the last merge. Batch sizes per engine in claim order.",
            "",
            markdown_table(TAIL_HEADERS, rows),
        ]
    return "\n".join(parts)


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", type=float, default=4.0, help="s between a flow cell's files")
    p.add_argument("--files", type=int, default=15, help="files per flow cell")
    p.add_argument("--reads", type=int, default=8, help="reads per live file")
    p.add_argument("--samples", type=int, default=2000, help="samples per read (about)")
    p.add_argument("--engines", type=int, default=4, help="engines in the pickup runs")
    p.add_argument("--rescan", type=float, default=1.0, help="rescan interval without inotify")
    p.add_argument("--layouts", default="flat,minknow", help="pickup layouts")
    p.add_argument("--modes", default="inotify,rescan", help="pickup discovery modes")
    p.add_argument("--tail-files", type=int, default=120, help="files in the tail runs")
    p.add_argument("--reads-tail", type=int, default=20, help="reads per tail file")
    p.add_argument("--samples-tail", type=int, default=4000, help="samples per read, tail")
    p.add_argument("--tail-ideal", type=float, default=45.0, help="ideal tail run, seconds")
    p.add_argument("--tail-target", type=float, default=10.0, help="--target-batch T, seconds")
    p.add_argument("--tail", default=",".join(TAIL_VARIANTS), help="tail variants to run")
    p.add_argument("--workdir", type=Path, default=REPO / "bench" / "_work", help="scratch")
    p.add_argument("--keep", action="store_true", help="keep the scratch folders")
    p.add_argument("--code-at", metavar="REV", help="run bcmanager from this commit")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--no-wait", action="store_true", help="do not wait for other benchmarks")
    args = p.parse_args(argv)
    args.layouts = [x for x in args.layouts.split(",") if x]
    args.modes = [x for x in args.modes.split(",") if x]
    args.tail = [x for x in args.tail.split(",") if x]
    unknown = set(args.tail) - set(TAIL_VARIANTS)
    if unknown:
        p.error(f"unknown tail variant(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    work = args.workdir / "live"
    remove_tree(work)
    work.mkdir(parents=True)
    code = use_code_at(args.code_at, work)
    if code.src is not None:
        sys.path.insert(0, str(code.src))
    if not args.no_wait:
        wait_for_quiet(OTHER_BENCHES)
    pickups: list[Pickup] = []
    tails: list[Tail] = []
    per_file = 0.0
    try:
        for layout in args.layouts:
            for mode in args.modes:
                print(f"pickup: {layout} layout, {mode} ...", flush=True)
                r = run_pickup(work / f"pickup-{layout}-{mode}", args, layout, mode == "inotify")
                print(
                    f"  {r.files} files in {r.seconds:.0f} s; close -> engine p50"
                    f" {percentile(r.to_engine, 0.5):.3f} s, p99"
                    f" {percentile(r.to_engine, 0.99):.3f} s",
                    flush=True,
                )
                pickups.append(r)
        if args.tail:
            sources = write_pod5_sources(work / "sources", 8, args.reads_tail, args.samples_tail)
            per_file = sum(s for _, s in sources) / len(sources)
            for variant in args.tail:
                print(f"tail: {variant} ...", flush=True)
                t = run_tail(work / "tail", sources, args, variant)
                print(f"  makespan {t.makespan_s:.1f} s, ideal {t.ideal_s:.1f} s", flush=True)
                tails.append(t)
    finally:
        if not args.keep:
            remove_tree(work)
    body = report(pickups, tails, args, per_file)
    if not args.no_doc:
        update_doc("live", body)
        print("updated docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
