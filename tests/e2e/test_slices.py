"""Slices of large pod5 files through a real run: real `bcm engine`s basecall parts of one
file at once, the manager dies by kill -9 in a slice's merge, the ledger is lost, and
every read is still in the output exactly once (`bcm verify`, pysam, FASTQ)."""

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

from tests.helpers import assert_exactly_once, assert_run_complete, make_run, wait_until

# A large file: 60 reads of 4,000 samples (about 360 KB); a small one: 3 reads (17 KB).
SLICE_ABOVE_MIB = "0.1"
ENGINE = ("--until-empty", "--samples-per-s", "60000", "--wait", "5")


FLAGS = ("--lease", "4", "--slice-above", SLICE_ABOVE_MIB)


def _sliced_run(inp: Path, out: Path, start_manager, env: dict | None = None) -> tuple:
    """Three large files and three small ones, each a run of its own, and a manager that
    slices the large ones, their scan done: (the run's reads by file, the manager)."""
    run = make_run(inp, 3, reads=60, samples=4000, prefix="big", per_file_run_ids=True)
    run |= make_run(inp, 3, prefix="small", seed=7, per_file_run_ids=True)
    m = start_manager(inp, out, *FLAGS, env=env)
    wait_until(lambda: m.status()["files_total"] == 6, what="the scan")
    return run, m


def _manifests(out: Path) -> list[dict]:
    found = []
    for folder in out.iterdir():
        manifest = folder / "bcmanager-manifest.json"
        if folder.name.startswith(("LOGOUTPUT_", "TMPOUTPUT_")) and manifest.exists():
            found.append(json.loads(manifest.read_text()))
    return found


def _slices_merged(out: Path) -> dict[str, list[tuple[int, int]]]:
    """For each sliced file, the read ranges of its merged slices."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for plan in _manifests(out):
        for item in plan["inputs"]:
            if "slice" in item:
                s = item["slice"]
                ranges.setdefault(item["path"], []).append((s["first"], s["first"] + s["count"]))
    return {path: sorted(r) for path, r in ranges.items()}


def _assert_sliced_whole(out: Path, run: dict[str, list[str]]) -> dict[str, list]:
    """Each large file went out in slices that cover its reads end to end, none twice."""
    merged = _slices_merged(out)
    assert sorted(merged) == [p for p in sorted(run) if p.startswith("big")]
    for path, ranges in merged.items():
        assert ranges[0][0] == 0 and ranges[-1][1] == len(run[path])
        assert all(a[1] == b[0] for a, b in pairwise(ranges)), ranges
    return merged


def test_large_files_go_out_in_slices_to_several_engines_and_a_kill9_mid_merge_loses_nothing(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    run, crashing = _sliced_run(inp, out, start_manager, {"BCM_FAILPOINT": "merge.after-move"})
    engines = [start_engine(crashing.url, f"gpu{k}", *ENGINE) for k in (1, 2, 3)]
    assert crashing.proc.wait(timeout=60) == -9  # killed inside the first merge: a slice's
    assert any("slice" in i for plan in _manifests(out) for i in plan["inputs"])
    restarted = start_manager(inp, out, *FLAGS, port=crashing.port)
    for engine in engines:
        assert engine.wait(timeout=180) == 0, engine.log.read_text()[-3000:]
    assert restarted.status()["files"] == {"queued": 0, "assigned": 0, "done": 6, "quarantined": 0}
    merged = _assert_sliced_whole(out, run)
    assert any(len(ranges) >= 2 for ranges in merged.values()), merged
    engines_per_file = {
        path: {
            plan["engine"] for plan in _manifests(out) for i in plan["inputs"] if i["path"] == path
        }
        for path in run
        if path.startswith("big")
    }
    assert any(len(e) >= 2 for e in engines_per_file.values()), engines_per_file
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)  # pysam reads every BAM to its end; `bcm verify` passes
    pieces = sum(len(ranges) for ranges in merged.values())
    report = out.parent / "report.html"
    made = subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "report", "--output", str(out), "-o", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert f"3 large file(s) basecalled in {pieces} slices" in report.read_text()


def test_a_ledger_lost_mid_slicing_is_rebuilt_and_the_rest_of_the_file_sliced_again(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    run, m = _sliced_run(inp, out, start_manager)
    engine = start_engine(m.url, "gpu1", *ENGINE)
    wait_until(lambda: _slices_merged(out).get("big0000.pod5"), 60, "a slice merged")
    m.kill9()
    engine.kill()
    engine.wait(timeout=10)
    for suffix in ("", "-wal", "-shm"):
        ledger = out / ".bcmanager" / f"ledger.sqlite3{suffix}"
        if ledger.exists():
            ledger.unlink()
    restarted = start_manager(inp, out, *FLAGS, port=m.port)
    assert "rebuilt from the layout" in restarted.log.read_text()
    before = _slices_merged(out)
    merged = sum(b - a for a, b in before["big0000.pod5"])
    assert 0 < merged < 60, before  # the engine was killed mid-file
    status = restarted.status()["files"]
    assert status["assigned"] >= 1 and status["done"] < 6, status  # big0000 is part done
    (sliced,) = [s for s in restarted.status()["sliced"] if s["path"] == "big0000.pod5"]
    assert (sliced["reads"], sliced["reads_done"]) == (60, merged)
    assert sliced["reads_out"] + sliced["reads_queued"] == 60 - merged
    shown = subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "status", "--manager", restarted.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Files in slices" in shown.stdout and "big0000.pod5" in shown.stdout, shown.stdout
    again = start_engine(restarted.url, "gpu2", *ENGINE)
    assert again.wait(timeout=180) == 0, again.log.read_text()[-3000:]
    assert restarted.status()["files"]["done"] == 6
    after = _slices_merged(out)
    assert set(before["big0000.pod5"]) <= set(after["big0000.pod5"])
    _assert_sliced_whole(out, run)
    assert_exactly_once(run, out)
    assert_run_complete(inp, out)
    assert restarted.terminate() == 0
    assert not [d for d in os.listdir(inp) if d.startswith("ASSIGNED_")]
