"""A whole run: three engines, one killed with SIGKILL mid-batch, a corrupt file quarantined.

Half the files are one run whose files each have their own protocol run id, all sharing
their first 8 hex digits (`tests.helpers.file_run_ids`): a batch of them once made two
outputs share a name and lost reads (issue 22)."""

import signal
import time

from bcmanager.verify import verify_run
from tests.helpers import assert_run_complete, make_run


def test_three_engines_one_killed_mid_batch_and_a_poison_file(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    make_run(inp, 12, reads=8, samples=2000)
    make_run(inp, 12, reads=8, samples=2000, prefix="g", seed=1, per_file_run_ids=True)
    (inp / "corrupt.pod5").write_bytes(b"\x8bPOD\r\n\x1a\n" + b"\x00" * 4096 + b"\x8bPOD\r\n\x1a\n")
    m = start_manager(inp, out, "--lease", "3", "--max-attempts", "2", "--batch-size", "3")
    deadline = time.monotonic() + 20
    while m.status()["files_total"] < 25:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    victim = start_engine(m.url, "victim", "--samples-per-s", "5000")  # ~3 s a batch
    others = [start_engine(m.url, f"gpu{i}", "--samples-per-s", "200000") for i in (1, 2)]
    while not any(j["engine"] == "victim" for j in m.status()["running_jobs"]):
        assert time.monotonic() < deadline + 20, "the victim never got a batch"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # mid-batch: its lease must run out, its files go back
    deadline = time.monotonic() + 90
    while (
        m.status()["state"] != "waiting"
        or m.status()["files"]["done"] + m.status()["files"]["quarantined"] < 25
    ):
        assert time.monotonic() < deadline, m.status()["files"]
        time.sleep(0.2)
    status = m.status()
    assert status["files"] == {"queued": 0, "assigned": 0, "done": 24, "quarantined": 1}
    assert status["jobs"]["expired"] >= 1  # the victim's batch
    assert [q["path"] for q in status["quarantined"]] == ["corrupt.pod5"]
    for e in others:
        e.send_signal(signal.SIGTERM)
        assert e.wait(timeout=20) == 0
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`
    report = verify_run(inp, out)
    assert report.ok, report.to_dict()
    assert report.quarantined == {"corrupt.pod5": status["quarantined"][0]["reason"]}
    assert report.input_reads == 24 * 8 <= report.records  # split reads: several records
    assert report.layout == "minknow" and report.summary_rows == report.records
