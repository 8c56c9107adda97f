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

   Beside the simulator's files written in place, `--rename-cells K` more writers
   (12 by default; 0 for none) deliver files the way rsync or a copy script does: each
   writes a complete pod5 under a hidden temporary name in the target folder
   (`.<name>.tmp`), then `os.rename`s it to its final `<name>.pod5`, one file every
   `--interval` seconds per writer, staggered, in the same run. Their "close" is the
   moment the rename returned. With `--rename-age S` the temporary file's mtime is set
   S seconds back before the rename (as `rsync -t` keeps the source's mtime); by default
   it is left as written (less than a second old at the rename). Rows are split by
   arrival (in place / rename), so both are measured under the same load.

2. Tail of a run. The same backlog (hard links of real pod5 files renamed into
   INPUT at t0) through 4 simulated engines of different speeds (S, S, S/2, S/4),
   with batches fixed at 20 (engines ask `--batch-size 20`, the manager's rate-based
   sizing out of the way with `--target-batch 1e6`), with engines asking 20 under
   adaptive sizing, and with adaptive sizing alone (no `--batch-size`; batches sized
   from each engine's measured rate to take `--target-batch T`, and at most a fair
   share of the queue). makespan from t0 to the last merge; ideal = total samples /
   sum of the engines' speeds.

    python bench/live.py [--interval 4] [--files 15] [--rescan 1] [--code-at HEAD]

Pickup only, in place and by rename side by side (issue 10; the before run of the
code at 25c2065, then the after run of the working tree):

    python bench/live.py --tail '' --code-at 25c2065 --no-doc \
        --json-out /tmp/bench-before-live.json > /tmp/bench-before-live.txt
    python bench/live.py --code-at HEAD --before-json /tmp/bench-before-live.json

The second writes the whole `live` section of docs/benchmarks.md (pickup and tail; with
`--tail ''` the section would lose its tail table) with a before / after table of close
-> engine has it, row by row (layout, discovery, arrival).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import (
    CODE,
    LOAD_AT_START,
    REPO,
    EventLog,
    Server,
    command_line,
    engine_job_starts,
    fmt,
    free_port,
    http_get_json,
    kill_tree,
    load_average,
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
    utc_now,
    wait_bcm_ready,
    wait_engines_seen,
    wait_files_done,
    wait_for_quiet,
    wait_while_alive,
    write_pod5_sources,
)

TARGET_P99_S = 1.0
OTHER_BENCHES = r"bench/(protocol|startup)\.py"
FLOWCELLS = 48
SPEEDS = (1.0, 1.0, 0.5, 0.25)


# -- pickup latency ---------------------------------------------------------------------


IN_PLACE, RENAME = "in place", "rename"


@dataclass
class Pickup:
    layout: str
    mode: str  # "inotify" or "rescan R s"
    arrival: str  # IN_PLACE (written growing under its final name) or RENAME
    files: int
    seconds: float  # the writer's run
    to_queue: list[float] = field(default_factory=list)  # close -> queued (discovered_at)
    to_claim: list[float] = field(default_factory=list)  # close -> job created
    to_engine: list[float] = field(default_factory=list)  # close -> engine has it
    jobs: int = 0
    busy_share: float = 0.0  # engines' time in batches (any generation) over the live run


def job_details(port: int, job_ids: list[int]) -> dict[int, dict]:
    """GET /v1/jobs/{id} of each job."""
    return {j: http_get_json(f"/v1/jobs/{j}", port, timeout=10) or {} for j in job_ids}


def busy_share(details: dict[int, dict], engines: list[str], closed: dict) -> float:
    """The fleet's time in batches (claim to report) within the live run (first to last
    close) over engines x that span."""
    times = [at for at, _ in closed.values()]
    start, end = min(times), max(times)
    busy = sum(
        max(0.0, min(end, d["ended"] or end) - max(start, d["created"]))
        for d in details.values()
        if d.get("created") is not None
    )
    return busy / (len(engines) * (end - start)) if end > start else 0.0


def wait_live_done(port: int, n: int, servers: list, timeout: float) -> None:
    """Until the live generation (id 0) has `n` files done."""

    def live() -> dict:
        status = http_get_json("/v1/generations", port, timeout=10) or {}
        return (status.get("generations") or [{}])[0]

    wait_while_alive(
        lambda: live().get("files", {}).get("done", 0) >= n,
        servers,
        timeout,
        lambda: f"the live generation did not finish: {live()}",
    )


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


def rename_folder(input_dir: Path, layout: str, cell: int) -> Path:
    """Where a rename writer delivers: INPUT itself (flat), or a MinKNOW-like run folder."""
    if layout == "flat":
        return input_dir
    run = f"20250101_0000_R{cell:02d}_RSYNC{cell:02d}_0000abcd"
    return input_dir / "rsync_experiment" / "sample" / run / "pod5"


def write_by_rename(
    input_dir: Path,
    args: argparse.Namespace,
    layout: str,
    t0: float,
    record: Callable[[str, str], None],
    stop: threading.Event,
) -> None:
    """`--rename-cells` writers: each file is written complete under `.<name>.tmp`, then
    renamed to `<name>.pod5` at the end of its interval (staggered between the writers)."""
    from bcmanager.pod5io import write_pod5

    cells = args.rename_cells

    def run_cell(k: int) -> None:
        folder = rename_folder(input_dir, layout, k)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.files):
            slot = t0 + (k + 0.5) * args.interval / cells + (i + 1) * args.interval
            if stop.wait(max(0.0, slot - time.time())):
                return
            name = f"RSYNC{k:02d}_{i:04d}.pod5"
            tmp = folder / f".{name}.tmp"
            write_pod5(tmp, n_reads=args.reads, samples=args.samples, seed=10_000 * k + i)
            if args.rename_age:
                then = time.time() - args.rename_age
                os.utime(tmp, (then, then))
            os.rename(tmp, folder / name)
            record((folder / name).relative_to(input_dir).as_posix(), RENAME)

    with ThreadPoolExecutor(max_workers=cells, thread_name_prefix="rename") as pool:
        for future in [pool.submit(run_cell, k) for k in range(cells)]:
            future.result()


