"""A fleet: one manager, N simulated engines, real HTTP (issue 12, "A fleet").

One real `bcm manager` process (its CPU and peak RSS read from /proc) and N simulated
engines in worker processes of this script (asyncio on uvloop, one `httpx.AsyncClient`
of at most 2 connections per engine, as real engines each have their own), over real
HTTP on 127.0.0.1. Each engine loops like `bcm engine` does on the v1 API:

    POST /v1/claim {engine_id, max_files, wait_s}        (long-poll, wait_s 30)
    hold the batch for uniform(20, 60) s / SCALE, heartbeating every heartbeat_s
        (the manager's lease / 3; the lease is 90 s / SCALE)
    POST /v1/jobs/{id}/complete {token, outcome: "done"}  (no yields; the output
        folder the manager made stays empty, so the merge moves nothing)

Engines start staggered over one mean batch, and stop claiming at the end of the run
(each ends the batch it holds at once and reports it). Heartbeats and reports are sent
again after a transport error (up to 5 times, 1 s apart), as `bcm engine` does. Times are Dorado's divided by SCALE
(`--time-scale`, 1 by default: real time): every request rate is SCALE times what the same fleet
sends in real time, so N engines here load the manager like N x SCALE real ones.

Work: MinKNOW run folders (`fleet_XX/sample/<run>/pod5/`) of hard links of a few small
real pod5 files (written with `bcmanager.pod5io.write_pod5`, mtime an hour back, as
rsync -t delivers them). A backlog is linked before the manager starts (it queues it at
start), and during the run a writer links new files into the run folders, round robin,
each flow cell a file every `--cell-interval` s, as many flow cells as make the fleet's
pace: backlog and feed are sized from the fleet's consumption (N x files per batch /
mean batch time) so that the queue never runs dry and engines are always busy.

Measured after a warm-up (the ramp plus the longest batch), over `--seconds`:
- claim latency: from sending a claim to its answer, for claims answered with a job
  (the queue is never empty, which the status samples check, so these claims did not
  wait; claims answered without a job are counted apart);
- heartbeat and complete latency, the same way;
- manager CPU share (utime + stime over wall, 1.0 = one core busy) and peak RSS;
- false lease expiries: `/v1/status` jobs.expired at the end (every engine heartbeats,
  so any expiry is false), and heartbeats or completes answered 409 (late);
- errors (transport errors, other non-200 answers);
- the load generator's own CPU and its event-loop lag (p99 and longest of how late a
  50 ms timer fires): a lag near the latencies means the generator, not the manager, is
  the limit (a pause of the generator delays every answer arriving meanwhile).

    python bench/fleet.py [--engines 100,1000,5000] [--seconds 90] [--time-scale 1]
        [--workers 1] [--py-spy DIR [--py-spy-gil]] [--code-at REV] [--no-doc] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from _common import (
    HOST,
    REPO,
    _LinkSource,
    cpu_seconds,
    fmt,
    free_port,
    http_get_json,
    kill_tree,
    markdown_table,
    peak_rss_mib,
    percentile,
    print_table,
    remove_tree,
    run_async,
    section_header,
    start_bcmanager,
    stop_on_sigterm,
    update_doc,
    use_code_at,
    wait_bcm_ready,
    wait_for_quiet,
    write_pod5_sources,
)

TARGET_CLAIM_P99_MS = 100.0
OTHER_BENCHES = r"bench/(protocol|startup|live|e2e|chaos)\.py"
REAL_BATCH_S = (20.0, 60.0)  # a Dorado batch, claim to report
REAL_LEASE_S = 90.0
CELLS_PER_EXPERIMENT = 48  # one PromethION 48 per experiment folder
LAG_TICK_S = 0.05
DRAIN_S = 10.0  # s the fleet goes on after the window, answering the window's last requests
RETRIES = 5  # heartbeats and reports after a transport error, 1 s apart


def raise_nofile() -> tuple[int, int]:
    """Raise this process's open-file limit to the hard limit; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- the engines (in worker processes) ---------------------------------------------------


@dataclass
class EngineSpec:
    port: int
    names: list[str]
    start_at: float  # time.time(): engines start over [start_at, start_at + ramp_s)
    ramp_s: float
    measure_from: float  # time.time(): requests sent before this are not measured
    stop_at: float  # no claim is sent after this
    batch_s: tuple[float, float]
    batch_files: int
    wait_s: float
    seed: int


