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
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _common import (
    REPO,
    Server,
    fmt,
    free_disk_gib,
    http_get_json,
    make_farm,
    markdown_table,
    peak_rss_mib,
    print_table,
    ratio,
    remove_tree,
    section_header,
    start_bcmanager,
    start_original,
    start_when_port_free,
    stop_on_sigterm,
    update_doc,
    use_code_at,
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
    return p.parse_args(argv)


def check_room(work: Path, largest: int) -> None:
    """Rough check: directory entries and the ledger take well under 1 KB per file."""
    need = max(2.0, largest * 1000 / 2**30)
    if free_disk_gib(work) < need:
        sys.exit(f"need about {need:.1f} GiB free under {work}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
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


def _say(r: Result) -> None:
    print(
        f"  first start {r.first_s:.2f} s, restart {r.restart_s:.2f} s,"
        f" peak RSS {max(r.restart_rss, r.settled_rss) * MIB_TO_MB:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