def write_live(
    input_dir: Path, args: argparse.Namespace, layout: str
) -> tuple[dict[str, tuple[float, str]], float]:
    """Run the simulated sequencer (and the rename writers beside it); returns each file's
    close (or rename) time and arrival (by relative path) and how long the run took."""
    from bcmanager.simulate import WrittenFile, simulate_run

    closed: dict[str, tuple[float, str]] = {}
    lock = threading.Lock()

    def record(rel: str, arrival: str) -> None:
        at = time.time()
        with lock:
            closed[rel] = (at, arrival)

    def on_file(f: WrittenFile) -> None:
        record(f.path.relative_to(input_dir).as_posix(), IN_PLACE)

    stop = threading.Event()
    failed: list[BaseException] = []

    def renames() -> None:
        try:
            write_by_rename(input_dir, args, layout, t0, record, stop)
        except BaseException as exc:  # reported after the run
            failed.append(exc)

    t0 = time.time()
    writer = threading.Thread(target=renames, name="renames", daemon=True)
    if args.rename_cells:
        writer.start()
    try:
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
    except BaseException:
        stop.set()
        raise
    finally:
        if args.rename_cells:
            writer.join()
    if failed:
        raise RuntimeError("a rename writer failed") from failed[0]
    return closed, max(result.elapsed_s, time.time() - t0)