@dataclass
class EngineStats:
    claim_ms: list[float] = field(default_factory=list)  # claims answered with a job
    heartbeat_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    claim_to_created_ms: list[float] = field(default_factory=list)  # sent -> job created
    empty_claims: int = 0  # long polls answered without a job
    jobs: int = 0  # claimed in the measured window
    late: int = 0  # heartbeats or completes answered 409: the manager expired the lease
    errors: Counter = field(default_factory=Counter)
    lag_ms: list[float] = field(default_factory=list)  # event-loop lag of this process
    cpu_s: float = 0.0  # this process, over the measured window
    window_s: float = 0.0
    requests: int = 0  # sent in the measured window

    def merge(self, other: EngineStats) -> None:
        for name in ("claim_ms", "heartbeat_ms", "complete_ms", "claim_to_created_ms", "lag_ms"):
            getattr(self, name).extend(getattr(other, name))
        self.empty_claims += other.empty_claims
        self.jobs += other.jobs
        self.late += other.late
        self.errors.update(other.errors)
        self.cpu_s += other.cpu_s
        self.window_s = max(self.window_s, other.window_s)
        self.requests += other.requests


def drive(spec: EngineSpec) -> EngineStats:
    """Run `spec.names` engines until `spec.stop_at` (the entry point of a worker)."""
    raise_nofile()
    return run_async(_drive(spec))


