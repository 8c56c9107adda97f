"""Legacy-protocol throughput: bcmanager against the original BC-pipelines manager.

Closed-loop load: each client loops

    GET /assignwork?engineid=cN&batchsize=1
    GET /keepalive?job_id=J&job_state=PROCESSING
    (write the job's FASTQ under TMPOUTPUT_<job>_<engine>/pass/, as an original engine does)
    GET /completed?job_id=J&job_state=DONE

at 1, 8 and 32 concurrent clients, for a fixed time per point, against bcmanager in
both OUTPUT layouts, the default first, and then against the original Flask manager,
each on port 40765 in turn and each point over a fresh server and a fresh input
folder of N hard links of one small real pod5 file (the original lists its input only
when it starts):

- `bcmanager`: the default layout, `minknow`: a job's FASTQ is merged into the run
  folder of the job's pod5 (`OUTPUT/<run folder>/fastq_pass/job_id_<job>_NAME`);
- `bcmanager-legacy`: `--output-layout legacy`, the original's names: the FASTQ goes
  to `OUTPUT/pass/job_id_<job>_NAME`;
- `original`: the original BC-pipelines manager.

Each bcmanager variant is compared with the original (ratios per client count), and
at the top client count against issue 23's goals, which are stated for the default
layout: req/s at least 1.5 times the original's, server CPU per request at most 0.6
times, and the p99 latency of every call (assignwork, keepalive, completed) at most
half the original's.

Measured per point: requests per second, p50/p99 latency per route, and the
server's CPU time per request (utime + stime of the server process over the
measured window, from /proc/PID/stat, divided by the requests answered in it).
The load generator is Python on the same (small) machine, so it caps req/s; the
server CPU per request is the fair number.

The load generator speaks HTTP/1.1 over raw asyncio streams (on uvloop), keeping
connections alive where the server allows it and reconnecting where it answers
`Connection: close` (the original's Werkzeug server does, on every request).
`--client httpx` uses httpx.AsyncClient with a pool instead; on the 2-core
development machine httpx spent 10 to 50 times the client CPU per request of the
raw streams (1.2-3.5 ms against 0.06-0.2 ms) and so capped req/s much lower, which
is why raw is the default.

    python bench/protocol.py [--seconds 10] [--clients 1,8,32] [--files 200000] [--no-fastq]
                             [--servers bcmanager,bcmanager-legacy,original]

`--rounds N` measures every server N times, the order reversed every other round, and
pools each point's runs. Every point has a folder of its own, all removed when the run
ends, and the first waits `--settle-s` (90 s): on this machine's ext4 a folder or file
made within a minute of many being removed costs several times more (the allocator looks
past each inode freed lately; docs/benchmarks.md, "the ext4 allocator"), so a point
measured right after another's folders went paid for them.

`--ab REV [--rounds N]` compares this working tree's bcmanager with commit REV instead,
default layout only, at the top client count: N rounds in the order A B, B A, A B, ...
(each run of a sequence here is slower than the one before, so a fixed order would favour
whichever runs first); it prints each run and the mean ratios, and writes nothing to
docs/benchmarks.md.

`--manager-arg=ARG` (repeatable) passes ARG on to `bcm manager` (both variants), e.g.
`--manager-arg=--no-watch` (inotify off, rescans only); such a run is labelled with
its arguments and written to its own section of docs/benchmarks.md
(`protocol-no-watch`), right after the default one, which it leaves alone. Where ARG
names a layout (`--output-layout=legacy`), `bcmanager` runs in it, and
`bcmanager-legacy` is left out when that would measure the same layout twice.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from _common import (
    DOC,
    HOST,
    PORT,
    REPO,
    Server,
    fmt,
    free_disk_gib,
    http_get_json,
    make_farm,
    markdown_table,
    print_table,
    ratio,
    remove_tree,
    run_async,
    section_header,
    start_bcmanager,
    start_original,
    start_when_port_free,
    stop_on_sigterm,
    update_doc,
    use_code_at,
    wait_port_free,
    wait_until,
    working_tree,
    write_source_pod5,
)

ROUTES = ("assignwork", "keepalive", "completed")
SERVERS = ("bcmanager", "bcmanager-legacy", "original")  # the order they run and are listed in
# bcmanager's variants: the extra `bcm manager` arguments that make each (after --manager-arg)
VARIANTS: dict[str, tuple[str, ...]] = {
    "bcmanager": (),
    "bcmanager-legacy": ("--output-layout", "legacy"),
}
GOAL_LAYOUT = "minknow"  # issue 23's goals are stated for the default layout
# Issue 23's goals at the top client count, as bcmanager / original ratios.
GOALS = {"rps": 1.5, "cpu": 0.6, "p99": 1 / 2}

Getter = Callable[[str], Awaitable[tuple[int, bytes]]]


# -- HTTP clients -----------------------------------------------------------------------


class RawConnection:
    """One HTTP/1.1 connection over asyncio streams; reconnects after `Connection: close`."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.connects += 1
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, headers, keep = _parse_head(head)
        length = headers.get("content-length")
        if length is not None:
            body = await self.reader.readexactly(int(length))
        else:
            body, keep = await self.reader.read(), False
        if not keep:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip().lower()
    connection = headers.get("connection", "")
    keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    return int(status), headers, keep


