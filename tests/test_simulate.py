"""The simulated sequencer writes real pod5 files the way MinKNOW does."""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime
from pathlib import Path

import pod5
import pytest
from click.testing import CliRunner

from bcmanager.cli.simulate import command
from bcmanager.errors import InvalidInput
from bcmanager.layout import is_complete_pod5
from bcmanager.pod5io import read_ids
from bcmanager.scanner import run_of, walk_pod5
from bcmanager.simulate import plan_run, simulate_run

MINKNOW_RUN = re.compile(r"^\d{8}_\d{4}_\d[A-H]_(PAS\d{5})_([0-9a-f]{8})$")


def all_read_ids(paths: list[Path]) -> list[str]:
    return [rid for p in paths for rid in read_ids(p)]


def test_flat_layout(tmp_path: Path) -> None:
    result = simulate_run(
        tmp_path, files=3, reads=15, samples=200, interval=0.02, flowcells=2, corrupt=1, seed=7
    )
    pod5s = sorted(tmp_path.glob("*.pod5"))
    assert len(pod5s) == 3 * 2 + 1 == len(result.files)
    assert sorted(tmp_path.iterdir()) == sorted([*pod5s, *result.summaries])  # nothing else
    assert sorted(p.name for p in result.summaries) == sorted(
        p.name for p in tmp_path.glob("final_summary_*.txt")
    )
    assert len(result.summaries) == 2
    for summary in result.summaries:
        fields = dict(line.split("=", 1) for line in summary.read_text().splitlines())
        assert (
            summary.name
            == f"final_summary_{fields['flow_cell_id']}_{fields['protocol_run_id'][:8]}.txt"
        )
        assert int(fields["pod5_files_in_final_dest"]) in (3, 4)

    good = [f.path for f in result.good_files]
    assert len(good) == 6
    for path in good:
        assert is_complete_pod5(path)
        assert read_ids(path) == result.read_ids[path]
    ids = all_read_ids(good)
    assert len(ids) == 3 * 2 * 15 == result.total_reads
    assert len(set(ids)) == len(ids)  # unique across files and flow cells

    [bad] = result.corrupt_files
    assert is_complete_pod5(bad.path)  # looks finished to the scanner...
    with pytest.raises(RuntimeError):  # ...but the pod5 library cannot read it
        pod5.Reader(bad.path)