async def _drive(spec: EngineSpec) -> EngineStats:
    import ssl

    import httpx

    from bcmanager.cli.manager import calm_garbage_collector

    stats = EngineStats()
    ssl_ctx = ssl.create_default_context()  # one for all clients (each would make its own)
    # keep-alive shorter than uvicorn's 5 s, so no request goes out on a connection the
    # manager is closing at that moment (an engine would retry; its report is then late)
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=4.0)
    base = f"http://{HOST}:{spec.port}"
    clients = [
        httpx.AsyncClient(base_url=base, limits=limits, verify=ssl_ctx, timeout=120.0)
        for _ in spec.names
    ]
    rng = random.Random(spec.seed)

    def measured(sent: float) -> bool:
        return spec.measure_from <= sent < spec.stop_at

    async def call(client: httpx.AsyncClient, what: str, url: str, body: dict, tries: int = 1):
        """POST, again after a transport error (up to `tries` times, 1 s apart, as `bcm
        engine` retries); returns (answer or None, seconds from the first send, time sent)."""
        sent = time.time()
        if measured(sent):
            stats.requests += 1
        t = time.perf_counter()
        for attempt in range(tries):
            try:
                answer = await client.post(url, json=body)
                break
            except httpx.HTTPError as exc:
                stats.errors[f"{what}: {type(exc).__name__}"] += 1
                if attempt + 1 == tries:
                    return None, time.perf_counter() - t, sent
                await asyncio.sleep(1.0)
        took = time.perf_counter() - t
        if answer.status_code == 409:
            stats.late += 1
        elif answer.status_code != 200:
            stats.errors[f"{what}: HTTP {answer.status_code}"] += 1
        return answer, took, sent

    async def hold(client: httpx.AsyncClient, job: dict, seconds: float) -> bool:
        """Heartbeat every heartbeat_s until `seconds` have passed; False if the lease
        was lost."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        every = float(job["heartbeat_s"])
        beat_at = loop.time() + every
        url = f"/v1/jobs/{job['job_id']}/heartbeat"
        while beat_at < end:
            await asyncio.sleep(max(0.0, beat_at - loop.time()))
            beat = {"token": job["token"]}
            answer, took, sent = await call(client, "heartbeat", url, beat, RETRIES)
            if answer is not None and answer.status_code == 409:
                return False
            if answer is not None and answer.status_code == 200 and measured(sent):
                stats.heartbeat_ms.append(took * 1000)
            beat_at += every
        await asyncio.sleep(max(0.0, end - loop.time()))
        return True

    async def engine(name: str, client: httpx.AsyncClient, delay: float) -> None:
        await asyncio.sleep(max(0.0, spec.start_at + delay - time.time()))
        body = {"engine_id": name, "max_files": spec.batch_files, "wait_s": spec.wait_s}
        while time.time() < spec.stop_at:
            answer, took, sent = await call(client, "claim", "/v1/claim", body)
            if answer is None or answer.status_code != 200:
                await asyncio.sleep(1.0)
                continue
            job = answer.json()["job"]
            if job is None:
                stats.empty_claims += 1
                continue
            if measured(sent):
                stats.jobs += 1
                stats.claim_ms.append(took * 1000)
                created = job["lease_expires"] - job["lease_s"]
                stats.claim_to_created_ms.append((created - sent) * 1000)
            if not await hold(client, job, rng.uniform(*spec.batch_s)):
                continue  # lease lost: drop the batch, as an engine does
            done = {"token": job["token"], "outcome": "done"}
            answer, took, sent = await call(
                client, "complete", f"/v1/jobs/{job['job_id']}/complete", done, RETRIES
            )
            if answer is not None and answer.status_code == 200 and measured(sent):
                stats.complete_ms.append(took * 1000)

    async def lag_monitor() -> None:
        loop = asyncio.get_running_loop()
        while time.time() < spec.stop_at:
            want = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            if time.time() >= spec.measure_from:
                stats.lag_ms.append(max(0.0, loop.time() - want) * 1000)

    async def cpu_window() -> None:
        await asyncio.sleep(max(0.0, spec.measure_from - time.time()))
        c0, w0 = time.process_time(), time.time()
        await asyncio.sleep(max(0.0, spec.stop_at - time.time()))
        stats.cpu_s, stats.window_s = time.process_time() - c0, time.time() - w0

    delays = [rng.uniform(0, spec.ramp_s) for _ in spec.names]
    tasks = [
        asyncio.ensure_future(c)
        for c in (
            lag_monitor(),
            cpu_window(),
            *(engine(n, c, d) for n, c, d in zip(spec.names, clients, delays, strict=True)),
        )
    ]
    # as `bcm manager` does for itself: with Python's defaults a full collection walked
    # 5,000 engines' clients and tasks for ~600 ms every ~7 s, every answer arriving
    # meanwhile was measured that much late, and the requests held back reached the
    # manager as one burst
    calm_garbage_collector()
    try:
        # after the window the fleet goes on at its pace until the window's last requests
        # are answered, then stops where it is (batches cut at the window's end made
        # every engine report at once: a burst the window's last requests waited behind)
        done, pending = await asyncio.wait(
            tasks, timeout=max(0.0, spec.stop_at + DRAIN_S - time.time())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        for c in clients:
            await c.aclose()
    return stats


# -- the input: backlog and live feed -----------------------------------------------------


@dataclass
class Cells:
    """The flow cells' MinKNOW run folders and the files linked into them."""

    folders: list[tuple[Path, str]]  # each run's pod5 folder and flow cell
    links: _LinkSource
    count: int = 0  # files linked
    fed: int = 0  # of them, by the live feed

    def link_next(self) -> None:
        folder, flowcell = self.folders[self.count % len(self.folders)]
        self.links.link(folder / f"{flowcell}_{self.count // len(self.folders):07d}.pod5")
        self.count += 1


def make_cells(input_dir: Path, n: int, source: Path) -> Cells:
    folders = []
    for k in range(n):
        exp = input_dir / f"fleet_{k // CELLS_PER_EXPERIMENT:03d}" / "sample"
        position = f"{1 + k % 3}{'ABCDEFGH'[k % 8]}"
        flowcell = f"PAY{k:05d}"
        folder = exp / f"20260101_0000_{position}_{flowcell}_{k:08x}" / "pod5"
        folder.mkdir(parents=True)
        folders.append((folder, flowcell))
    return Cells(folders, _LinkSource(source))


def feed(cells: Cells, rate: float, start: float, stop: threading.Event) -> None:
    """Link files into the run folders at `rate` a second (round robin), from `start`."""
    while not stop.wait(0.02):
        due = int((time.time() - start) * rate) - cells.fed
        for _ in range(max(0, due)):
            cells.link_next()
            cells.fed += 1


# -- one run -----------------------------------------------------------------------------


@dataclass
class FleetRun:
    engines: int
    workers: int
    stats: EngineStats
    seconds: float  # the measured window
    manager_cpu: float  # share of one core over the window
    manager_rss_mib: float
    expired: int  # jobs the manager expired (false: every engine heartbeats)
    backlog: int
    fed: int
    feed_rate: float
    cells: int
    min_queued: int | None  # least `files.queued` seen by the status samples in the window
    jobs_done: int
    nofile: tuple[int, int]
    profile: Path | None = None