class HttpxClient:
    """The same calls through httpx.AsyncClient (one shared pool)."""

    def __init__(self, host: str, port: int, clients: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        self.client = httpx.AsyncClient(base_url=f"http://{host}:{port}", limits=limits)
        self.connects = 0

    async def get(self, path: str) -> tuple[int, bytes]:
        resp = await self.client.get(path)
        return resp.status_code, resp.content

    async def close(self) -> None:
        await self.client.aclose()


# -- one measured point -----------------------------------------------------------------


@dataclass
class Window:
    start: float = float("inf")
    end: float = float("inf")
    stop: bool = False

    def inside(self, t: float) -> bool:
        return self.start <= t <= self.end


@dataclass
class PointResult:
    server: str
    clients: int
    seconds: float
    requests: int = 0
    errors: int = 0
    dry: int = 0
    connects: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROUTES})
    scan_s: float | None = None  # bcmanager's last finished input scan: its duration
    scan_overlap_s: float | None = None  # and how much of it fell in the measured window
    wall_window: tuple[float, float] = (0.0, 0.0)  # the measured window, time.time()

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_req(self) -> float:
        return 1000 * self.server_cpu_s / self.requests if self.requests else float("nan")

    @property
    def client_ms_per_req(self) -> float:
        return 1000 * self.client_cpu_s / self.requests if self.requests else float("nan")

    def pct(self, route: str, q: float) -> float:
        """The q-quantile latency of a route in milliseconds."""
        values = sorted(self.latencies[route])
        if not values:
            return float("nan")
        return 1000 * values[min(len(values) - 1, int(q * len(values)))]


async def _timed(get: Getter, path: str, route: str, win: Window, res: PointResult) -> bytes | None:
    t0 = time.perf_counter()
    try:
        status, body = await get(path)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        status, body = 599, b""
    t1 = time.perf_counter()
    if win.inside(t1):
        res.requests += 1
        res.latencies[route].append(t1 - t0)
        if status != 200:
            res.errors += 1
    return body if status == 200 else None


async def client_loop(
    n: int, get: Getter, win: Window, res: PointResult, output_dir: Path | None = None
) -> None:
    """One engine-like client: claim one file, report PROCESSING, write the job's FASTQ
    (with `output_dir`, as an original engine does: the manager merges it), report DONE;
    repeat."""
    engine = f"c{n}"
    while not win.stop:
        body = await _timed(
            get, f"/assignwork?engineid={engine}&batchsize=1", "assignwork", win, res
        )
        if body is None:
            await asyncio.sleep(0.01)
            continue
        answer = json.loads(body)
        job = answer["jobid"]
        if job == "-1":
            res.dry += 1
            await asyncio.sleep(0.01)
            continue
        await _timed(get, f"/keepalive?job_id={job}&job_state=PROCESSING", "keepalive", win, res)
        if output_dir is not None:
            write_job_fastq(output_dir / answer["job_output_dir"], answer["batch"])
        await _timed(get, f"/completed?job_id={job}&job_state=DONE", "completed", win, res)


def write_job_fastq(job_output: Path, batch: list[str]) -> None:
    """What an original engine leaves: one small FASTQ per pod5 under `pass/`."""
    passed = job_output / "pass"
    passed.mkdir(parents=True, exist_ok=True)
    for rel in batch:
        stem = rel.rsplit("/", 1)[-1].removesuffix(".pod5")
        (passed / f"{stem}.fastq").write_text(f"@{stem}\nACGT\n+\n!!!!\n")


