"""Start and restart time of the manager, and its peak memory, at 10k to 1M input files.

For each size N, over a folder of N hard links of one small real pod5 file:

first start   spawn the manager, time until GET /assignwork first answers with work;
restart       with half of the files finished, kill -9 the manager and spawn it again;
              time until /assignwork first answers with work, and its peak RSS
              (VmHWM from /proc/PID/status), both at that moment and once its first
              input scan after the restart has finished.

bcmanager's half-finished state is made directly in its ledger, which is much faster
than running half a million jobs: after the first start has queued every file, the
manager is killed, and one SQLite transaction on OUTPUT/.bcmanager/ledger.sqlite3 marks
the oldest half of the queued files done in jobs of 10 files (jobs rows and events
included). The original manager keeps no state: its restart rebuilds from the folders,
and a pod5 counts as finished when OUTPUT/pass holds `<stem>.fastq`, so half the files
get an empty one. The original is measured at smaller sizes (its restart compares every
pod5 against a list of FASTQ names, quadratic in N); bcmanager is measured at those
sizes too, for the ratios.

    python bench/startup.py [--sizes 10000,100000,1000000] [--original-sizes 10000,30000]

Bursts (`--burst N,M,...`; only these run then). A farm of N hard links of one small
real pod5 (they share one inode per 60,000 links, so one `os.utime` per inode sets the
age of all of them) arrives while a `bcm manager` (defaults, `--lease 3600`) watches an
empty INPUT: the farm's folder is renamed into INPUT at t0 (`--burst-arrival rename`,
the default), or it is in INPUT before the manager is spawned at t0 (`start`; fresh
files then get an mtime of t0 plus the manager's start-up time over an empty INPUT, so
they are less than a second old when its first scan sees them). Ages: `fresh` (mtime
just before t0: less than a second old when first seen) and `old` (an hour back).
Measured from t0: seconds to the first non-empty `GET /assignwork?batchsize=1` answer
(polled every 25 ms), seconds until all N files are in the ledger (polled every
0.25 s with `SELECT max(id) FROM files` on a read-only connection, so the manager does
no work for it), the manager's CPU (utime + stime from /proc/PID/stat, minus its CPU at
t0) per file at that moment, and how the queue grew (when 1, 10, 50, 90 and 100 % of
the files had been queued, from the ledger's `discovered_at`, and in how many distinct
insert moments). A case that has not queued everything after `--burst-timeout` seconds
is reported as "> cap" with the number queued by then.

    # before (issue 10): the code of a commit, raw results kept as JSON, docs untouched
    python bench/startup.py --burst-cases 30000:fresh,30000:old,1000000:old,1000000:fresh \
        --burst-timeout 600 --code-at 25c2065 --json-out /tmp/bench-before-startup.json \
        --no-doc
    # after: a later commit (or the working tree without --code-at), side by side with
    # the before figures; writes the `startup-burst` section of docs/benchmarks.md
    python bench/startup.py --burst-cases 30000:fresh,30000:old,1000000:old,1000000:fresh \
        --burst-timeout 600 --code-at HEAD --before-json /tmp/bench-before-startup.json \
        --json-out /tmp/bench-after-startup.json

`--burst-ages fresh,old` picks the ages; `--burst-cases 30000:fresh,1000000:old` picks
single cases instead (in that order).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import (
    BACKLOG_AGE_S,
    CODE,
    LOAD_AT_START,
    REPO,
    Server,
    command_line,
    cpu_seconds,
    fmt,
    free_disk_gib,
    free_port,
    http_get_json,
    load_average,
    machine,
    make_farm,
    markdown_table,
    peak_rss_mib,
    print_table,
    ratio,
    remove_tree,
    section_header,
    set_farm_mtime,
    start_bcmanager,
    start_original,
    start_when_port_free,
    stop_on_sigterm,
    update_doc,
    use_code_at,
    utc_now,
    wait_bcm_ready,
    wait_until,
    write_source_pod5,
)

RESTART_TARGET_S = 5.0
RSS_TARGET_MB = 300.0
TARGET_SIZE = 1_000_000
DONE_BATCH = 10
POLL_S = 0.025
MIB_TO_MB = 2**20 / 1e6


@dataclass
class Result:
    manager: str
    files: int
    farm_s: float = float("nan")
    first_s: float = float("nan")
    first_rss: float = float("nan")
    scanned_s: float = float("nan")
    prepare_s: float = float("nan")
    restart_s: float = float("nan")
    restart_rss: float = float("nan")
    settled_rss: float = float("nan")
    rescan_s: float = float("nan")


# -- polling ------------------------------------------------------------------------------


def has_work() -> bool:
    """One /assignwork call; true when it handed out a file."""
    answer = http_get_json("/assignwork?engineid=bench&batchsize=1")
    return bool(answer) and answer.get("jobid") not in (None, "-1")


def time_to_work(server: Server) -> float:
    return wait_until(has_work, server, timeout=3600, interval=POLL_S, what="handing out work")


def status_field(check: Callable[[dict], bool]) -> Callable[[], bool]:
    def poll() -> bool:
        status = http_get_json("/v1/status", timeout=30)
        return bool(status) and check(status)

    return poll


# -- the half-finished state --------------------------------------------------------------


def mark_half_done_in_ledger(ledger: Path, n_files: int, now: float) -> int:
    """Mark the oldest half of the queued files done, in jobs of DONE_BATCH (manager killed).

    Returns the number of files marked."""
    half = n_files // 2
    con = sqlite3.connect(ledger, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        base = con.execute("SELECT coalesce(max(id), 0) + 1 FROM jobs").fetchone()[0]
        con.execute(
            "CREATE TEMP TABLE picked AS SELECT id, :base + (row_number() OVER (ORDER BY id) - 1)"
            " / :batch AS job FROM files WHERE state = 'queued' ORDER BY id LIMIT :half",
            {"base": base, "batch": DONE_BATCH, "half": half},
        )
        marked = con.execute(
            "UPDATE files SET state = 'done', job_id = picked.job, done_at = :now"
            " FROM picked WHERE files.id = picked.id",
            {"now": now},
        ).rowcount
        con.execute(
            "INSERT INTO jobs(id, engine, state, token, api, lease_s, lease_expires, created,"
            " updated, ended, n_files) SELECT job, 'bench', 'done', 'bench', 'legacy', 90,"
            " :now, :now, :now, :now, count(*) FROM picked GROUP BY job",
            {"now": now},
        )
        for to_state, entity in (("merging", "job"), ("done", "job"), ("done", "files")):
            con.execute(
                "INSERT INTO events(at, entity, job_id, from_state, to_state, count, detail)"
                " SELECT :now, :entity, job, NULL, :to, count(*), 'bench: marked done'"
                " FROM picked GROUP BY job",
                {"now": now, "entity": entity, "to": to_state},
            )
        con.execute("COMMIT")
    finally:
        con.close()
    return marked


def mark_half_done_on_disk(output: Path, names: list[str], skip: set[str]) -> int:
    """The original's notion of finished: OUTPUT/pass/<stem>.fastq exists."""
    passed = output / "pass"
    count = 0
    for name in names[: len(names) // 2]:
        if name in skip:
            continue
        (passed / (name[: -len(".pod5")] + ".fastq")).touch()
        count += 1
    return count


# -- one size ---------------------------------------------------------------------------


def run_bcmanager(n: int, source: Path, work: Path, keep: bool) -> Result:
    res = Result("bcmanager", n)
    folder = work / f"bcmanager-{n}"
    remove_tree(folder)
    input_dir, output_dir = folder / "input", folder / "output"
    res.farm_s = _timed(lambda: make_farm(input_dir, n, source))
    output_dir.mkdir(parents=True)

    def start() -> Server:
        return start_bcmanager(input_dir, output_dir, folder / "manager.log", lease_s=3600)

    try:
        server, res.first_s = start_when_port_free(start, time_to_work)
        try:
            res.first_rss = peak_rss_mib(server.pid)
            all_known = status_field(lambda s: s.get("files_total") == n)
            res.scanned_s = wait_until(all_known, server, timeout=3600, interval=0.5)
        finally:
            server.kill()
        ledger = output_dir / ".bcmanager" / "ledger.sqlite3"
        res.prepare_s = _timed(lambda: mark_half_done_in_ledger(ledger, n, time.time()))
        server, res.restart_s = start_when_port_free(start, time_to_work)
        try:
            res.restart_rss = peak_rss_mib(server.pid)
            scanned = status_field(lambda s: bool(s.get("scan")))
            wait_until(scanned, server, timeout=3600, interval=0.2, what="done rescanning")
            res.settled_rss = peak_rss_mib(server.pid)
            res.rescan_s = float((http_get_json("/v1/status") or {}).get("scan", {})["seconds"])
        finally:
            server.kill()
    finally:
        if not keep:
            remove_tree(folder)
    return res


def run_original(n: int, source: Path, work: Path, keep: bool) -> Result:
    res = Result("original", n)
    folder = work / f"original-{n}"
    remove_tree(folder)
    input_dir, output_dir = folder / "input", folder / "output"
    names: list[str] = []
    res.farm_s = _timed(lambda: names.extend(make_farm(input_dir, n, source)))

    def start() -> Server:
        return start_original(input_dir, output_dir, folder / "manager.log")

    try:
        server, res.first_s = start_when_port_free(start, time_to_work)
        res.first_rss = peak_rss_mib(server.pid)
        server.kill()
        assigned = {p.name for d in input_dir.glob("ASSIGNED_*") for p in d.iterdir()}
        res.prepare_s = _timed(lambda: mark_half_done_on_disk(output_dir, names, assigned))
        server, res.restart_s = start_when_port_free(start, time_to_work)
        res.restart_rss = res.settled_rss = peak_rss_mib(server.pid)
        server.kill()
    finally:
        if not keep:
            remove_tree(folder)
    return res


def _timed(step: Callable[[], object]) -> float:
    t0 = time.monotonic()
    step()
    return time.monotonic() - t0


# -- report -----------------------------------------------------------------------------

HEADERS = [
    "manager",
    "files",
    "first start s",
    "first start peak RSS MB",
    "restart: first work s",
    "peak RSS at first work MB",
    "peak RSS after first rescan MB",
    "rescan after restart s",
    "all files queued (first start) s",
]


def rows(results: list[Result]) -> list[list[str]]:
    return [
        [
            r.manager,
            f"{r.files:,}",
            fmt(r.first_s, 2),
            fmt(r.first_rss * MIB_TO_MB, 0),
            fmt(r.restart_s, 2),
            fmt(r.restart_rss * MIB_TO_MB, 0),
            fmt(r.settled_rss * MIB_TO_MB, 0),
            fmt(r.rescan_s, 2),
            fmt(r.scanned_s, 2),
        ]
        for r in results
    ]


RATIO_HEADERS = ["files", "first start", "restart: first work", "peak RSS after restart"]


def ratio_rows(results: list[Result]) -> list[list[str]]:
    ours = {r.files: r for r in results if r.manager == "bcmanager"}
    out = []
    for orig in (r for r in results if r.manager == "original"):
        mine = ours.get(orig.files)
        if mine is None:
            continue
        out.append(
            [
                f"{orig.files:,}",
                fmt(ratio(mine.first_s, orig.first_s), 2),
                fmt(ratio(mine.restart_s, orig.restart_s), 2),
                fmt(ratio(mine.settled_rss, orig.settled_rss), 2),
            ]
        )
    return out


def target_rows(results: list[Result]) -> list[list[str]]:
    big = [r for r in results if r.manager == "bcmanager" and r.files == TARGET_SIZE]
    if not big:
        return []
    r = big[0]
    rss_mb = max(r.restart_rss, r.settled_rss) * MIB_TO_MB
    return [
        [
            "restart to first assignment at 1M files",
            f"{fmt(r.restart_s, 2)} s",
            f"<= {RESTART_TARGET_S:g} s",
            "met" if r.restart_s <= RESTART_TARGET_S else "NOT met",
        ],
        [
            "peak RSS of the restarted manager at 1M files",
            f"{fmt(rss_mb, 0)} MB",
            f"<= {RSS_TARGET_MB:g} MB",
            "met" if rss_mb <= RSS_TARGET_MB else "NOT met",
        ],
    ]


def prep_rows(results: list[Result]) -> list[list[str]]:
    return [[r.manager, f"{r.files:,}", fmt(r.farm_s, 1), fmt(r.prepare_s, 2)] for r in results]


def report(results: list[Result], args: argparse.Namespace) -> str:
    table, ratios, targets = rows(results), ratio_rows(results), target_rows(results)
    print_table("start and restart", HEADERS, table)
    if ratios:
        print_table("bcmanager / original", RATIO_HEADERS, ratios)
    if targets:
        print_table("targets", ["target", "measured", "wanted", "result"], targets)
    parts = [
        section_header("Start and restart (`bench/startup.py`)"),
        "- input: N hard links (in one folder) of one 2-read pod5 file (copies of it every"
        " 60,000 links, the ext4 link limit); all metadata, so this measures the manager's"
        " own work, not cold disk reads.",
        "- first start: from spawning the process to the first `GET /assignwork` answer"
        f" with work (polled every {POLL_S * 1000:g} ms). restart: after `kill -9` with half"
        " of the files finished, the same time for the new process. RSS is VmHWM from"
        " /proc/PID/status, in MB (10^6 bytes).",
        "- shortcut: bcmanager's half-finished state is written straight into its ledger"
        " (one SQLite transaction while the manager is killed: the oldest half of the files"
        f" set done in jobs of {DONE_BATCH}, with jobs rows and events), not by running"
        " jobs. The original keeps no state: half the files get an empty `<stem>.fastq` in"
        " OUTPUT/pass, which its restart treats as finished.",
        "- bcmanager: `bcm manager --lease 3600` with defaults otherwise; the original:"
        " `BCManagement.py CONFIG 0` with the config template.",
        "",
        markdown_table(HEADERS, table),
    ]
    if ratios:
        parts += ["", "Ratios bcmanager / original (below 1 is better):", ""]
        parts.append(markdown_table(RATIO_HEADERS, ratios))
    if targets:
        parts += ["", markdown_table(["target", "measured", "wanted", "result"], targets)]
    parts += [
        "",
        "Preparation (not part of the figures above):",
        "",
        markdown_table(
            ["manager", "files", "hard links made s", "half marked done s"], prep_rows(results)
        ),
    ]
    return "\n".join(parts)


# -- bursts -------------------------------------------------------------------------------

BURST_AGES = {"fresh": 0.0, "old": BACKLOG_AGE_S}
BURST_POLL_LEDGER_S = 0.25
QUEUE_MARKS = (0.01, 0.10, 0.50, 0.90, 1.00)


@dataclass
class Burst:
    files: int
    age: str  # "fresh" or "old"
    arrival: str  # "rename" or "start"
    cap_s: float
    first_s: float = float("nan")  # t0 -> first non-empty /assignwork answer
    all_s: float = float("nan")  # t0 -> all files in the ledger (NaN: not within the cap)
    queued_at_end: int = 0  # files in the ledger when all were queued, or at the cap
    cpu_s: float = float("nan")  # manager CPU from t0 to all queued (or to the cap)
    marks: dict[str, float] = field(default_factory=dict)  # "10%" -> s after t0
    insert_moments: int = 0  # distinct discovered_at values (batches of inserts)
    peak_rss_mib: float = float("nan")
    pending_at_end: int | None = None  # /v1/status `pending` when measuring stopped
    lead_s: float = 0.0  # start arrival: mtime offset from spawn for fresh files

    @property
    def capped(self) -> bool:
        return self.all_s != self.all_s  # NaN

    @property
    def cpu_ms_per_file(self) -> float:
        return self.cpu_s * 1000 / self.files


def has_work_on(port: int) -> bool:
    """One legacy /assignwork call for one file; true when it handed one out."""
    answer = http_get_json("/assignwork?engineid=bench&batchsize=1", port)
    return bool(answer) and answer.get("jobid") not in (None, "-1")


class LedgerCount:
    """Files in the manager's ledger: `max(id)` on a read-only connection (no manager work)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def __call__(self) -> int:
        try:
            if self.db is None:
                if not self.path.exists():
                    return 0
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            return int(self.db.execute("SELECT coalesce(max(id), 0) FROM files").fetchone()[0])
        except sqlite3.Error:
            return 0

    def discovered(self) -> list[float]:
        """Every file's `discovered_at`, in order (read once measuring is over)."""
        if self.db is None:
            return []
        rows = self.db.execute("SELECT discovered_at FROM files ORDER BY discovered_at")
        return [r[0] for r in rows]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def start_lead(work: Path) -> float:
    """Seconds from spawning the manager over an empty INPUT to its answering (the least
    of two tries): about when its first scan starts, as that runs as the server starts."""
    leads = []
    for k in range(2):
        folder = work / f"lead-{k}"
        remove_tree(folder)
        (folder / "input").mkdir(parents=True)
        port = free_port()
        server = start_bcmanager(
            folder / "input", folder / "output", folder / "manager.log", port=port
        )
        try:
            leads.append(wait_bcm_ready(server, timeout=120))
        finally:
            server.kill()
            remove_tree(folder)
    return min(leads)


def run_burst(
    n: int, age: str, farm: Path, source: Path, work: Path, args: argparse.Namespace
) -> Burst:
    """One burst case over the farm folder `farm` (its files are moved, then moved back)."""
    res = Burst(n, age, args.burst_arrival, args.burst_timeout)
    case = work / f"case-{n}-{age}"
    remove_tree(case)
    input_dir, output_dir = case / "input", case / "output"
    input_dir.mkdir(parents=True)
    arrived = input_dir / farm.name
    port = free_port()
    count = LedgerCount(output_dir / ".bcmanager" / "ledger.sqlite3")

    def spawn() -> Server:
        return start_bcmanager(input_dir, output_dir, case / "manager.log", port=port, lease_s=3600)

    server: Server | None = None
    try:
        if args.burst_arrival == "start":
            os.rename(farm, arrived)
            res.lead_s = args.lead_s if age == "fresh" else 0.0
            set_farm_mtime(source, time.time() + res.lead_s - BURST_AGES[age])
            server = spawn()
            t0, t0_wall, cpu0 = server.started, time.time(), 0.0
        else:
            server = spawn()
            wait_bcm_ready(server, timeout=120)
            wait_until(lambda: count() == 0 and count.db is not None, server, 60)
            time.sleep(1.0)  # the first (empty) scan and the inotify watch are in place
            set_farm_mtime(source, time.time() - BURST_AGES[age])
            cpu0 = cpu_seconds(server.pid)
            t0, t0_wall = time.monotonic(), time.time()
            os.rename(farm, arrived)
        next_count = 0.0
        while True:
            now = time.monotonic() - t0
            if not server.alive():
                raise RuntimeError(f"manager exited:\n{server.log_tail()}")
            if res.first_s != res.first_s and has_work_on(port):
                res.first_s = time.monotonic() - t0
            if now >= next_count:
                next_count = now + BURST_POLL_LEDGER_S
                queued = count()
                if queued >= n:
                    res.all_s = time.monotonic() - t0
                    res.cpu_s = cpu_seconds(server.pid) - cpu0
                    res.queued_at_end = queued
                    break
                if now > args.burst_timeout:
                    res.cpu_s = cpu_seconds(server.pid) - cpu0
                    res.queued_at_end = queued
                    break
            time.sleep(POLL_S)
        if res.first_s != res.first_s and res.queued_at_end and has_work_on(port):
            res.first_s = time.monotonic() - t0
        res.peak_rss_mib = peak_rss_mib(server.pid)
        status = http_get_json("/v1/status", port, timeout=60) or {}
        res.pending_at_end = status.get("pending")
        server.kill()
        times = count.discovered()
        res.insert_moments = len(set(times))
        for mark in QUEUE_MARKS:
            k = max(1, round(mark * n))
            if len(times) >= k:
                res.marks[f"{mark * 100:g}%"] = times[k - 1] - t0_wall
    finally:
        count.close()
        if server is not None:
            server.kill()
        if arrived.exists():
            os.rename(arrived, farm)
        if not args.keep:
            remove_tree(case)
    return res


def burst_cases(args: argparse.Namespace) -> list[tuple[int, str]]:
    if args.burst_cases:
        out = []
        for item in args.burst_cases.split(","):
            n, _, age = item.partition(":")
            out.append((sizes(n)[0], age))
        return out
    return [(n, age) for n in args.burst for age in args.burst_ages]


def run_bursts(args: argparse.Namespace, work: Path, source: Path) -> list[Burst]:
    cases = burst_cases(args)
    for _, age in cases:
        if age not in BURST_AGES:
            sys.exit(f"unknown burst age {age!r} (fresh or old)")
    if args.burst_arrival == "start" and any(a == "fresh" for _, a in cases):
        args.lead_s = start_lead(work)
        print(f"manager start-up over an empty INPUT: {args.lead_s:.2f} s", flush=True)
    results: list[Burst] = []
    farms: dict[int, Path] = {}
    try:
        for n, age in cases:
            if n not in farms:
                for old in farms.values():
                    remove_tree(old.parent)
                farms.clear()
                farm = work / f"farm-{n}" / "burst"
                remove_tree(farm.parent)
                t = _timed(lambda f=farm, k=n: make_farm(f, k, source))
                print(f"farm of {n:,} hard links made in {t:.1f} s", flush=True)
                farms[n] = farm
            print(f"burst: {n:,} {age} files ({args.burst_arrival}) ...", flush=True)
            r = run_burst(n, age, farms[n], source, work, args)
            results.append(r)
            print(f"  {burst_line(r)}", flush=True)
    finally:
        for farm in farms.values():
            remove_tree(farm.parent)
    return results


def burst_line(r: Burst) -> str:
    marks = ", ".join(f"{k} at {v:.2f} s" for k, v in r.marks.items())
    done = (
        f"all queued {r.all_s:.2f} s"
        if not r.capped
        else f"> {r.cap_s:g} s: {r.queued_at_end:,} queued at the cap"
    )
    return (
        f"first assignment {fmt(r.first_s, 2)} s, {done}, CPU {r.cpu_ms_per_file:.3f} ms/file,"
        f" {r.insert_moments} insert moments, pending at end {r.pending_at_end}; {marks}"
    )


# -- burst report -----------------------------------------------------------------------


def burst_json(results: list[Burst], args: argparse.Namespace) -> dict:
    m = machine()
    return {
        "code": CODE.describe,
        "date": utc_now(),
        "command": command_line(),
        "machine": m.markdown().removeprefix("- machine: "),
        "load": [LOAD_AT_START, load_average()],
        "arrival": args.burst_arrival,
        "cases": [asdict(r) for r in results],
    }


def burst_from_json(data: dict) -> list[Burst]:
    return [Burst(**case) for case in data.get("cases", [])]


def first_cell(r: Burst | None) -> str:
    if r is None:
        return "-"
    if r.first_s != r.first_s:
        return f"> {r.cap_s:g}"
    return fmt(r.first_s, 2)


def all_cell(r: Burst | None) -> str:
    if r is None:
        return "-"
    if r.capped:
        return f"> {r.cap_s:g} ({r.queued_at_end:,} queued)"
    return fmt(r.all_s, 2)


def cpu_cell(r: Burst | None) -> str:
    if r is None:
        return "-"
    return ("> " if r.capped else "") + fmt(r.cpu_ms_per_file, 3)


def marks_cell(r: Burst | None) -> str:
    if r is None:
        return "-"
    marks = [fmt(r.marks[k], 1) if k in r.marks else "-" for k in ("10%", "50%", "90%", "100%")]
    return " / ".join(marks) + f" ({r.insert_moments:,} inserts)"


def ratio_cell(after: float, before: float, before_is_bound: bool, after_capped: bool) -> str:
    """after / before; `< x` when `before` is only a lower bound (the before run hit the cap)."""
    if before != before or after != after or after_capped:
        return "-"
    return ("< " if before_is_bound else "") + fmt(ratio(after, before), 3)


BURST_HEADERS = [
    "files",
    "age",
    "first assignment s",
    "all queued s",
    "CPU ms per file",
    "queued 10 / 50 / 90 / 100 % at s",
    "peak RSS MB",
]
SIDE_HEADERS = [
    "files",
    "age",
    "first assignment s: before / after",
    "ratio",
    "all queued s: before / after",
    "ratio",
    "CPU ms per file: before / after",
    "ratio",
    "queued 10 / 50 / 90 / 100 % at s: before",
    "after",
]


def burst_rows(results: list[Burst]) -> list[list[str]]:
    return [
        [
            f"{r.files:,}",
            r.age,
            first_cell(r),
            all_cell(r),
            cpu_cell(r),
            marks_cell(r),
            fmt(r.peak_rss_mib * MIB_TO_MB, 0),
        ]
        for r in results
    ]


def side_rows(before: list[Burst], after: list[Burst]) -> list[list[str]]:
    keyed = {(r.files, r.age): r for r in before}
    rows_out = []
    for a in after:
        b = keyed.get((a.files, a.age))
        # a capped "before" is a lower bound: the ratio after / before is then an upper one
        nan = float("nan")
        cap_b = b is not None and b.capped
        first_bound = b is not None and b.first_s != b.first_s
        b_first = (b.cap_s if first_bound else b.first_s) if b is not None else nan
        b_all = (b.cap_s if cap_b else b.all_s) if b is not None else nan
        b_cpu = b.cpu_ms_per_file if b is not None else nan
        rows_out.append(
            [
                f"{a.files:,}",
                a.age,
                f"{first_cell(b)} / {first_cell(a)}",
                ratio_cell(a.first_s, b_first, first_bound, a.first_s != a.first_s),
                f"{all_cell(b)} / {all_cell(a)}",
                ratio_cell(a.all_s, b_all, cap_b, a.capped),
                f"{cpu_cell(b)} / {cpu_cell(a)}",
                "-" if cap_b or a.capped else fmt(ratio(a.cpu_ms_per_file, b_cpu), 3),
                marks_cell(b),
                marks_cell(a),
            ]
        )
    return rows_out


def burst_report(results: list[Burst], args: argparse.Namespace, before: dict | None) -> str:
    arrival = (
        "the farm's folder renamed into INPUT at t0 while the manager (started over an empty"
        " INPUT, its first scan done and its inotify watch in place) waits"
        if args.burst_arrival == "rename"
        else "the farm in INPUT when the manager is spawned at t0 (fresh files: mtime t0 plus"
        " the manager's start-up time over an empty INPUT, so less than a second old when its"
        " first scan starts)"
    )
    parts = [
        section_header("Bursts: a folder of files arriving at once (`bench/startup.py --burst`)"),
        "- input: N hard links (one folder, INPUT/burst/) of one 2-read pod5 file (a copy"
        " every 60,000 links); `fresh`: every inode's mtime set just before t0, so the files"
        f" are less than a second old when first seen; `old`: mtime {BACKLOG_AGE_S:g} s back."
        f" Arrival: {arrival}.",
        "- manager: `bcm manager --lease 3600`, defaults otherwise (inotify watch, `--settle"
        " 1`, rescan every 10 s). first assignment: t0 to the first `GET /assignwork"
        f"?batchsize=1` answer with a file (polled every {POLL_S * 1000:g} ms, which costs the"
        " manager a little CPU while nothing is queued). all queued: t0 to `max(id)` of the"
        f" ledger's files table reaching N (read-only connection, every {BURST_POLL_LEDGER_S:g}"
        " s). CPU: the manager's utime + stime (/proc/PID/stat) from t0 to that moment, per"
        " file. queued at: when 10 / 50 / 90 / 100 % of the files had been queued (the"
        " ledger's `discovered_at`), and the number of distinct insert moments. A case still"
        f" short of N after the cap ({args.burst_timeout:g} s) shows `> cap` and the files"
        " queued by then; its CPU is then a lower bound.",
    ]
    if before is not None and before.get("arrival") != args.burst_arrival:
        print(
            f"warning: the before run used --burst-arrival {before.get('arrival')},"
            f" this one {args.burst_arrival}: not comparable",
            flush=True,
        )
    if before is not None:
        previous = burst_from_json(before)
        parts += [
            f"- before: {before.get('code')}, {before.get('date')},"
            f" `{before.get('command')}` (machine: {before.get('machine')}; load"
            f" {before['load'][0]:.1f} -> {before['load'][1]:.1f}). after: this run,"
            f" {CODE.describe or 'working tree'}. ratio: after / before (below 1 is better;"
            " `< x` where the before run hit the cap, so the true ratio is lower still).",
            "",
            markdown_table(SIDE_HEADERS, side_rows(previous, results)),
            "",
            "After, with peak RSS (VmHWM, MB, 10^6 bytes):",
        ]
        print_table("bursts: before / after", SIDE_HEADERS, side_rows(previous, results))
    parts += ["", markdown_table(BURST_HEADERS, burst_rows(results))]
    print_table(f"bursts ({CODE.describe})", BURST_HEADERS, burst_rows(results))
    return "\n".join(parts)


# -- main -------------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=sizes, default=sizes("10000,100000,1000000"))
    p.add_argument("--original-sizes", type=sizes, default=sizes("10000,30000"))
    p.add_argument("--workdir", type=Path, default=REPO / "bench" / "_work", help="scratch")
    p.add_argument("--keep", action="store_true", help="keep the scratch folders")
    p.add_argument(
        "--code-at", metavar="REV", help="run bcmanager from this commit, not the working tree"
    )
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument(
        "--burst", type=sizes, default=[], help="burst sizes (only bursts run then), e.g. 30000"
    )
    p.add_argument("--burst-ages", default="fresh,old", help="fresh, old or both")
    p.add_argument("--burst-cases", help="instead: N:age,... e.g. 30000:fresh,1000000:old")
    p.add_argument(
        "--burst-arrival", choices=("rename", "start"), default="rename", help="what t0 is"
    )
    p.add_argument("--burst-timeout", type=float, default=600.0, help="cap per case, s")
    p.add_argument("--json-out", type=Path, help="write the burst results here (JSON)")
    p.add_argument("--before-json", type=Path, help="burst results to compare against")
    args = p.parse_args(argv)
    args.burst_ages = [a for a in args.burst_ages.split(",") if a]
    args.lead_s = 0.0
    return args


def check_room(work: Path, largest: int) -> None:
    """Rough check: directory entries and the ledger take well under 1 KB per file."""
    need = max(2.0, largest * 1000 / 2**30)
    if free_disk_gib(work) < need:
        sys.exit(f"need about {need:.1f} GiB free under {work}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    if args.burst or args.burst_cases:
        return main_bursts(args)
    work = args.workdir / "startup"
    work.mkdir(parents=True, exist_ok=True)
    ours = sorted(set(args.sizes) | set(args.original_sizes))
    check_room(work, max(ours, default=0))
    use_code_at(args.code_at, work)
    source = write_source_pod5(work / "source.pod5")
    results: list[Result] = []
    try:
        for n in sorted(args.original_sizes):
            print(f"original: {n:,} files ...", flush=True)
            results.append(run_original(n, source, work, args.keep))
            _say(results[-1])
        for n in ours:
            print(f"bcmanager: {n:,} files ...", flush=True)
            results.append(run_bcmanager(n, source, work, args.keep))
            _say(results[-1])
    finally:
        if not args.keep:
            remove_tree(work)
    body = report(results, args)
    if not args.no_doc:
        update_doc("startup", body)
        print("updated docs/benchmarks.md")
    return 0


def main_bursts(args: argparse.Namespace) -> int:
    before = json.loads(args.before_json.read_text()) if args.before_json else None
    work = args.workdir / "startup-burst"
    work.mkdir(parents=True, exist_ok=True)
    check_room(work, max(n for n, _ in burst_cases(args)))
    use_code_at(args.code_at, work)
    source = write_source_pod5(work / "source.pod5")
    try:
        results = run_bursts(args, work, source)
    finally:
        if not args.keep:
            remove_tree(work)
    if args.json_out:
        args.json_out.write_text(json.dumps(burst_json(results, args), indent=1) + "\n")
        print(f"wrote {args.json_out}")
    body = burst_report(results, args, before)
    if not args.no_doc:
        update_doc("startup-burst", body)
        print("updated docs/benchmarks.md")
    return 0


def _say(r: Result) -> None:
    print(
        f"  first start {r.first_s:.2f} s, restart {r.restart_s:.2f} s,"
        f" peak RSS {max(r.restart_rss, r.settled_rss) * MIB_TO_MB:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
