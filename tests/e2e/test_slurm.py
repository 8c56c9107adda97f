"""Engines as real Slurm jobs (single-node Slurm from conftest): live run, idle release, scancel."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    assert_exactly_once,
    assert_outputs_whole,
    assert_run_complete,
    bcm_verify,
    make_run,
)
from tests.slurm import SlurmCluster


def bcm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bcmanager.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def engine_logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*.log")))


def wait_until(predicate: Callable[[], object], folder: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{engine_logs(folder)}")
        time.sleep(0.2)


@pytest.fixture
def jobs_file(tmp_path: Path, slurm: SlurmCluster) -> Iterator[Path]:
    """The test's record of engine jobs; whatever is left of them is cancelled afterwards."""
    path = tmp_path / "bcm-slurm-jobs.json"
    yield path
    if path.exists():
        ids = list(json.loads(path.read_text())["jobs"])
        left = list(slurm.states(ids))
        if left:
            subprocess.run(["scancel", *left], check=False)
            slurm.wait_gone(left, timeout=30)


def submit(slurm: SlurmCluster, url: str, jobs_file: Path, n: int, *engine: str) -> list[str]:
    result = bcm(
        "slurm",
        "submit-engines",
        "--manager",
        url,
        "--nodes",
        str(n),
        "--partition",
        slurm.partition,
        "--time",
        "10:00",
        "--log-dir",
        str(jobs_file.parent / "engine-logs"),
        "--jobs-file",
        str(jobs_file),
        "--wait",
        "5",
        *engine,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ids = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("submitted")]
    assert len(ids) == n, result.stdout
    return ids


