"""`bcm status` and `bcm events` against a real manager and its ledger file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from bcmanager.cli.status import render
from bcmanager.config import Settings, check_directories
from bcmanager.generations import make
from bcmanager.manager import Manager, Outcome
from bcmanager.output.yields import Yield
from bcmanager.progress import Progress
from tests.helpers import basecall_dir, free_port, make_run, wait_until

FAST = make("fast", "dna_r10.4.1_e8.2_400bps_fast@v5.0.0")
SUP = make("sup", "dna_r10.4.1_e8.2_400bps_sup@v5.0.0", modified_bases=("6mA",))


def bcm(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ledger_facts(output: Path) -> dict:
    """Straight from the SQLite file, independent of bcmanager's code."""
    db = sqlite3.connect(f"file:{output / '.bcmanager' / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        files = dict(db.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall())
        jobs = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        reads, samples, size, n, known = db.execute(
            "SELECT sum(reads), sum(samples), sum(size), count(*), count(samples) FROM files"
            " WHERE state = 'done'"
        ).fetchone()
        by_engine = dict(
            db.execute(
                "SELECT j.engine, count(*) FROM files f JOIN jobs j ON f.job_id = j.id"
                " WHERE f.state = 'done' GROUP BY j.engine"
            ).fetchall()
        )
    finally:
        db.close()
    return {
        "files": files,
        "jobs": jobs,
        "reads": reads or 0,  # counts are known only for files seen being written
        "samples": samples or 0,
        "counts_known": n == known,
        "bytes": size,
        "by_engine": by_engine,
    }


def test_status_json_agrees_with_the_ledger(run_dirs, start_manager, start_engine) -> None:
    inp, out = run_dirs
    make_run(inp, 6, reads=4)
    m = start_manager(inp, out, "--batch-size", "2")
    wait_until(lambda: m.status()["files_total"] == 6, what="the scan")
    engines = [start_engine(m.url, name, "--until-empty") for name in ("gpu1", "gpu2")]
    for e in engines:
        assert e.wait(timeout=60) == 0, e.log.read_text()

    result = bcm("status", "--manager", m.url, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    facts = ledger_facts(out)
    assert {s: n for s, n in status["files"].items() if n} == facts["files"] == {"done": 6}
    assert {s: n for s, n in status["jobs"].items() if n} == facts["jobs"]
    done = status["progress"]["done"]
    assert (done["files"], done["reads"], done["samples"], done["bytes"]) == (
        6,
        facts["reads"],
        facts["samples"],
        facts["bytes"],
    )
    assert done["counts_known"] == facts["counts_known"]
    assert status["finished"] and status["eta_s"] == 0
    assert status["progress"]["fraction_done"] == 1.0
    by_engine = {e["engine"]: e["basecalled"]["files"] for e in status["engines"]}
    assert by_engine == facts["by_engine"]
    assert all(e["throughput"]["bytes_per_s"] > 0 for e in status["engines"])
    if facts["counts_known"]:
        assert all(e["throughput"]["samples_per_s"] > 0 for e in status["engines"])
    assert status["throughput"]["files_per_min"] > 0
    assert [r["run"] for r in status["runs"]] == ["."]
    assert status["runs"][0]["files"]["done"] == 6

    live = m.status()
    assert live["files"] == status["files"] and live["progress"] == status["progress"]

    table = bcm("status", "--manager", m.url)
    assert table.returncode == 0, table.stderr
    for word in ("gpu1", "gpu2", "done", "reads basecalled", "Recent events", "ETA"):
        assert word in table.stdout, word
    assert "Yield per run and barcode" in table.stdout
    assert "Generations" not in table.stdout  # only the implicit one: nothing to tell apart
    counted = sum(y["reads"] for y in status["yields"])
    assert counted >= 24 and f"{status['yields'][0]['reads']:,}" in table.stdout


def test_status_watch_refreshes(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "status",
            "--manager",
            m.url,
            "--json",
            "--watch",
            "--interval",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [watch.stdout.readline() for _ in range(3)]
    finally:
        watch.kill()
        watch.wait(timeout=10)
    docs = [json.loads(line) for line in lines]
    assert [d["now"] for d in docs] == sorted(d["now"] for d in docs)
    assert len({d["now"] for d in docs}) == 3


def test_an_unreachable_manager_is_a_clear_error(tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("status",), ("status", "--json"), ("events",)):
        result = bcm(*args, "--manager", url)
        assert result.returncode == 1, result
        assert "cannot reach the manager" in result.stderr
        assert url in result.stderr
        assert "Traceback" not in result.stderr


def test_events_prints_and_follows_the_log(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    m = start_manager(inp, out)
    wait_until(lambda: m.status()["files_total"] == 2, what="the scan")

    as_json = bcm("events", "--manager", m.url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert events == m.get("/v1/events").json()["events"]
    assert any(e["detail"] == "discovered" and e["count"] == 2 for e in events)

    text = bcm("events", "--manager", m.url, "--last", "1")
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 1
    assert f"#{events[-1]['id']}" in text.stdout

    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "events",
            "--manager",
            m.url,
            "--follow",
            "--interval",
            "0.1",
            "--after",
            str(events[-1]["id"]),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job = m.get("/assignwork", engineid="gpu9", batchsize=1).json()
        line = follow.stdout.readline()
    finally:
        follow.kill()
        follow.wait(timeout=10)
    assert f"job {job['jobid']}" in line and "assigned" in line and "gpu9" in line


# -- model generations (a real manager and ledger in this process) ----------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def generations_manager(inp: Path, out: Path, n_files: int = 5) -> Manager:
    """A manager of `n_files` pod5 (3 reads each) with a live (fast) and a backfill (sup)
    generation; no live reserve, so backfill may start as soon as the live queue is empty."""
    make_run(inp, n_files, reads=3)
    settings = Settings(
        input=inp,
        output=out,
        lease_s=30,
        batch_size=2,
        settle_s=0,
        max_attempts=1,
        live_window_s=0,
        generations=(FAST, SUP),
    )
    m = Manager(check_directories(settings), clock=Clock())
    m.open(scan_now=True)
    return m


def basecall(m: Manager, engine: str, n: int = 2) -> int | None:
    """Claim up to `n` files, basecall them with the FASTQ stand-in and report DONE with
    the reads' yield, ten seconds later; the job's generation, or None when none is left."""
    m.clock.t += 5
    a = m.claim(engine, n, api="legacy", any_model=True)  # legacy: exactly n, not a probe
    if a is None:
        return None
    reads = basecall_dir(
        m.layout.assigned_dir(a.job.id, engine), m.layout.tmp_output_dir(a.job.id, engine)
    )
    counted = Yield(".", "unclassified")
    for _ in range(reads):
        counted.add_read(4, 20.0, True)
    m.clock.t += 10
    m.complete(a.job.id, Outcome.DONE, a.job.token, yields=[counted.to_dict()])
    return a.job.gen


def fail_one(m: Manager, engine: str) -> int:
    """Claim one file and report it FAILED (quarantined: max_attempts is 1); its generation."""
    m.clock.t += 5
    a = m.claim(engine, 1, api="v1", any_model=True)
    assert a is not None
    m.complete(a.job.id, Outcome.FAILED, a.job.token, reason="poison")
    return a.job.gen


def live_done_backfill_started(m: Manager) -> None:
    """fast: all 5 files basecalled; sup: one file quarantined, 2 basecalled, 2 queued."""
    assert [basecall(m, "gpu1") for _ in range(3)] == [0, 0, 0]
    assert fail_one(m, "gpu2") == 1
    assert basecall(m, "gpu2") == 1


def ledger_by_generation(output: Path) -> dict[str, dict[str, int]]:
    """Files by generation name and state, straight from the SQLite file."""
    db = sqlite3.connect(f"file:{output / '.bcmanager' / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT g.name, f.state, count(*) FROM files f JOIN generations g ON f.gen = g.id"
            " GROUP BY 1, 2"
        ).fetchall()
    finally:
        db.close()
    out: dict[str, dict[str, int]] = {}
    for name, state, n in rows:
        out.setdefault(name, {})[state] = n
    return out


def test_status_keeps_the_live_run_apart_from_the_backfill(run_dirs) -> None:
    inp, out = run_dirs
    m = generations_manager(inp, out)
    progress = Progress(m)  # hears the batches from here on
    try:
        live_done_backfill_started(m)
        status = progress.status()
    finally:
        progress.close()
        m.close()
    facts = ledger_by_generation(out)
    assert facts == {"fast": {"done": 5}, "sup": {"done": 2, "quarantined": 1, "queued": 2}}
    input_bytes = sum(p.stat().st_size for p in inp.glob("*.pod5"))

    # the run as it is written: the live generation, each pod5 once
    assert status["progress"]["written"]["files"] == 5
    assert status["progress"]["written"]["bytes"] == input_bytes
    assert status["progress"]["done"]["files"] == 5 and status["progress"]["fraction_done"] == 1
    assert status["eta_s"] == 0  # the live generation is through, though sup is not
    assert [(r["run"], r["files"]["done"], r["written"]["files"]) for r in status["runs"]] == [
        (".", 5, 5)
    ]
    assert status["runs"][0]["state"] == "caught up"

    gens = {g["name"]: g for g in status["generations"]}
    assert [(g["name"], g["role"]) for g in status["generations"]] == [
        ("fast", "live"),
        ("sup", "backfill"),
    ]
    for name, by_state in facts.items():
        assert {s: n for s, n in gens[name]["files"].items() if n} == by_state
        assert gens[name]["progress"]["written"]["files"] == 5
    sup = gens["sup"]
    assert sup["progress"]["done"]["files"] == 2 and sup["progress"]["quarantined"]["files"] == 1
    assert sup["progress"]["remaining"]["files"] == 2 and sup["share"] == 0.6
    assert sup["throughput"]["files_per_min"] > 0 and sup["eta_s"] > 0
    assert gens["fast"]["share"] == 1.0 and gens["fast"]["eta_s"] == 0

    # every generation together: a file once per generation
    every = status["all_generations"]
    assert every["written"]["files"] == 10 and every["written"]["bytes"] == 2 * input_bytes
    assert every["done"]["files"] == 7 == status["files"]["done"]
    assert every["remaining"]["files"] == 2 and every["eta_s"] > 0
    assert {y["generation"]: y["reads"] for y in status["yields"]} == {"fast": 15, "sup": 6}

    console = Console(width=200, record=True)
    console.print(render(status, "http://manager"))
    text = console.export_text()
    assert "live caught up, backfilling sup" in text
    assert "Files (live generation: fast)" in text
    assert "Generations" in text
    rows = {line.split()[0]: line for line in text.splitlines() if FAST.model[:12] in line}
    assert "live" in rows["fast"] and "100.0%" in rows["fast"] and FAST.model in rows["fast"]
    assert "backfill" in rows["sup"] and "60.0%" in rows["sup"] and "mods 6mA" in rows["sup"]
    yield_rows = [
        [cell.strip() for cell in line.split("│")]
        for line in text.splitlines()
        if "unclass" in line
    ]
    assert sorted((r[0], r[3]) for r in yield_rows) == [("fast", "15"), ("sup", "6")]


def test_status_says_how_many_engines_are_expected() -> None:
    """Told the fleet's size (--expect-engines, the Slurm controller), `bcm status` says
    how many of the engines expected have called; not told, it says nothing of it."""
    from bcmanager.cli.status import _engines

    engine = {"engine": "gpu1", "job_id": None, "last_seen_s": 2.0, "files_done": 3}

    def shown(status: dict) -> str:
        console = Console(width=120, record=True)
        console.print(_engines({"now": 100.0, "running_jobs": [], **status}))
        return console.export_text()

    assert "none has called yet (4 expected)" in shown({"engines": [], "expected_engines": 4})
    assert "Engines (1 of 4 expected)" in shown({"engines": [engine], "expected_engines": 4})
    assert "expected" not in shown({"engines": [engine], "expected_engines": None})