def wait_queued(port: int, n: int, timeout: float = 600.0) -> float:
    started = time.monotonic()
    while True:
        status = http_get_json("/v1/status", port, timeout=60) or {}
        if status.get("files", {}).get("queued", 0) >= n:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"backlog of {n} not queued after {timeout:.0f} s: {status}")
        time.sleep(0.5)


def start_py_spy(
    pid: int, out: Path, seconds: float, gil_only: bool = False
) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        print("  (py-spy not installed in the venv: no profile)", flush=True)
        return None
    cmd = [str(exe), "record", "-p", str(pid), "-r", "50", "-f", "raw", "-o", str(out)]
    cmd += ["-d", str(max(1, int(seconds))), "--nonblocking"]
    if gil_only:
        cmd.append("--gil")
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - lives as long as py-spy
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def run_fleet(n: int, args: argparse.Namespace, work: Path) -> FleetRun:
    remove_tree(work)
    input_dir, output_dir = work / "input", work / "output"
    input_dir.mkdir(parents=True)
    scale = args.time_scale
    batch_s = (REAL_BATCH_S[0] / scale, REAL_BATCH_S[1] / scale)
    mean_batch = sum(batch_s) / 2
    lease = REAL_LEASE_S / scale
    ramp = mean_batch
    warmup = args.warmup if args.warmup is not None else ramp + batch_s[1]
    consumption = n * args.batch_files / mean_batch  # files a second, engines always busy
    window = warmup + args.seconds + batch_s[1]
    feed_rate = args.feed * consumption
    backlog = math.ceil(args.backlog * consumption * window) + n * args.batch_files
    n_cells = max(CELLS_PER_EXPERIMENT, math.ceil(feed_rate * args.cell_interval))

    (source,) = [p for p, _ in write_pod5_sources(work / "sources", 1, 2, 1000)]
    cells = make_cells(input_dir, n_cells, source)
    for _ in range(backlog):
        cells.link_next()
    print(
        f"  {n} engines: backlog {backlog:,} files in {n_cells} run folders, feed"
        f" {feed_rate:,.0f} files/s, batches {batch_s[0]:g}-{batch_s[1]:g} s, lease"
        f" {lease:g} s",
        flush=True,
    )
    port = free_port()
    manager = start_bcmanager(
        input_dir,
        output_dir,
        work / "logs" / "manager.log",
        port=port,
        lease_s=lease,
        batch_size=args.batch_files,
        extra=["--output-layout", args.output_layout, "--target-batch", repr(mean_batch)],
    )
    stop = threading.Event()
    writer: threading.Thread | None = None
    spy: subprocess.Popen[bytes] | None = None
    profile = None
    try:
        wait_bcm_ready(manager, timeout=120)
        took = wait_queued(port, backlog)
        print(f"  backlog queued {took:.1f} s after the manager answered", flush=True)
        names = [f"fleet-{i:05d}" for i in range(n)]
        workers = max(1, min(args.workers, n))
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            list(pool.map(raise_nofile_quietly, range(workers)))  # workers up first
            start = time.time() + 1.0
            measure_from = start + warmup
            stop_at = measure_from + args.seconds
            futures = [
                pool.submit(
                    drive,
                    EngineSpec(
                        port=port,
                        names=names[w::workers],
                        start_at=start,
                        ramp_s=ramp,
                        measure_from=measure_from,
                        stop_at=stop_at,
                        batch_s=batch_s,
                        batch_files=args.batch_files,
                        wait_s=args.wait_s,
                        seed=1000 * n + w,
                    ),
                )
                for w in range(workers)
            ]
            writer = threading.Thread(
                target=feed, args=(cells, feed_rate, start, stop), name="feed", daemon=True
            )
            writer.start()
            time.sleep(max(0.0, measure_from - time.time()))
            cpu0, wall0 = cpu_seconds(manager.pid), time.monotonic()
            if args.py_spy is not None:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                profile = args.py_spy / f"fleet-{n}.txt"
                spy = start_py_spy(manager.pid, profile, args.seconds, args.py_spy_gil)
            queued: list[int] = []
            while time.time() < stop_at:
                time.sleep(min(args.status_every, max(0.0, stop_at - time.time())))
                if not manager.alive():
                    raise RuntimeError(f"the manager died:\n{manager.log_tail()}")
                status = http_get_json("/v1/status", port, timeout=60)
                if status is not None:
                    queued.append(int(status["files"]["queued"]))
            cpu1, wall1 = cpu_seconds(manager.pid), time.monotonic()
            stats = EngineStats()
            for f in futures:
                stats.merge(f.result())
        stop.set()
        writer.join()
        status = http_get_json("/v1/status", port, timeout=120) or {}
        rss = peak_rss_mib(manager.pid)
        if spy is not None:
            spy.wait(timeout=60)
    finally:
        stop.set()
        if spy is not None and spy.poll() is None:
            spy.terminate()
        kill_tree(manager)
    jobs = status.get("jobs", {})
    return FleetRun(
        engines=n,
        workers=workers,
        stats=stats,
        seconds=wall1 - wall0,
        manager_cpu=(cpu1 - cpu0) / (wall1 - wall0),
        manager_rss_mib=rss,
        expired=int(jobs.get("expired", 0)) + int(jobs.get("late", 0)),
        backlog=backlog,
        fed=cells.fed,
        feed_rate=feed_rate,
        cells=n_cells,
        min_queued=min(queued) if queued else None,
        jobs_done=int(jobs.get("done", 0)),
        nofile=resource.getrlimit(resource.RLIMIT_NOFILE),
        profile=profile,
    )


