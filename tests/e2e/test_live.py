"""A live run: a simulated sequencer writes growing pod5 files while engines basecall them."""

import threading
import time

from bcmanager.simulate import simulate_run
from bcmanager.verify import verify_run
from tests.helpers import assert_run_complete


def test_a_live_minknow_run_is_basecalled_as_written_and_the_manager_exits_when_done(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    m = start_manager(inp, out, "--exit-when-done", "--max-attempts", "2", "--batch-size", "2")
    engines = [start_engine(m.url, f"gpu{i}", "--samples-per-s", "200000") for i in (1, 2)]
    result = {}
    writer = threading.Thread(
        target=lambda: result.update(
            run=simulate_run(
                inp,
                files=5,
                reads=6,
                samples=800,
                interval=0.4,
                flowcells=2,
                layout="minknow",
                corrupt=1,
                seed=7,
            )
        )
    )
    writer.start()
    seen_while_writing = set()
    while writer.is_alive():
        seen_while_writing.update(j["job_id"] for j in m.status()["running_jobs"])
        time.sleep(0.1)
    writer.join()
    assert seen_while_writing, "nothing was basecalled while the sequencer was still writing"
    assert m.proc.wait(timeout=60) == 0  # --exit-when-done: every run ended, all basecalled
    for e in engines:
        e.kill()
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`
    report = verify_run(inp, out)
    assert report.ok, report.to_dict()
    corrupt = [str(f.path.relative_to(inp)) for f in result["run"].files if f.corrupt]
    assert sorted(report.quarantined) == sorted(corrupt)
    log = m.log.read_text()
    assert log.count("ended (") == 2  # both flow cells' final summaries were seen


def test_inotify_sees_files_deep_in_existing_and_new_folders_without_rescans(
    run_dirs, start_manager
) -> None:
    from bcmanager.pod5io import write_pod5

    inp, out = run_dirs
    deep = inp / "exp" / "sample" / "20261128_0101_1A_FAX1_abcd" / "pod5"
    deep.mkdir(parents=True)
    m = start_manager(inp, out, "--rescan", "3600")  # one scan at start, then inotify only
    wait_watching(m)

    def claimed_within(seconds: float) -> list[str]:
        job = m.post("/v1/claim", {"engine_id": "e1", "wait_s": seconds}).json()["job"]
        return [f["path"] for f in job["files"]] if job else []

    write_pod5(deep / "late.pod5", 2, 200, seed=1)  # deep in a folder that existed at start
    assert claimed_within(10) == ["exp/sample/20261128_0101_1A_FAX1_abcd/pod5/late.pod5"]
    write_pod5(inp / "exp2" / "s" / "run" / "pod5" / "new.pod5", 2, 200, seed=2)  # all new
    assert claimed_within(10) == ["exp2/s/run/pod5/new.pod5"]


def test_a_file_renamed_into_input_is_claimed_at_once_not_after_the_settle_time(
    run_dirs, start_manager
) -> None:
    from bcmanager.pod5io import write_pod5

    inp, out = run_dirs
    folder = inp / "exp" / "s" / "20261128_0101_1A_FAX1_abcd" / "pod5"
    folder.mkdir(parents=True)
    m = start_manager(inp, out, "--rescan", "3600", "--settle", "60")
    wait_watching(m)
    write_pod5(folder / ".FAX1_0.pod5.Xy12ab", 2, 200, seed=3)  # rsync's temporary name
    (folder / ".FAX1_0.pod5.Xy12ab").rename(folder / "FAX1_0.pod5")
    t0 = time.monotonic()
    job = m.post("/v1/claim", {"engine_id": "e1", "wait_s": 20}).json()["job"]
    assert [f["path"] for f in job["files"]] == [
        "exp/s/20261128_0101_1A_FAX1_abcd/pod5/FAX1_0.pod5"
    ]
    assert time.monotonic() - t0 < 10  # whole on arrival: the 60 s settle rule never applied


def wait_watching(m, timeout: float = 20) -> None:
    """Until the manager says its inotify watches are set up (done in the background)."""
    deadline = time.monotonic() + timeout
    while not m.status()["watching"]:
        assert time.monotonic() < deadline, "the manager never started watching"
        time.sleep(0.05)