def test_minknow_layout(tmp_path: Path) -> None:
    result = simulate_run(
        tmp_path,
        files=2,
        reads=5,
        samples=100,
        interval=0,
        flowcells=2,
        layout="minknow",
        experiment="exp1",
        sample="lib1",
    )
    run_dirs = sorted((tmp_path / "exp1" / "lib1").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        match = MINKNOW_RUN.match(run_dir.name)
        assert match, run_dir.name
        flowcell, short = match.groups()
        assert (run_dir / f"final_summary_{flowcell}_{short}.txt").is_file()
        names = sorted(p.name for p in (run_dir / "pod5").iterdir())
        assert len(names) == 2
        for n, name in enumerate(names):
            assert re.fullmatch(rf"{flowcell}_{short}_[0-9a-f]{{8}}_{n}\.pod5", name), name
    # The scanner finds every file and knows its run (the flow cell folder).
    found = sorted(walk_pod5(tmp_path))
    assert len(found) == 4 == len(result.files)
    assert {run_of(rel) for rel in found} == {f"exp1/lib1/{d.name}" for d in run_dirs}
    ids = all_read_ids([tmp_path / rel for rel in found])
    assert len(set(ids)) == len(ids) == 20


def test_a_file_is_incomplete_while_it_grows(tmp_path: Path) -> None:
    seen: list[tuple[Path, int, bool]] = []

    def on_chunk(path: Path, n: int) -> None:
        seen.append((path, path.stat().st_size, is_complete_pod5(path)))

    result = simulate_run(
        tmp_path, files=2, reads=400, samples=1000, interval=0, chunks=4, on_chunk=on_chunk
    )
    for written in result.files:
        sizes = [size for path, size, _ in seen if path == written.path]
        assert len(sizes) == 4  # written in place, under its final name, chunk by chunk
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # growing
        assert not any(done for path, _, done in seen if path == written.path)
        assert is_complete_pod5(written.path)  # complete once closed


def test_files_appear_over_time_and_grow_in_place(tmp_path: Path) -> None:
    """Watched from outside, as the manager sees it: incomplete files, then complete ones."""
    observed: dict[str, set[bool]] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for entry in os.scandir(tmp_path):
                if entry.name.endswith(".pod5"):
                    observed.setdefault(entry.name, set()).add(is_complete_pod5(entry.path))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        result = simulate_run(tmp_path, files=3, reads=40, samples=500, interval=0.25, chunks=5)
    finally:
        stop.set()
        watcher.join()
    assert time.monotonic() - started >= 3 * 0.25 * 0.95  # one file per interval
    assert set(observed) == {f.path.name for f in result.files}
    for name, states in observed.items():
        assert False in states, f"{name} was never seen incomplete"


def test_seed_makes_read_ids_reproducible(tmp_path: Path) -> None:
    a = simulate_run(tmp_path / "a", files=2, reads=10, samples=100, interval=0, seed=3)
    b = simulate_run(tmp_path / "b", files=2, reads=10, samples=100, interval=0, seed=3)
    c = simulate_run(tmp_path / "c", files=2, reads=10, samples=100, interval=0, seed=4)
    ids = [all_read_ids([f.path for f in r.good_files]) for r in (a, b, c)]
    assert ids[0] == ids[1]
    assert not set(ids[0]) & set(ids[2])


def test_stop_ends_the_run_with_complete_files(tmp_path: Path) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    result = simulate_run(tmp_path, files=100, reads=10, samples=100, interval=0.2, stop=stop)
    timer.cancel()
    assert result.stopped
    assert 0 < len(result.files) < 100
    assert all(is_complete_pod5(f.path) for f in result.files)
    assert result.summaries[0].is_file()


def test_refuses_bad_arguments_and_existing_files(tmp_path: Path) -> None:
    for bad in ({"files": -1}, {"reads": 0}, {"flowcells": 0}, {"corrupt": -2}, {"layout": "x"}):
        kwargs = {"files": 1, "reads": 1, "samples": 10, "interval": 0, **bad}
        with pytest.raises(InvalidInput):
            simulate_run(tmp_path, **kwargs)
    for layout in ("flat", "minknow"):
        simulate_run(tmp_path, files=1, reads=1, samples=10, interval=0, layout=layout)
        with pytest.raises(InvalidInput, match="already exists"):  # would duplicate read ids
            plan_run(tmp_path, files=1, layout=layout, started=datetime(2030, 1, 1))


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--output", str(tmp_path / "run"), "--files", "2", "--reads", "3", "--samples", "50"]
    result = runner.invoke(
        command, [*args, "--interval", "0", "--corrupt", "1", "--layout", "minknow"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 pod5 file(s) with 6 reads and 1 corrupt file(s)" in result.output
    assert len(list((tmp_path / "run").rglob("*.pod5"))) == 3
    assert len(list((tmp_path / "run").rglob("final_summary_*.txt"))) == 1
    for bad in (["--files", "-1"], ["--corrupt", "-1"], ["--interval", "-1"], ["--flowcells", "0"]):
        result = runner.invoke(command, ["--output", str(tmp_path / "other"), *bad])
        assert result.exit_code == 2, bad  # a usage error, nothing written
        assert not (tmp_path / "other").exists()
    again = runner.invoke(
        command, [*args, "--interval", "0", "--layout", "flat", "--output", str(tmp_path / "run2")]
    )
    assert again.exit_code == 0
    clash = runner.invoke(command, [*args, "--interval", "0", "--output", str(tmp_path / "run2")])
    assert clash.exit_code == 2 and "already exists" in clash.output