async def measure(
    server: Server,
    clients: int,
    seconds: float,
    warmup: float,
    kind: str,
    output_dir: Path | None = None,
) -> PointResult:
    """Run `clients` loops against the server; measure `seconds` after `warmup`."""
    from _common import cpu_seconds

    res = PointResult(server.name, clients, seconds)
    win = Window()
    if kind == "httpx":
        shared = HttpxClient(HOST, PORT, clients)
        conns: list = [shared]
        getters = [shared.get] * clients
    else:
        conns = [RawConnection(HOST, PORT) for _ in range(clients)]
        getters = [c.get for c in conns]
    tasks = [
        asyncio.create_task(client_loop(i, g, win, res, output_dir)) for i, g in enumerate(getters)
    ]
    await asyncio.sleep(warmup)
    cpu0, own0 = cpu_seconds(server.pid), _own_cpu()
    win.start, wall_start = time.perf_counter(), time.time()
    await asyncio.sleep(seconds)
    win.end, wall_end = time.perf_counter(), time.time()
    res.wall_window = (wall_start, wall_end)
    cpu1, own1 = cpu_seconds(server.pid), _own_cpu()
    win.stop = True
    res.seconds = win.end - win.start
    res.server_cpu_s, res.client_cpu_s = cpu1 - cpu0, own1 - own0
    _, pending = await asyncio.wait(tasks, timeout=30)
    for t in pending:
        t.cancel()
    res.connects = sum(getattr(c, "connects", 0) for c in conns)
    for c in conns:
        await c.close()
    return res


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


# -- servers ----------------------------------------------------------------------------


def start_server(
    name: str,
    input_dir: Path,
    output_dir: Path,
    log: Path,
    n_files: int,
    manager_args: Sequence[str] = (),
) -> Server:
    """Start one manager over a fresh folder and wait until all its files are claimable."""
    if name in VARIANTS:

        def start() -> Server:
            return start_bcmanager(
                input_dir, output_dir, log, lease_s=600, batch_size=1, extra=manager_args
            )

        def ready(server: Server) -> float:
            def scanned() -> bool:
                status = http_get_json("/v1/status")
                return bool(status) and status.get("files_total") == n_files

            return wait_until(scanned, server, timeout=900, interval=0.5, what="done scanning")

    else:

        def start() -> Server:
            return start_original(input_dir, output_dir, log)

        def ready(server: Server) -> float:
            return wait_until(lambda: http_get_json("/heartbeat") is not None, server, 900)

    server, _ = start_when_port_free(start, ready)
    return server


_POINTS = itertools.count(1)


def run_point(
    name: str, clients: int, args: argparse.Namespace, source: Path, work: Path
) -> PointResult:
    """One server at one client count, in a folder of its own that stays until the whole
    run ends: removed at once, a point's tens of thousands of folders and files made the
    next point's pay for them (the ext4 allocator looks past every inode freed in the last
    minutes; docs/benchmarks.md), so the server measured after another paid for both."""
    folder = work / f"{name}-{clients}-{next(_POINTS)}"
    remove_tree(folder)
    input_dir, output_dir = folder / "input", folder / "output"
    make_farm(input_dir, args.files, source)
    output_dir.mkdir(parents=True)
    server = start_server(
        name, input_dir, output_dir, folder / "server.log", args.files, manager_args(name, args)
    )
    try:
        fastq_to = output_dir if args.fastq else None
        res = run_async(measure(server, clients, args.seconds, args.warmup, args.client, fastq_to))
        res.server = name  # both bcmanager variants' processes are called bcmanager
        if name in VARIANTS:
            status = http_get_json("/v1/status") or {}
            scan = status.get("scan") or {}
            if "seconds" in scan and "at" in scan:
                res.scan_s = scan["seconds"]
                start, end = res.wall_window
                res.scan_overlap_s = max(
                    0.0, min(scan["at"], end) - max(scan["at"] - res.scan_s, start)
                )
    finally:
        server.kill()
        wait_port_free(PORT, timeout=30)
    return res


# -- report -----------------------------------------------------------------------------


def manager_args(name: str, args: argparse.Namespace) -> list[str]:
    """The extra `bcm manager` arguments of a bcmanager variant: --manager-arg, then the
    variant's own (last, so they win); none for the original."""
    if name not in VARIANTS:
        return []
    return [*args.manager_arg, *VARIANTS[name]]