def run_pickup(
    work: Path, args: argparse.Namespace, layout: str, watch: bool, backfill_s: float | None = None
) -> list[Pickup]:
    """Pickup latencies of one live run. With `backfill_s`: engines that run any model
    (a command template naming `{model}`), a live generation (instant batches) and a
    backfill one whose batches take `backfill_s`; without: the same engines, one
    generation. Only live batches count toward the latencies."""
    mode = "inotify" if watch else f"rescan {args.rescan:g} s"
    if backfill_s is not None:
        mode += ", backfill" if backfill_s else ", no backfill"
    remove_tree(work)
    (work / "input").mkdir(parents=True)
    port = free_port()
    extra = [] if watch else ["--no-watch", "--rescan", repr(args.rescan)]
    if backfill_s:
        extra += ["--generation", "live=fast", "--generation", "sup=sup"]
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
    if backfill_s is not None:  # a sup batch takes backfill_s, anything else no time
        script = f'case "$1" in sup) sleep {backfill_s:g};; esac'
        options = [
            "--basecaller",
            "command",
            "--command",
            f"sh -c '{script}' sh {{model}} {{output}}",
        ]
    try:
        wait_bcm_ready(manager)
        for name, log in zip(names, logs, strict=True):
            started.append(start_bcm_engine(name, port, log, options))
        wait_engines_seen(port, names, started)
        events = EventLog(port)
        closed, seconds = write_live(work / "input", args, layout)
        if backfill_s:
            wait_live_done(port, len(closed), started, timeout=120)
        else:
            wait_files_done(events, len(closed), started, timeout=120)
        events.poll()
        created = events.job_times("assigned")
        details = job_details(port, sorted(created))
        files = {j: list(d.get("files", [])) for j, d in details.items() if not d.get("gen")}
    finally:
        for s in reversed(started):
            kill_tree(s)
    engine_has: dict[int, float] = {}
    for log in logs:
        engine_has.update(engine_job_starts(log))
    queued = discovered_at(work / "output" / ".bcmanager" / "ledger.sqlite3")
    arrivals = [a for a in (IN_PLACE, RENAME) if any(k == a for _, k in closed.values())]
    results = {
        a: Pickup(layout, mode, a, sum(k == a for _, k in closed.values()), seconds)
        for a in arrivals
    }
    job_ids: dict[str, set[int]] = {a: set() for a in arrivals}
    for job_id, paths in files.items():
        for path in paths:
            at, arrival = closed[path]
            result = results[arrival]
            job_ids[arrival].add(job_id)
            if path in queued:
                result.to_queue.append(queued[path] - at)
            result.to_claim.append(created[job_id] - at)
            result.to_engine.append(engine_has[job_id] - at)
    for arrival, result in results.items():
        result.jobs = len(job_ids[arrival])
        result.busy_share = busy_share(details, names, closed)
    claims = sum(len(r.to_claim) for r in results.values())
    if claims != len(closed):
        raise RuntimeError(f"{claims} claims for {len(closed)} files")
    return list(results.values())


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
    "arrival",
    "files",
    "jobs (with such files)",
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
            r.arrival,
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
                f"close -> engine has it p99, {r.layout}, inotify, {r.arrival}",
                f"{p99:.3f} s",
                f"<= {TARGET_P99_S:g} s",
                "met" if p99 <= TARGET_P99_S else "NOT met",
            ]
        )
    return out


def rename_note(args: argparse.Namespace) -> str:
    if not args.rename_cells:
        return "- rename arrivals: none (`--rename-cells 0`)."
    age = (
        f"its mtime set {args.rename_age:g} s back just before the rename (as `rsync -t`"
        " keeps the source's)"
        if args.rename_age
        else "its mtime left as written (less than a second old at the rename)"
    )
    return (
        f"- rename arrivals, in the same runs: {args.rename_cells} more writers, each"
        f" delivering a file every {args.interval:g} s (staggered; {args.files} files each,"
        f" {args.reads} reads x ~{args.samples} samples): a complete pod5 written under a"
        " hidden temporary name in the target folder (`.<name>.tmp`, as rsync does), then"
        f" `os.rename`d to `<name>.pod5`; {age}. Flat layout: into INPUT beside the"
        " simulator's files; MinKNOW layout: into their own run folders"
        " (`rsync_experiment/sample/<run>/pod5/`). close: the moment the rename returned."
    )


def pickup_json(pickups: list[Pickup]) -> dict:
    """The pickup results with every latency, and what produced them (for --before-json)."""
    return {
        "code": CODE.describe,
        "date": utc_now(),
        "command": command_line(),
        "load": [LOAD_AT_START, load_average()],
        "pickups": [asdict(p) for p in pickups],
    }


SIDE_HEADERS = [
    "layout",
    "discovery",
    "arrival",
    "close -> engine has it p50 s: before / after",
    "ratio",
    "p99 s: before / after",
    "ratio",
    "max s: before / after",
]


