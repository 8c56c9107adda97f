"""Engines started in the same breath as the manager, files still being written: nobody goes home
while work is on its way, and everything is basecalled exactly once."""

import time
from pathlib import Path

from bcmanager.pod5io import read_ids, write_pod5
from tests.helpers import assert_exactly_once, assert_run_complete, make_run


def test_until_empty_engines_started_with_the_manager_wait_for_a_file_still_being_written(
    run_dirs, start_manager, start_engine, tmp_path: Path
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 6)  # written a moment ago: fresh when the manager first sees them
    write_pod5(tmp_path / "late.pod5", 3, 400, seed=99)
    whole = (tmp_path / "late.pod5").read_bytes()
    (inp / "late.pod5").write_bytes(whole[: len(whole) // 2])  # the sequencer is writing it
    m = start_manager(inp, out, "--batch-size", "2", "--settle", "30", wait=False)
    engines = [start_engine(m.url, f"gpu{i}", "--until-empty", "--wait", "5") for i in (1, 2)]
    time.sleep(3)  # the writer's pace: the file stays half-written for a while
    for engine in engines:
        assert engine.poll() is None, f"went home early:\n{engine.log.read_text()}"
    (inp / "late.pod5").write_bytes(whole)  # finished in place
    for engine in engines:
        assert engine.wait(timeout=60) == 0, engine.log.read_text()
    run["late.pod5"] = read_ids(inp / "late.pod5")
    assert_exactly_once(run, out)
    done = m.status()["files"]["done"]
    assert done == 7
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`
