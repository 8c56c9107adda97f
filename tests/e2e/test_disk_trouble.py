"""Disk trouble with a real manager: a full OUTPUT mid-merge, a read-only OUTPUT, a missing
or vanishing INPUT, and a pod5 file the pod5 library cannot read.

The full disk is a real one: a small tmpfs mounted as OUTPUT (the tests run as root, as
CI does) and filled up to ENOSPC.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bcmanager.pod5io import write_pod5
from bcmanager.verify import output_read_files, verify_run
from tests.helpers import (
    LegacyDriver,
    assert_exactly_once,
    assert_run_complete,
    basecall_dir,
    basecall_native,
    free_port,
    make_run,
    wait_until,
)


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[..., Path]]:
    """mount_tmpfs(path, size="2m", readonly=False): a real tmpfs there, unmounted after."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "2m", readonly: bool = False) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if readonly else "")
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.fail(
                f"these tests mount a tmpfs as OUTPUT and need root (or CAP_SYS_ADMIN):"
                f" mount -t tmpfs -o {options} tmpfs {path} failed: {r.stderr.strip()}"
            )
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem has no byte left (ENOSPC)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 1 << 12, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def events(m, kind: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return [e for e in m.get("/v1/events", limit=1000).json()["events"] if e["entity"] == kind]


def test_a_full_output_disk_keeps_the_merge_journaled_until_space_returns(
    tmp_path, mount_tmpfs, start_manager
) -> None:
    inp = tmp_path / "input"
    inp.mkdir()
    out = mount_tmpfs(tmp_path / "output", size="2m")
    run = make_run(inp, 4)
    # --min-free 0: the merge's own handling of ENOSPC, without the pause of a full disk
    m = start_manager(
        inp, out, "--lease", "30", "--db", str(tmp_path / "ledger.sqlite3"), "--min-free", "0"
    )
    wait_until(lambda: m.status()["files_total"] == 4, what="the scan")
    job = m.post("/v1/claim", {"engine_id": "gpu1", "max_files": 2}).json()["job"]
    basecall_native(Path(job["input_dir"]), Path(job["output_dir"]), job["job_id"], inp)
    written = sorted(p.relative_to(job["output_dir"]) for p in Path(job["output_dir"]).rglob("*"))
    filler = fill(out)

    done = m.post(f"/v1/jobs/{job['job_id']}/complete", {"token": job["token"], "outcome": "done"})
    assert done.status_code == 200 and done.json()["state"] == "merging"
    wait_until(lambda: len(events(m, "merge-error")) >= 2, what="a retried merge")
    assert m.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "merging"
    error = events(m, "merge-error")[0]
    assert error["job_id"] == job["job_id"] and "No space left on device" in error["detail"]
    assert "merge failed" in m.log.read_text()
    now = sorted(p.relative_to(job["output_dir"]) for p in Path(job["output_dir"]).rglob("*"))
    assert now == written  # nothing lost
    assert output_read_files(out) == []  # nothing merged half

    filler.unlink()
    wait_until(
        lambda: m.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "done",
        what="the merge once space returned",
    )
    again = m.post(f"/v1/jobs/{job['job_id']}/complete", {"token": job["token"], "outcome": "done"})
    assert again.json() == {"ok": True, "state": "done", "repeated": True}
    assert LegacyDriver(m.url, inp, out, "gpu2", native=True).run() == "finished"
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`
    report = verify_run(inp, out, workers=0)
    assert report.ok and report.summary_rows == report.records


def test_a_full_disk_under_the_ledger_too_loses_and_wedges_nothing(
    tmp_path, mount_tmpfs, start_manager
) -> None:
    """The default layout: the ledger in OUTPUT/.bcmanager fills up with the FASTQ."""
    inp = tmp_path / "input"
    inp.mkdir()
    out = mount_tmpfs(tmp_path / "output", size="4m")
    run = make_run(inp, 4)
    m = start_manager(inp, out, "--lease", "60", "--min-free", "0")  # the ledger's own handling
    wait_until(lambda: m.status()["files_total"] == 4, what="the scan")
    job = m.post("/v1/claim", {"engine_id": "gpu1", "max_files": 2}).json()["job"]
    basecall_dir(Path(job["input_dir"]), Path(job["output_dir"]))
    filler = fill(out)
    report = {"token": job["token"], "outcome": "done"}
    for r in (
        m.post(f"/v1/jobs/{job['job_id']}/complete", report),
        m.post("/v1/claim", {"engine_id": "gpu2", "max_files": 1}),
    ):
        assert r.status_code == 503, r.text  # engines retry a 5xx
        assert "ledger cannot be written" in r.json()["error"] and "full" in r.json()["error"]
    # the failed commits changed nothing, not even the counts kept in memory
    assert m.status()["files"] == {"queued": 2, "assigned": 2, "done": 0, "quarantined": 0}
    assert m.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "assigned"

    filler.unlink()
    done = m.post(f"/v1/jobs/{job['job_id']}/complete", report)  # the engine's retry
    assert done.json() == {"ok": True, "state": "done", "repeated": False}
    assert LegacyDriver(m.url, inp, out, "gpu2").run(timeout=30) == "finished"
    assert_exactly_once(run, out)
    assert "Traceback" not in m.log.read_text()
    assert_run_complete(inp, out)  # the disk was full mid-run: nothing half-written stays


def test_pod5_files_completed_while_the_ledger_disk_is_full_are_queued_once_space_returns(
    tmp_path, mount_tmpfs, start_manager
) -> None:
    """Found by the soak (issue 27): files that complete while the ledger cannot grow
    were taken as known by discovery and never offered again, until a restart. Now
    they are looked for again, within seconds of space coming back."""
    inp = tmp_path / "input"
    inp.mkdir()
    out = mount_tmpfs(tmp_path / "output", size="16m")
    write_pod5(inp / "before.pod5", 3, 400, seed=1)
    m = start_manager(inp, out, "--rescan", "1")
    wait_until(lambda: m.status()["files_total"] == 1, what="the first scan")
    filler = fill(out)
    source = tmp_path / "source.pod5"  # outside INPUT
    write_pod5(source, 3, 400, seed=2)
    (inp / "during").mkdir()
    n = 5000  # more rows than the ledger's pages and WAL hold without growing
    for i in range(n):
        (inp / "during" / f"during_{i:05d}_{'x' * 150}.pod5").hardlink_to(source)
    wait_until(lambda: "scan failed" in m.log.read_text(), timeout=60, what="a failed scan")
    assert m.status()["files_total"] < n + 1  # the full disk kept them out
    filler.unlink()
    wait_until(lambda: m.status()["files_total"] == n + 1, timeout=60, what="every file queued")


def test_a_full_output_pauses_the_run_and_quarantines_no_good_file(
    tmp_path, mount_tmpfs, start_manager
) -> None:
    """Found by the soak (issue 27): with OUTPUT full every batch failed, each failure
    counted an attempt against its files, and a minute of full disk quarantined good
    files. Now no batch is handed out while OUTPUT is short of --min-free, and a batch
    that fails then counts no attempt, though its reason does not name the disk."""
    inp = tmp_path / "input"
    inp.mkdir()
    out = mount_tmpfs(tmp_path / "output", size="32m")
    run = make_run(inp, 3)
    ledger = str(tmp_path / "ledger.sqlite3")  # elsewhere: with it on OUTPUT, reports get 503
    m = start_manager(
        inp, out, "--min-free", "8", "--max-attempts", "1", "--lease", "30", "--db", ledger
    )
    wait_until(lambda: m.status()["files_total"] == 3, what="the scan")
    job = m.post("/v1/claim", {"engine_id": "gpu1", "max_files": 1}).json()["job"]
    filler = fill(out)
    wait_until(lambda: m.status()["output_space"]["short"], what="the full disk seen")
    assert m.post("/v1/claim", {"engine_id": "gpu2", "max_files": 1}).json()["job"] is None
    shown = subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "status", "--manager", m.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "paused since" in shown.stdout and "--min-free" in shown.stdout, shown.stdout

    report = {"token": job["token"], "outcome": "failed", "reason": "basecaller exit code 1"}
    failed = m.post(f"/v1/jobs/{job['job_id']}/complete", report)
    assert failed.status_code == 200 and failed.json()["state"] == "failed"
    status = m.status()
    assert status["files"] == {"queued": 3, "assigned": 0, "done": 0, "quarantined": 0}
    assert "no attempt counted" in m.log.read_text()

    filler.unlink()
    wait_until(lambda: not m.status()["output_space"]["short"], what="space seen again")
    assert LegacyDriver(m.url, inp, out, "gpu2").run(timeout=30) == "finished"
    assert_exactly_once(run, out)
    assert m.status()["files"]["quarantined"] == 0


def test_a_read_only_output_is_a_clear_error_at_start(tmp_path, mount_tmpfs) -> None:
    inp = tmp_path / "input"
    inp.mkdir()
    out = mount_tmpfs(tmp_path / "output", size="1m", readonly=True)
    r = _manager_cli(inp, out)
    assert r.returncode != 0
    assert "not writable" in r.stderr and "Read-only file system" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_manager_started_on_a_full_output_says_so_in_one_line(
    tmp_path, mount_tmpfs, start_manager
) -> None:
    """Found by the soak (issue 27): a manager restarted while OUTPUT (and its ledger) is
    full died with a traceback of sqlite3.OperationalError."""
    inp = tmp_path / "input"
    inp.mkdir()
    out = mount_tmpfs(tmp_path / "output", size="4m")
    write_pod5(inp / "a.pod5", 3, 400, seed=1)
    m = start_manager(inp, out)
    wait_until(lambda: m.status()["files_total"] == 1, what="the scan")
    m.kill9()
    filler = fill(out)
    r = _manager_cli(inp, out)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "full" in r.stderr or "No space left" in r.stderr, r.stderr[-2000:]
    filler.unlink()
    assert start_manager(inp, out).status()["files_total"] == 1  # and it starts with space


def test_a_missing_input_directory_is_a_clear_error(tmp_path) -> None:
    r = _manager_cli(tmp_path / "not-mounted", tmp_path / "output")
    assert r.returncode != 0
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_an_input_that_vanishes_and_returns_is_survived(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    run = make_run(inp, 2)
    m = start_manager(inp, out)
    wait_until(lambda: m.status()["files_total"] == 2, what="the scan")
    away = inp.with_name("input-unmounted")
    inp.rename(away)  # the network filesystem went away
    time.sleep(1.0)  # several rescans of a missing INPUT
    assert m.proc.poll() is None and m.get("/healthz").status_code == 200
    away.rename(inp)
    run.update(make_run(inp, 1, prefix="late", seed=7))
    wait_until(lambda: m.status()["files_total"] == 3, what="the file written after the return")
    assert LegacyDriver(m.url, inp, out).run() == "finished"
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)


def _corrupt_pod5(path: Path) -> None:
    """A pod5 whose signature stands at both ends (complete) but that pod5 cannot read."""
    write_pod5(path, 3, 400, seed=4242)
    data = bytearray(path.read_bytes())
    data[16:-16] = b"\xff" * (len(data) - 32)
    path.write_bytes(bytes(data))


def test_an_unreadable_pod5_is_retried_then_quarantined_with_the_reason(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 3)
    _corrupt_pod5(inp / "broken.pod5")
    m = start_manager(inp, out, "--max-attempts", "2", "--batch-size", "4")
    wait_until(lambda: m.status()["files_total"] == 4, what="the scan")
    engine = start_engine(m.url, "gpu1", "--until-empty")
    assert engine.wait(timeout=120) == 0, engine.log.read_text()
    status = m.status()
    assert status["files"]["done"] == 3 and status["files"]["quarantined"] == 1
    assert status["quarantined"][0]["path"] == "broken.pod5"
    listed = (out / "QUARANTINE" / "quarantined.tsv").read_text().splitlines()
    assert len(listed) == 1
    path, reason = listed[0].split("\t")
    assert path == "broken.pod5"
    assert reason.startswith("failed 2 attempts") and "basecaller exit code 1" in reason
    assert_exactly_once(run, out)  # the good files, every read once
    failed_logs = [p for p in out.glob("FAILEDOUTPUT_*/basecaller.log")]
    assert any("broken.pod5" in p.read_text() for p in failed_logs)
    (verified,) = assert_run_complete(inp, out)  # `bcm verify` expects broken.pod5 missing
    assert list(verified["quarantined"]) == ["broken.pod5"]


def _manager_cli(inp: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bcmanager.cli", "manager", "--input", str(inp)]
    cmd += ["--output", str(out), "--port", str(free_port())]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
