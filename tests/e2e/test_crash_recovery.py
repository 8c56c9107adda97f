"""kill -9 of a real manager at the worst instants, and a lost ledger: nothing lost, nothing doubled."""

import os

import pytest

from tests.helpers import LegacyDriver, assert_exactly_once, assert_run_complete, make_run


def _wait_scanned(m, n: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while m.status()["files_total"] < n:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize(
    "failpoint",
    [
        "claim.after-commit",
        "complete.after-journal",
        "merge.after-move",
        "merge.after-append",
        "merge.after-rename",
    ],
)
def test_kill9_at_the_worst_instant_loses_nothing(run_dirs, start_manager, failpoint) -> None:
    from bcmanager.verify import verify_run

    inp, out = run_dirs
    run = make_run(inp / "exp/s/20261128_1200_1A_FAX1_abcd1234/pod5", 6, per_file_run_ids=True)
    run = {f"exp/s/20261128_1200_1A_FAX1_abcd1234/pod5/{k}": v for k, v in run.items()}
    crashing = start_manager(inp, out, "--lease", "2", env={"BCM_FAILPOINT": failpoint})
    _wait_scanned(crashing, 6)
    driver = LegacyDriver(crashing.url, inp, out, native=True)
    assert driver.run() == "down"
    assert crashing.proc.wait(timeout=10) == -9  # it really died at the failpoint
    restarted = start_manager(inp, out, "--lease", "2", port=crashing.port)
    assert driver.run(timeout=60) == "finished"
    assert_exactly_once(run, out)
    assert restarted.status()["files"]["done"] == 6
    assert restarted.terminate() == 0  # a clean stop removes the job folders still queued
    assert not [d for d in os.listdir(inp) if d.startswith("ASSIGNED_")]
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`
    report = verify_run(inp, out, workers=0)  # the summary: one row per read, none twice
    assert report.ok and report.summary_rows == report.records, report.to_dict()


def test_a_ledger_lost_after_kill9_is_rebuilt_without_loss_or_duplicates(
    run_dirs, start_manager
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 8)
    m = start_manager(inp, out, "--lease", "2")
    _wait_scanned(m, 8)
    finished = LegacyDriver(m.url, inp, out, "a")
    for _ in range(2):  # two jobs merged
        job = finished._get("/assignwork", engineid="a", batchsize=2)
        from tests.helpers import basecall_dir

        basecall_dir(inp / job["job_input_dir"], out / job["job_output_dir"])
        finished._get("/completed", job_id=job["jobid"], job_state="DONE")
    running = finished._get("/assignwork", engineid="b", batchsize=2)  # one job in flight
    m.kill9()
    for suffix in ("", "-wal", "-shm"):
        ledger = out / ".bcmanager" / f"ledger.sqlite3{suffix}"
        if ledger.exists():
            ledger.unlink()
    restarted = start_manager(inp, out, "--lease", "2", port=m.port)
    assert "rebuilt from the layout" in restarted.log.read_text()
    status = restarted.status()
    assert status["files"] == {"queued": 2, "assigned": 2, "done": 4, "quarantined": 0}
    # the engine of the in-flight job finishes it against the rebuilt manager
    basecall_dir(inp / running["job_input_dir"], out / running["job_output_dir"])
    assert finished._get("/completed", job_id=running["jobid"], job_state="DONE") == {"ok": True}
    assert LegacyDriver(restarted.url, inp, out, "c").run() == "finished"
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)


def test_a_rebuild_killed_midway_is_done_again_at_the_next_start(run_dirs, start_manager) -> None:
    """Found by the soak (issue 27): a manager rebuilding a lost ledger died midway (its
    disk full); the next start took the partial ledger as whole, so the files of every
    merge it had not yet adopted were queued and basecalled twice. Now a ledger stays
    unsettled until a rebuild gets through, and the next start rebuilds again."""
    inp, out = run_dirs
    run = make_run(inp, 6)
    m = start_manager(inp, out, "--batch-size", "1")
    _wait_scanned(m, 6)
    assert LegacyDriver(m.url, inp, out, "a").run() == "finished"  # six merges, one file each
    m.kill9()
    for ledger in (out / ".bcmanager").glob("ledger.sqlite3*"):
        ledger.unlink()
    dying = start_manager(
        inp, out, port=m.port, env={"BCM_FAILPOINT": "rebuild.after-a-merge"}, wait=False
    )
    assert dying.proc.wait(timeout=60) == -9  # killed after adopting one merge of six
    restarted = start_manager(inp, out, port=m.port)
    assert "rebuilt from the layout" in restarted.log.read_text()
    status = restarted.status()
    assert status["files"] == {"queued": 0, "assigned": 0, "done": 6, "quarantined": 0}
    assert_exactly_once(run, out)


def test_an_until_empty_engine_stays_for_a_claim_whose_answer_was_lost(
    run_dirs, start_manager, start_engine
) -> None:
    """Issue 28: the manager is killed after committing a claim and before its answer
    leaves. After the restart the engine basecalls the rest; it must not go home while
    the lost claim's files are still leased to it, but wait until they come back
    (lease expiry) and basecall them too."""
    inp, out = run_dirs
    run = make_run(inp, 6, per_file_run_ids=True)
    crashing = start_manager(
        inp, out, "--lease", "3", "--batch-size", "2", env={"BCM_FAILPOINT": "claim.after-commit"}
    )
    _wait_scanned(crashing, 6)
    engine = start_engine(crashing.url, "gpu1", "--until-empty")
    assert crashing.proc.wait(timeout=30) == -9  # died with the first claim committed
    restarted = start_manager(inp, out, "--lease", "3", "--batch-size", "2", port=crashing.port)
    assert engine.wait(timeout=120) == 0, engine.log.read_text()
    assert restarted.status()["files"]["done"] == 6, engine.log.read_text()
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)