def side_rows(before: list[Pickup], after: list[Pickup]) -> list[list[str]]:
    keyed = {(p.layout, p.mode, p.arrival): p for p in before}
    out = []
    for a in after:
        b = keyed.get((a.layout, a.mode, a.arrival))
        b_values = b.to_engine if b is not None else []
        cells = []
        for q in (0.5, 0.99):
            vb, va = percentile(b_values, q), percentile(a.to_engine, q)
            cells += [f"{fmt(vb, 3)} / {fmt(va, 3)}", fmt(va / vb if vb else float("nan"), 3)]
        top_b = max(b_values) if b_values else float("nan")
        out.append(
            [
                a.layout,
                a.mode,
                a.arrival,
                *cells,
                f"{fmt(top_b, 3)} / {fmt(max(a.to_engine, default=float('nan')), 3)}",
            ]
        )
    return out


def report(
    pickups: list[Pickup],
    tails: list[Tail],
    args: argparse.Namespace,
    per_file: float,
    before: dict | None = None,
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
            rename_note(args),
            "",
            markdown_table(PICKUP_HEADERS, p_rows),
        ]
        if t_rows:
            print_table("targets", t_headers, t_rows)
            parts += ["", markdown_table(t_headers, t_rows)]
        if before is not None:
            earlier = [Pickup(**p) for p in before.get("pickups", [])]
            s_rows = side_rows(earlier, pickups)
            print_table("close -> engine has it: before / after", SIDE_HEADERS, s_rows)
            parts += [
                "",
                f"Before / after: before is {before.get('code')}, {before.get('date')},"
                f" `{before.get('command')}` (load {before['load'][0]:.1f} ->"
                f" {before['load'][1]:.1f}); after is the run above"
                f" ({CODE.describe or 'working tree'}). ratio: after / before (below 1 is"
                " better).",
                "",
                markdown_table(SIDE_HEADERS, s_rows),
            ]
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


BACKFILL_HEADERS = [
    "run",
    "files",
    "jobs",
    "close -> queued p50 / p99 / max s",
    "close -> claimed p50 / p99 / max s",
    "close -> engine has it p50 / p99 / max s",
    "fleet busy share",
]


def pooled(pickups: list[Pickup], seconds: float) -> Pickup:
    """One row of several: their files, jobs and latencies together, their mean busy share
    (the rows of one run's arrivals share the run's busy share)."""
    out = Pickup("flat", pickups[0].mode, "all", 0, seconds)
    for r in pickups:
        out.files += r.files
        out.jobs += r.jobs
        out.to_queue += r.to_queue
        out.to_claim += r.to_claim
        out.to_engine += r.to_engine
    out.busy_share = sum(r.busy_share for r in pickups) / len(pickups)
    return out


def backfill_order(repeat: int, backfill_s: float) -> list[float]:
    """Runs without (0) and with backfill in ABBA order, so that a machine whose load drifts
    during the benchmark weighs on both alike."""
    order: list[float] = []
    for i in range(repeat):
        pair = [0.0, backfill_s] if i % 2 == 0 else [backfill_s, 0.0]
        order += pair
    return order