def _layout_of(manager_args: Sequence[str]) -> str | None:
    """The OUTPUT layout named in these arguments (the last one), or None: the default."""
    layout = None
    for i, arg in enumerate(manager_args):
        if arg.startswith("--output-layout="):
            layout = arg.split("=", 1)[1]
        elif arg == "--output-layout" and i + 1 < len(manager_args):
            layout = manager_args[i + 1]
    return layout


def is_goal(name: str, args: argparse.Namespace) -> bool:
    """Whether issue 23's goals are stated for this variant's layout (the default)."""
    return name in VARIANTS and (_layout_of(manager_args(name, args)) or "minknow") == GOAL_LAYOUT


def server_label(name: str, args: argparse.Namespace) -> str:
    """`bcmanager (minknow, default)`, `bcmanager (legacy layout)` or `original`; with
    --manager-arg, its arguments follow (`bcmanager (minknow, default) --no-watch`)."""
    if name not in VARIANTS:
        return name
    layout = _layout_of(manager_args(name, args))
    label = "bcmanager (minknow, default)" if layout is None else f"bcmanager ({layout} layout)"
    return " ".join([label, *args.manager_arg])


def section_name(args: argparse.Namespace) -> str:
    """`protocol`, or `protocol-no-watch` (a slug of the extra manager arguments)."""
    if not args.manager_arg:
        return "protocol"
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(args.manager_arg).lower()).strip("-")
    return f"protocol-{slug}"


