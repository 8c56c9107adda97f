"""`bcm status` and `bcm events` against a real manager and its ledger file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port, make_run


def bcm(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


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