def run_backfill_only(work: Path, args: argparse.Namespace) -> int:
    """Pickup of live runs without and with a backfill generation, alternated."""
    runs: list[tuple[str, float, Pickup]] = []
    try:
        for k, backfill_s in enumerate(backfill_order(args.repeat, args.backfill)):
            label = "with backfill" if backfill_s else "without backfill"
            load = load_average()
            print(f"pickup {label} (run {k + 1}, load {load:.1f}) ...", flush=True)
            found = run_pickup(work / f"backfill-{k}", args, "flat", True, backfill_s)
            merged = pooled(found, found[0].seconds)
            p99 = percentile(merged.to_engine, 0.99)
            print(f"  close -> engine p99 {p99:.3f} s, busy {merged.busy_share:.1%}", flush=True)
            runs.append((label, load, merged))
    finally:
        if not args.keep:
            remove_tree(work)
    results = []
    for label in ("without backfill", "with backfill"):
        mine = [r for lab, _, r in runs if lab == label]
        results.append((f"{label}, {len(mine)} runs pooled", pooled(mine, 0.0)))
    results = [
        (f"{lab} (run {k + 1}, load {load:.1f})", r) for k, (lab, load, r) in enumerate(runs)
    ] + results
    rows = [
        [
            label,
            str(r.files),
            str(r.jobs),
            lat_cell(r.to_queue),
            lat_cell(r.to_claim),
            lat_cell(r.to_engine),
            f"{r.busy_share:.1%}",
        ]
        for label, r in results
    ]
    base, with_b = (percentile(r.to_engine, 0.99) for _, r in results[-2:])
    ratio = with_b / base if base else float("inf")
    body = "\n".join(
        [
            section_header("Live pickup beside a backfill generation (`bench/live.py --backfill`)"),
            f"- setup: the pickup run of the live section (flat layout, inotify, {FLOWCELLS}"
            f" flow cells writing in place plus {args.rename_cells} rename writers,"
            f" {args.engines} engines), its engines a `command` template naming"
            " `{model}`: a live batch takes no time, a backfill (`sup`) batch"
            f" {args.backfill:g} s. With backfill the manager has `--generation live=fast"
            " --generation sup=sup` (default live window): every file written is queued for"
            " sup too. fleet busy share: engines' time in batches of either generation"
            " (claim to report) between the first and last close, over engines x that span."
            " Runs alternate without / with backfill in ABBA order (`--repeat`); load: the"
            " machine's 1-minute load average as each run started.",
            "",
            markdown_table(BACKFILL_HEADERS, rows),
            "",
            f"close -> engine has it, p99 with / without backfill: {ratio:.2f}"
            f" (wanted <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}).",
        ]
    )
    print(body)
    if not args.no_doc:
        update_doc("live-backfill", body)
        print("updated docs/benchmarks.md")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", type=float, default=4.0, help="s between a flow cell's files")
    p.add_argument("--files", type=int, default=15, help="files per flow cell")
    p.add_argument("--reads", type=int, default=8, help="reads per live file")
    p.add_argument("--samples", type=int, default=2000, help="samples per read (about)")
    p.add_argument("--engines", type=int, default=4, help="engines in the pickup runs")
    p.add_argument("--rescan", type=float, default=1.0, help="rescan interval without inotify")
    p.add_argument(
        "--rename-cells", type=int, default=12, help="writers delivering by rename (0: none)"
    )
    p.add_argument(
        "--rename-age", type=float, default=0.0, help="mtime of renamed files, s back (0: new)"
    )
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
    p.add_argument(
        "--backfill",
        type=float,
        metavar="S",
        help="only: pickup without and with a backfill generation whose batches take S s"
        " (flat layout, inotify), into the section live-backfill",
    )
    p.add_argument(
        "--repeat", type=int, default=2, help="with --backfill: pairs of runs, in ABBA order"
    )
    p.add_argument("--json-out", type=Path, help="write the pickup latencies here (JSON)")
    p.add_argument("--before-json", type=Path, help="pickup latencies to compare against")
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
    if args.backfill is not None:
        return run_backfill_only(work, args)
    pickups: list[Pickup] = []
    tails: list[Tail] = []
    per_file = 0.0
    try:
        for layout in args.layouts:
            for mode in args.modes:
                print(f"pickup: {layout} layout, {mode} ...", flush=True)
                found = run_pickup(
                    work / f"pickup-{layout}-{mode}", args, layout, mode == "inotify"
                )
                for r in found:
                    print(
                        f"  {r.arrival}: {r.files} files in {r.seconds:.0f} s; close ->"
                        f" engine p50 {percentile(r.to_engine, 0.5):.3f} s, p99"
                        f" {percentile(r.to_engine, 0.99):.3f} s",
                        flush=True,
                    )
                pickups += found
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
    if args.json_out:
        args.json_out.write_text(json.dumps(pickup_json(pickups), indent=1) + "\n")
        print(f"wrote {args.json_out}")
    before = json.loads(args.before_json.read_text()) if args.before_json else None
    body = report(pickups, tails, args, per_file, before)
    if not args.no_doc:
        update_doc("live", body)
        print("updated docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