def absolute_rows(results: list[PointResult], args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for r in results:
        lat = [f"{fmt(r.pct(route, 0.5), 2)} / {fmt(r.pct(route, 0.99), 2)}" for route in ROUTES]
        rows.append(
            [
                server_label(r.server, args),
                str(r.clients),
                fmt(r.rps, 0),
                fmt(r.cpu_ms_per_req, 3),
                *lat,
                fmt(r.client_ms_per_req, 3),
                f"{r.connects:,}",
                f"{r.errors} / {r.dry}",
            ]
        )
    return rows


ABS_HEADERS = [
    "server",
    "clients",
    "req/s",
    "server CPU ms/req",
    *[f"{r} p50 / p99 ms" for r in ROUTES],
    "load-gen CPU ms/req",
    "connections",
    "errors / dry",
]


def ratio_rows(pairs: list[tuple[PointResult, PointResult]]) -> list[list[str]]:
    rows = []
    for ours, orig in pairs:
        lat = [
            f"{fmt(ratio(ours.pct(r, 0.5), orig.pct(r, 0.5)), 2)}"
            f" / {fmt(ratio(ours.pct(r, 0.99), orig.pct(r, 0.99)), 2)}"
            for r in ROUTES
        ]
        rows.append(
            [
                str(ours.clients),
                fmt(ratio(ours.rps, orig.rps), 2),
                fmt(ratio(ours.cpu_ms_per_req, orig.cpu_ms_per_req), 2),
                *lat,
            ]
        )
    return rows


RATIO_HEADERS = [
    "clients",
    "req/s",
    "server CPU/req",
    *[f"{r} p50 / p99" for r in ROUTES],
]


def goal_checks(ours: PointResult, orig: PointResult) -> list[tuple[float, bool]]:
    """(bcmanager / original, met?) for each of issue 23's goals, in GOAL_HEADERS' order."""
    rps = ratio(ours.rps, orig.rps)
    cpu = ratio(ours.cpu_ms_per_req, orig.cpu_ms_per_req)
    checks = [(rps, rps >= GOALS["rps"]), (cpu, cpu <= GOALS["cpu"])]
    for route in ROUTES:
        p99 = ratio(ours.pct(route, 0.99), orig.pct(route, 0.99))
        checks.append((p99, p99 <= GOALS["p99"]))  # a NaN ratio (no calls) is not met
    return checks


GOAL_HEADERS = [
    f"req/s (>= {GOALS['rps']:.1f})",
    f"server CPU/req (<= {GOALS['cpu']:.1f})",
    *[f"p99 {r} (<= {GOALS['p99']:.1f})" for r in ROUTES],
    "all goals",
]


def goal_row(label: str, ours: PointResult, orig: PointResult, goal: bool) -> list[str]:
    checks = goal_checks(ours, orig)
    cells = [f"{fmt(value, 2)} {'met' if met else 'NOT met'}" for value, met in checks]
    everything = "met" if all(met for _, met in checks) else "NOT met"
    return [label + (" (the goal's)" if goal else ""), *cells, everything]


def _fastq_line(args: argparse.Namespace) -> str:
    """What the docs say about the layouts measured and what each does with the FASTQ."""
    what = {
        "minknow": "merges each job's FASTQ into the run folder of the job's pod5"
        " (`OUTPUT/<run folder>/fastq_pass/job_id_<job>_NAME`)",
        "legacy": "moves each job's FASTQ to `OUTPUT/pass/job_id_<job>_NAME`, the original's names",
    }
    variants = [n for n in args.servers if n in VARIANTS]
    described = []
    for name in variants:
        named = _layout_of(manager_args(name, args))
        layout, how = (named, f"`--output-layout {named}`") if named else ("minknow", "the default")
        described.append(
            f"`{layout}` ({how}; rows `{server_label(name, args)}`) {what.get(layout, '')}".rstrip()
        )
    if len(variants) > 1:
        head = "- OUTPUT layouts: bcmanager is measured in both, the default first: "
    else:
        head = "- OUTPUT layout: "
    line = head + "; ".join(described) + ". "
    if args.fastq:
        line += (
            "Each client writes its job's FASTQ (one 4-line record per pod5 under `pass/` of"
            " its job's TMPOUTPUT folder) before it reports DONE, as an original engine does,"
            " and the manager merges it at `/completed`."
        )
    else:
        line += "Clients write no FASTQ (`--no-fastq`): the bare protocol, nothing to merge."
    return line


def report(results: list[PointResult], args: argparse.Namespace) -> str:
    by = {(r.server, r.clients): r for r in results}
    variants = [n for n in args.servers if n in VARIANTS]
    abs_rows = absolute_rows(results, args)
    print_table("legacy protocol, absolute", ABS_HEADERS, abs_rows)
    title = "Legacy protocol under load, bcmanager in both OUTPUT layouts (`bench/protocol.py`)"
    if args.manager_arg:
        started = " ".join(f"`{a}`" for a in args.manager_arg)
        title = (
            f"Legacy protocol under load, bcmanager started with {started} (`bench/protocol.py`)"
        )
    legacy_args = " ".join(VARIANTS["bcmanager-legacy"])
    parts = [
        section_header(title),
        f"- setup: {args.files:,} hard links of one 2-read pod5 per point, a fresh server and"
        f" folder per point (all removed when the run ends, none between points; the first"
        f" point after a wait of {args.settle_s:g} s), {args.warmup:g} s warm-up then"
        f" {args.seconds:g} s measured"
        + (
            f" in each of {args.rounds} rounds (the servers' order reversed every other"
            " round; a point's runs pooled: their requests, CPU and latencies together)"
            if (args.rounds or 1) > 1
            else ""
        )
        + ";"
        f" bcmanager with `{' '.join(['--lease 600 --batch-size 1', *args.manager_arg])}`"
        + (
            f" (and `{legacy_args}` for the legacy layout)"
            if "bcmanager-legacy" in variants
            else ""
        )
        + ", the original with the config"
        f" template; load generator `{args.client}` (HTTP/1.1 keep-alive where the server"
        " allows it: the original answers `Connection: close`, so its clients reconnect per"
        " request, as the original engine's `requests.get` calls do).",
        _fastq_line(args),
        "- connections: TCP connections the load generator opened (warm-up included)."
        " errors / dry: non-200 answers / `jobid -1` answers (none expected).",
        "- server CPU ms/req: utime + stime of the server process (all threads) over the"
        " measured window, from /proc/PID/stat, per answered request. Latencies in ms,"
        " as seen by the client, including its own queueing.",
        "",
        markdown_table(ABS_HEADERS, abs_rows),
    ]
    for name in variants:
        pairs = [
            (by[(name, c)], by[("original", c)])
            for c in args.clients
            if (name, c) in by and ("original", c) in by
        ]
        if not pairs:
            continue
        label = server_label(name, args)
        rat_rows = ratio_rows(pairs)
        print_table(f"{label} / original", RATIO_HEADERS, rat_rows)
        parts += [
            "",
            f"Ratios {label} / original (below 1 is better for CPU and latency, above 1 for"
            " req/s):",
            "",
            markdown_table(RATIO_HEADERS, rat_rows),
        ]
    top = max(args.clients)
    goal_rows = [
        goal_row(server_label(n, args), by[(n, top)], by[("original", top)], is_goal(n, args))
        for n in variants
        if (n, top) in by and ("original", top) in by
    ]
    if goal_rows:
        headers = [f"at {top} clients, bcmanager / original", *GOAL_HEADERS]
        print_table(
            f"issue 23's goals at {top} clients (stated for the default layout, {GOAL_LAYOUT})",
            headers,
            goal_rows,
        )
        parts += [
            "",
            f"Issue 23's goals at {top} clients, as ratios to the original: req/s at least"
            f" {GOALS['rps']:g} times, server CPU per request at most {GOALS['cpu']:g} times,"
            f" and the p99 of every call at most {GOALS['p99']:g} times the original's. They"
            f" are stated for the default layout (`{GOAL_LAYOUT}`): the row marked the goal's"
            " is the one they judge"
            + ("; the other layout's row is for comparison." if len(goal_rows) > 1 else "."),
            "",
            markdown_table(headers, goal_rows),
        ]
    for name in variants:
        scanned = [
            r
            for r in results
            if r.server == name and r.scan_s is not None and r.scan_overlap_s is not None
        ]
        if not scanned:
            continue
        took = ", ".join(fmt(r.scan_s or 0.0, 2) for r in scanned)
        overlap = ", ".join(fmt(r.scan_overlap_s or 0.0, 2) for r in scanned)
        parts += [
            "",
            f"{server_label(name, args)}: the last finished input scan before each point"
            " ended (`scan` in `/v1/status`; rescans start 10 s after the last one ended, or"
            " 30 times its duration when that is longer; the input folder's mtime changes"
            " with every job folder, so a rescan lists it again) took"
            f" {took} s and overlapped the measured window by {overlap} s; the CPU of any"
            " overlap is part of the figures above.",
        ]
    return "\n".join(parts)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    p.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    p.add_argument("--files", type=int, default=200_000, help="pod5 files in each input folder")
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated, run in this order whatever the order given: bcmanager (the"
        " default layout, minknow), bcmanager-legacy (--output-layout legacy), original",
    )
    p.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator")
    p.add_argument("--workdir", type=Path, default=REPO / "bench" / "_work", help="scratch")
    p.add_argument("--keep", action="store_true", help="keep the scratch folders")
    p.add_argument(
        "--code-at", metavar="REV", help="run bcmanager from this commit, not the working tree"
    )
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument(
        "--ab",
        metavar="REV",
        help="compare the working tree with commit REV, A B B A (bcmanager, default layout)",
    )
    p.add_argument(
        "--settle-s",
        type=float,
        default=90.0,
        help="seconds to wait before the first point, for what was removed just before to"
        " stop costing the file system (default 90; 0 while iterating)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds: with --ab, two runs each (default 3); else each server this many times,"
        " the order reversed every other round, the runs of a point pooled (default 1)",
    )
    p.add_argument(
        "--no-fastq",
        dest="fastq",
        action="store_false",
        help="clients write no FASTQ (the bare protocol; by default each job leaves one"
        " small FASTQ per pod5 under pass/, as an original engine does, for the manager to"
        " merge)",
    )
    p.add_argument(
        "--manager-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `bcm manager`, repeatable; give it as --manager-arg=ARG"
        " (e.g. --manager-arg=--no-watch); written to its own docs section",
    )
    args = p.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c]
    named = {s for s in args.servers.split(",") if s}
    unknown = named - set(SERVERS)
    if unknown:
        p.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    args.servers = [s for s in SERVERS if s in named]  # the default layout first
    if {"bcmanager", "bcmanager-legacy"} <= named and _layout_of(args.manager_arg) == "legacy":
        print("--manager-arg names the legacy layout: bcmanager-legacy would measure it twice")
        args.servers.remove("bcmanager-legacy")
    return args