def controller_once(url: str, jobs_file: Path, *flags: str) -> str:
    result = bcm(
        "slurm", "controller", "--manager", url, "--jobs-file", str(jobs_file), "--once", *flags
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def slurm_engines(status: dict, ids: list[str]) -> dict[str, dict]:
    """The manager's view of each job's engine (engine id slurm-<jobid>-<host>)."""
    found = {}
    for e in status["engines"]:
        for job_id in ids:
            if e["engine"].startswith(f"slurm-{job_id}-"):
                found[job_id] = e
    return found


def test_slurm_engines_basecall_a_live_run_once_and_are_released_when_idle(
    slurm, run_dirs, start_manager, jobs_file
) -> None:
    inp, out = run_dirs
    logs = jobs_file.parent / "engine-logs"
    m = start_manager(inp, out, "--batch-size", "2")
    ids = submit(slurm, m.url, jobs_file, 2, "--samples-per-s", "20000")
    wait_until(
        lambda: len(slurm_engines(m.status(), ids)) == 2, logs, 60, "both engines to register"
    )
    run: dict[str, list[str]] = {}
    for wave in range(3):  # the sequencer writes while the engines work
        run.update(make_run(inp, 4, reads=4, prefix=f"wave{wave}-", seed=wave))
        time.sleep(1)
    wait_until(lambda: m.status()["files"]["done"] == 12, logs, 90, "the run to be basecalled")
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`
    engines = slurm_engines(m.status(), ids)
    assert sum(e["files_done"] for e in engines.values()) == 12
    assert {e["engine"] for e in m.status()["engines"]} == {e["engine"] for e in engines.values()}

    first = controller_once(m.url, jobs_file, "--idle-after", "2")
    assert first.startswith("cancel: none")
    assert set(slurm.states(ids).values()) == {"RUNNING"}
    time.sleep(2.5)
    second = controller_once(m.url, jobs_file, "--idle-after", "2")
    assert second.startswith(f"cancel: {', '.join(ids)};"), second
    slurm.wait_gone(ids, timeout=30)
    record = json.loads(jobs_file.read_text())["jobs"]
    assert {record[j]["state"] for j in ids} == {"cancelled"}


def test_busy_engines_are_spared_and_a_scancel_mid_batch_loses_nothing(
    slurm, run_dirs, start_manager, jobs_file
) -> None:
    inp, out = run_dirs
    logs = jobs_file.parent / "engine-logs"
    run = make_run(inp, 2, reads=3, samples=4000)
    m = start_manager(inp, out, "--lease", "4")
    wait_until(lambda: m.status()["files_total"] == 2, logs, 20, "the scan")
    # one file a batch, 12000 samples at 200 samples/s: 60 s, so two batches are in flight
    # (even on a loaded machine) and the third engine has nothing to do
    ids = submit(slurm, m.url, jobs_file, 3, "--samples-per-s", "200", "--batch-size", "1")

    def two_busy_one_idle() -> bool:
        status = m.status()
        return len(status["running_jobs"]) == 2 and len(slurm_engines(status, ids)) == 3

    wait_until(two_busy_one_idle, logs, 60, "two engines busy and one idle")
    status = m.status()
    busy_engines = {j["engine"] for j in status["running_jobs"]}
    by_job = slurm_engines(status, ids)
    busy = [j for j in ids if by_job[j]["engine"] in busy_engines]
    (idle,) = [j for j in ids if j not in busy]

    decision = controller_once(m.url, jobs_file, "--idle-after", "0")
    assert decision.startswith(f"cancel: {idle};"), (decision, m.status()["running_jobs"])
    slurm.wait_gone([idle], timeout=30)
    assert set(slurm.states(busy).values()) == {"RUNNING"}

    batch = {j["engine"]: j["job_id"] for j in m.status()["running_jobs"]}
    termed, killed = (batch[by_job[j]["engine"]] for j in busy)
    subprocess.run(["scancel", busy[0]], check=True)  # SIGTERM: the batch is handed back
    # SIGKILL to the job's shell, which is the engine (exec): no word to the manager
    subprocess.run(["scancel", "--batch", "--signal=KILL", busy[1]], check=True)
    slurm.wait_gone(busy, timeout=30)
    wait_until(lambda: m.status()["files"]["queued"] == 2, logs, 30, "the files to be requeued")
    # SIGTERM hands the batch back ("released"); it is "failed" if Slurm's SIGTERM reaches
    # the basecaller first, "expired" if a loaded machine delays the engine past the lease
    assert m.get(f"/v1/jobs/{termed}").json()["state"] in ("released", "failed", "expired")
    assert m.get(f"/v1/jobs/{killed}").json()["state"] == "expired"

    # files queued and no engine left: the controller submits one (no speed known yet)
    job_flags = ["--partition", slurm.partition, "--log-dir", str(logs), "--max-engines", "1"]
    decision = controller_once(m.url, jobs_file, *job_flags)
    assert decision.startswith("cancel: none; submit: 1"), decision
    (rescuer,) = [
        j for j, r in json.loads(jobs_file.read_text())["jobs"].items() if r["by"] == "controller"
    ]
    wait_until(lambda: m.status()["files"]["done"] == 2, logs, 60, "the rescue engine")
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`

    loop = subprocess.Popen(
        [sys.executable, "-m", "bcmanager.cli", "slurm", "controller", "--manager", m.url,
         "--jobs-file", str(jobs_file), "--idle-after", "1", "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        slurm.wait_gone([rescuer], timeout=30)
    finally:
        loop.terminate()
        output = loop.communicate(timeout=20)[0]
    assert loop.returncode == 0, output
    assert f"cancelled idle engine job(s) {rescuer}" in output


def test_a_submission_slurm_refuses_is_a_clear_error(slurm, jobs_file) -> None:
    result = bcm(
        "slurm",
        "submit-engines",
        "--manager",
        "http://127.0.0.1:1",
        "--partition",
        "no-such-partition-bcm",
        "--jobs-file",
        str(jobs_file),
    )
    assert result.returncode != 0
    assert "sbatch refused" in result.stderr and "partition" in result.stderr.lower()
    assert not jobs_file.exists() or json.loads(jobs_file.read_text())["jobs"] == {}


@pytest.fixture
def backfill_partition(slurm: SlurmCluster) -> Iterator[str]:
    """A second partition on the one node, made at run time (the test's own Slurm allows it)."""
    name = "bcm-backfill"
    made = subprocess.run(
        ["scontrol", "create", f"PartitionName={name}", "Nodes=ALL", "MaxTime=INFINITE",
         "State=UP", "OverSubscribe=FORCE:8"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"this Slurm does not let us add a partition: {made.stderr.strip()}")
    yield name
    subprocess.run(["scontrol", "delete", f"PartitionName={name}"], check=False)


def test_an_engine_wanted_only_for_backfill_runs_in_the_backfill_partition(
    slurm, backfill_partition, run_dirs, start_manager, jobs_file
) -> None:
    inp, out = run_dirs
    logs = jobs_file.parent / "engine-logs"
    make_run(inp, 2, reads=3)
    m = start_manager(inp, out)
    (live,) = submit(slurm, m.url, jobs_file, 1)  # the live generation's engine, which ends
    wait_until(lambda: m.status()["files"]["done"] == 2, logs, 60, "the live generation")
    subprocess.run(["scancel", live], check=True)
    slurm.wait_gone([live], timeout=30)
    added = bcm("generations", "add", "--manager", m.url, "sup=sup")
    assert added.returncode == 0, added.stderr
    assert [g["files"]["queued"] for g in m.status()["generations"]] == [0, 2]

    flags = ["--partition", slurm.partition, "--backfill-partition", backfill_partition]
    flags += ["--log-dir", str(logs), "--max-engines", "1", "--wait", "5"]
    decision = controller_once(m.url, jobs_file, *flags)
    assert decision.startswith("cancel: none; submit: 1 (0 live, 1 backfill)"), decision
    assert "backfill backlog (sup): 2 file(s) queued" in decision
    jobs = json.loads(jobs_file.read_text())["jobs"]
    assert jobs[live]["state"] == "gone"  # its engine, still in the manager's list, counts not
    ((job_id, record),) = [(j, r) for j, r in jobs.items() if r["by"] == "controller"]
    assert record["backlog"] == "backfill"
    squeue = subprocess.run(
        ["squeue", "--noheader", "--jobs", job_id, "--format=%P"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert squeue.stdout.strip() == backfill_partition
    # it runs there and reaches the manager; which batches it gets is the manager's call
    wait_until(lambda: slurm_engines(m.status(), [job_id]), logs, 60, "the backfill engine")
    # the live generation is complete (sup's backfill may be merging: its tree is not read)
    assert_outputs_whole(out, skip_generations=True)
    bcm_verify(inp, out)