def raise_nofile_quietly(_: int) -> tuple[int, int]:
    return raise_nofile()


# -- report -------------------------------------------------------------------------------

HEADERS = [
    "engines",
    "req/s",
    "claims (with a job)",
    "claim p50 / p99 ms",
    "claim sent -> job created p50 / p99 ms",
    "heartbeat p50 / p99 ms",
    "complete p50 / p99 ms",
    "manager CPU",
    "manager peak RSS MiB",
    "false expiries",
    "errors",
    "least queued",
    "generator CPU / loop lag p99 / max ms",
]


def p50_p99(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{fmt(percentile(values, 0.5), 1)} / {fmt(percentile(values, 0.99), 1)}"


def passes(r: FleetRun) -> bool:
    s = r.stats
    return (
        bool(s.claim_ms)
        and percentile(s.claim_ms, 0.99) <= TARGET_CLAIM_P99_MS
        and r.expired == 0
        and s.late == 0
    )


def rows(runs: list[FleetRun]) -> list[list[str]]:
    out = []
    for r in runs:
        s = r.stats
        errors = sum(s.errors.values())
        out.append(
            [
                f"{r.engines:,}",
                fmt(s.requests / r.seconds, 0),
                f"{len(s.claim_ms):,}" + (f" (+{s.empty_claims} empty)" if s.empty_claims else ""),
                p50_p99(s.claim_ms),
                p50_p99(s.claim_to_created_ms),
                p50_p99(s.heartbeat_ms),
                p50_p99(s.complete_ms),
                f"{r.manager_cpu:.0%}",
                fmt(r.manager_rss_mib, 0),
                f"{r.expired} expired, {s.late} late answers",
                str(errors) if not errors else "; ".join(f"{k}: {v}" for k, v in s.errors.items()),
                "-" if r.min_queued is None else f"{r.min_queued:,}",
                f"{s.cpu_s / max(s.window_s, 1e-9):.0%} / {fmt(percentile(s.lag_ms, 0.99), 1)}"
                f" / {fmt(max(s.lag_ms, default=0.0), 0)}",
            ]
        )
    return out


def summary(r: FleetRun) -> dict[str, float]:
    """One run's headline numbers, for `--json` (what `bench/fleet_compare.py` reads)."""
    s = r.stats

    def p(values: list[float], q: float) -> float:
        return percentile(values, q) if values else float("nan")

    return {
        "engines": r.engines,
        "claim_p50_ms": p(s.claim_ms, 0.5),
        "claim_p99_ms": p(s.claim_ms, 0.99),
        "created_p99_ms": p(s.claim_to_created_ms, 0.99),
        "heartbeat_p99_ms": p(s.heartbeat_ms, 0.99),
        "complete_p99_ms": p(s.complete_ms, 0.99),
        "manager_cpu": r.manager_cpu,
        "generator_lag_p99_ms": p(s.lag_ms, 0.99),
        "generator_lag_max_ms": max(s.lag_ms, default=float("nan")),
        "false_expiries": r.expired + s.late,
        "errors": sum(s.errors.values()),
    }


def report(runs: list[FleetRun], args: argparse.Namespace) -> str:
    scale = args.time_scale
    lo, hi = REAL_BATCH_S[0] / scale, REAL_BATCH_S[1] / scale
    ok = [r.engines for r in runs if passes(r)]
    best = max(ok) if ok else None
    verdict = (
        f"largest fleet with claim p99 <= {TARGET_CLAIM_P99_MS:g} ms and no false expiry:"
        f" **{best:,} engines** (of {', '.join(f'{r.engines:,}' for r in runs)})"
        if best is not None
        else f"no fleet size met claim p99 <= {TARGET_CLAIM_P99_MS:g} ms with no false expiry"
    )
    nofile = runs[0].nofile if runs else (0, 0)
    setup = (
        f"- setup: one `bcm manager --lease {REAL_LEASE_S / scale:g} --batch-size"
        f" {args.batch_files} --target-batch {(lo + hi) / 2:g} --output-layout"
        f" {args.output_layout}` (defaults otherwise: inotify, `--settle 1`, `--rescan 10`);"
        f" N simulated engines in {args.workers} worker process(es) of the benchmark (asyncio"
        " on uvloop, an `httpx.AsyncClient` of at most 2 connections each), real HTTP on"
        f" 127.0.0.1. Each engine: `POST /v1/claim` (max_files {args.batch_files}, wait_s"
        f" {args.wait_s:g}), holds the batch uniform({lo:g}, {hi:g}) s while heartbeating"
        " every heartbeat_s (lease / 3), then `complete` with outcome done (no yields, an"
        f" empty output folder). Time scale {scale:g}: Dorado's 20-60 s batches and a 90 s"
        f" lease divided by {scale:g}, so N engines here send what {scale:g} x N real ones"
        " would. Engines start over one mean batch; the first"
        f" {args.warmup if args.warmup is not None else (lo + hi) / 2 + hi:g} s (ramp and the"
        f" longest batch) are not measured, then {args.seconds:g} s are; the engines go on"
        f" {DRAIN_S:g} s more (no new claims) and stop in mid-batch."
    )
    work = (
        "- work: hard links of a small real pod5 (2 reads, mtime an hour back) in MinKNOW"
        " run folders (`fleet_XXX/sample/<run>/pod5/`, 48 flow cells per experiment"
        " folder): a backlog linked before the manager starts (queued before the engines"
        " start), then a writer linking new files round robin into the run folders"
        f" (each flow cell a file every {args.cell_interval:g} s, as many flow cells as make"
        f" {args.feed:g} x the fleet's consumption). least queued: the fewest queued files"
        f" that `/v1/status` (every {args.status_every:g} s) saw in the window; above 0 means"
        " every claim found work waiting, so claim latency is the manager's answer time,"
        " not a long-poll wait."
    )
    measures = (
        "- latency: from sending a request to its answer, in the engine, for requests sent in"
        " the measured window (claims: those answered with a job; sent -> job created: to"
        " the manager's clock when it created the job, `lease_expires - lease_s`, so the rest"
        " of a claim's time is building, sending and reading the answer). req/s: requests sent in"
        " the window per second. manager CPU: utime + stime over wall, 100 % = one core."
        " false expiries: `/v1/status` jobs expired (and late) at the end, and heartbeats or"
        " completes answered 409 (every engine heartbeats, so any is false). generator:"
        " the worker processes' CPU over the window and the p99 and longest of their"
        " event-loop lag (a 50 ms timer's lateness); a lag near the latencies means the"
        " measurement, not the manager, is the limit. Each worker freezes its engines'"
        " clients and tasks out of garbage collection and makes full collections rare, as"
        f" `bcm manager` does. RLIMIT_NOFILE raised to {nofile[0]:,} (the hard limit);"
        " each engine holds up to 2 connections, each one a descriptor on each side."
        " Heartbeats and completes are sent again after a transport error (up to"
        f" {RETRIES} times, 1 s apart, as `bcm engine` does; each error is counted, and the"
        " latency runs from the first try); client timeout 120 s (`bcm engine`'s is 10 s)."
        " Engines keep connections alive 4 s, below uvicorn's 5 s."
    )
    runs_note = "; ".join(
        f"{r.engines:,} engines: backlog {r.backlog:,} files, feed {r.feed_rate:,.0f} files/s"
        f" into {r.cells} run folders ({r.fed:,} linked), {r.stats.jobs:,} jobs claimed in the"
        f" window, {r.jobs_done:,} done in all"
        for r in runs
    )
    parts = [
        section_header("A fleet: one manager, N engines (`bench/fleet.py`)"),
        setup,
        work,
        measures,
        f"- runs: {runs_note}.",
        "",
        markdown_table(HEADERS, rows(runs)),
        "",
        f"Result: {verdict}.",
    ]
    if args.note:
        parts += ["", args.note]
    return "\n".join(parts)


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="100,1000,5000", help="fleet sizes, comma-separated")
    p.add_argument("--seconds", type=float, default=90.0, help="measured seconds per fleet")
    p.add_argument("--warmup", type=float, help="s not measured [ramp + longest batch]")
    p.add_argument("--time-scale", type=float, default=1.0, help="Dorado's times / this")
    p.add_argument("--batch-files", type=int, default=2, help="max_files of each claim")
    p.add_argument("--wait-s", type=float, default=30.0, help="long-poll of a claim")
    p.add_argument("--workers", type=int, default=1, help="engine worker processes")
    p.add_argument("--feed", type=float, default=0.6, help="live feed, x consumption")
    p.add_argument("--backlog", type=float, default=0.6, help="backlog, x run's consumption")
    p.add_argument("--cell-interval", type=float, default=2.0, help="s between a cell's files")
    p.add_argument("--status-every", type=float, default=10.0, help="s between status samples")
    p.add_argument("--output-layout", default="minknow", choices=["minknow", "legacy"])
    p.add_argument("--py-spy", type=Path, metavar="DIR", help="profile the manager (raw)")
    p.add_argument(
        "--py-spy-gil", action="store_true", help="profile only the interpreter lock's holder"
    )
    p.add_argument("--workdir", type=Path, default=REPO / "bench" / "_work", help="scratch")
    p.add_argument("--keep", action="store_true", help="keep the scratch folders")
    p.add_argument("--code-at", metavar="REV", help="run bcmanager from this commit")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--no-wait", action="store_true", help="do not wait for other benchmarks")
    p.add_argument("--note", default="", help="a paragraph appended to the doc section")
    p.add_argument("--json", type=Path, metavar="FILE", help="write each run's numbers here")
    args = p.parse_args(argv)
    args.engines = [int(x.replace(",", "").replace("_", "")) for x in args.engines.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    soft, hard = raise_nofile()
    need = 2 * max(args.engines) + 1000  # in the manager and in the generator each
    if soft < need:
        print(
            f"warning: RLIMIT_NOFILE is {soft:,} (hard {hard:,}); {max(args.engines):,} engines"
            f" need about {need:,} in each process (up to 2 connections an engine)",
            flush=True,
        )
    work = args.workdir / "fleet"
    remove_tree(work)
    work.mkdir(parents=True)
    code = use_code_at(args.code_at, work)
    if code.src is not None:
        sys.path.insert(0, str(code.src))
    if not args.no_wait:
        wait_for_quiet(OTHER_BENCHES)
    runs: list[FleetRun] = []
    try:
        for n in args.engines:
            print(f"fleet of {n:,} engines ...", flush=True)
            r = run_fleet(n, args, work / f"n{n}")
            runs.append(r)
            print("  " + "; ".join(f"{h}: {c}" for h, c in zip(HEADERS, rows([r])[0], strict=True)))
            if not args.keep:
                shutil.rmtree(work / f"n{n}", ignore_errors=True)
    finally:
        if not args.keep:
            remove_tree(work)
    if args.json is not None:
        args.json.write_text(json.dumps([summary(r) for r in runs], indent=1), encoding="utf-8")
    body = report(runs, args)
    print_table("fleet", HEADERS, rows(runs))
    print(body.rsplit("\n", 1)[-1])
    if not args.no_doc:
        update_doc("fleet", body)
        print("updated docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