def _place_section_after(anchor: str, name: str) -> None:
    """Give section `name` empty markers right after section `anchor` if it has none yet
    (update_doc would append it at the end of the file)."""
    if not DOC.exists():
        return
    text = DOC.read_text(encoding="utf-8")
    end = f"<!-- /bench:{anchor} -->"
    if f"<!-- bench:{name} -->" in text or end not in text:
        return
    text = text.replace(end, f"{end}\n\n<!-- bench:{name} -->\n<!-- /bench:{name} -->", 1)
    DOC.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    work = args.workdir / "protocol"
    work.mkdir(parents=True, exist_ok=True)
    if free_disk_gib(work) < 2:
        sys.exit(f"less than 2 GiB free under {work}")
    if args.ab:
        return compare_ab(args, work)
    use_code_at(args.code_at, work)
    source = write_source_pod5(work / "source.pod5")
    settle(args.settle_s)
    runs: dict[tuple[str, int], list[PointResult]] = {}
    try:
        for r in range(args.rounds or 1):
            order = args.servers if r % 2 == 0 else args.servers[::-1]
            for name in order:
                for clients in args.clients:
                    print(f"{name}: {clients} client(s) ...", flush=True)
                    res = run_point(name, clients, args, source, work)
                    print(
                        f"  {res.rps:,.0f} req/s, {res.cpu_ms_per_req:.3f} server CPU ms/req,"
                        f" {res.errors} errors",
                        flush=True,
                    )
                    runs.setdefault((name, clients), []).append(res)
    finally:
        if not args.keep:
            remove_tree(work)
    results = [pooled(runs[(name, c)]) for name in args.servers for c in args.clients]
    body = report(results, args)
    if not args.no_doc:
        name = section_name(args)
        if name != "protocol":
            _place_section_after("protocol", name)
        update_doc(name, body)
        print(f"updated docs/benchmarks.md (section {name})")
    return 0


def settle(seconds: float) -> None:
    """Wait before the first point: folders removed just before (the last run's, when it
    ended) make every folder the first server creates cost more for a minute or so (ext4
    looks past each inode freed in its last minute; docs/benchmarks.md)."""
    if seconds > 0:
        print(f"waiting {seconds:g} s for the file system to settle (--settle-s) ...", flush=True)
        time.sleep(seconds)


def pooled(results: list[PointResult]) -> PointResult:
    """One point's runs as one: requests, CPU and seconds summed, latencies together (so
    req/s and CPU per request are the runs' totals, and each percentile is over them all)."""
    if len(results) == 1:
        return results[0]
    first, last = results[0], results[-1]
    return replace(
        last,
        seconds=sum(r.seconds for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        dry=sum(r.dry for r in results),
        connects=sum(r.connects for r in results),
        server_cpu_s=sum(r.server_cpu_s for r in results),
        client_cpu_s=sum(r.client_cpu_s for r in results),
        latencies={k: [x for r in results for x in r.latencies[k]] for k in first.latencies},
    )


def compare_ab(args: argparse.Namespace, work: Path) -> int:
    """The working tree (A) against commit `args.ab` (B), alternating which runs first."""
    clients = max(args.clients)
    here = working_tree()
    other = use_code_at(args.ab, work)
    codes = {"A": (None, here), "B": (other.src, other.describe)}
    source = write_source_pod5(work / "source.pod5")
    settle(args.settle_s)
    runs: dict[str, list[PointResult]] = {"A": [], "B": []}
    rows = []
    try:
        for r in range(args.rounds or 3):
            for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                other.src, other.describe = codes[side]
                res = run_point("bcmanager", clients, args, source, work)
                runs[side].append(res)
                rows.append(_ab_row(str(r + 1), side, res))
                print(f"  round {r + 1} {side}: {res.cpu_ms_per_req:.3f} ms/req", flush=True)
    finally:
        if not args.keep:
            remove_tree(work)
    headers = ["round", "code", "req/s", "server CPU ms/req", *(f"{x} p99 ms" for x in ROUTES)]
    print_table(f"A: {here}; B: {codes['B'][1]}; {clients} clients", headers, rows)
    mean = {side: _mean_point(results) for side, results in runs.items()}
    ratios = [
        ["A / B", *(fmt(ratio(mean["A"][k], mean["B"][k]), 2) for k in mean["A"])],
    ]
    print_table("mean of each side's runs, A / B", ["", *mean["A"]], ratios)
    return 0


def _ab_row(round_: str, side: str, res: PointResult) -> list[str]:
    p99 = [fmt(res.pct(route, 0.99), 2) for route in ROUTES]
    return [round_, side, f"{res.rps:,.0f}", fmt(res.cpu_ms_per_req, 3), *p99]


def _mean_point(results: list[PointResult]) -> dict[str, float]:
    n = max(1, len(results))
    mean = {
        "req/s": sum(r.rps for r in results) / n,
        "server CPU ms/req": sum(r.cpu_ms_per_req for r in results) / n,
    }
    for route in ROUTES:
        mean[f"{route} p99"] = sum(r.pct(route, 0.99) for r in results) / n
    return mean


if __name__ == "__main__":
    sys.exit(main())
