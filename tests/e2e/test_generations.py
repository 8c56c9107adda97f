"""Model generations end to end: real manager, real `bcm engine`s, real pod5 and BAM.

The first files of each run are one run whose files each have their own protocol run id,
all sharing their first 8 hex digits (`tests.helpers.file_run_ids`): a batch of them once
made two outputs share a name and lost reads (issue 22)."""

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pysam

from bcmanager.verify import verify_run
from tests.helpers import LegacyDriver, assert_run_complete, make_run

RUN = "exp/sample/20261129_1200_1A_FAX1_abcd1234"
SIM = ["--basecaller", "simulated", "--samples-per-s", "0"]


def _live_run(inp: Path, n: int, prefix: str, seed: int, per_file_run_ids: bool = False) -> None:
    make_run(inp / RUN / "pod5", n, prefix=prefix, seed=seed, per_file_run_ids=per_file_run_ids)


def _wait(m, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = m.status()
        if done(status):
            return status
        assert time.monotonic() < deadline, status["generations"]
        time.sleep(0.2)


def _generation_files(status: dict, name: str) -> dict:
    return next(g for g in status["generations"] if g["name"] == name)["files"]


def _models_in_bam_headers(tree: Path) -> set[str]:
    models = set()
    for bam in tree.rglob("*.bam"):
        with pysam.AlignmentFile(str(bam), check_sq=False) as fh:
            for rg in fh.header.to_dict().get("RG", []):
                models.update(
                    part.split("=", 1)[1]
                    for part in rg.get("DS", "").split()
                    if part.startswith("basecall_model=")
                )
    return models


def test_a_live_run_and_its_backfill_each_basecall_every_read_once(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    _live_run(inp, 6, "a", 1, per_file_run_ids=True)
    m = start_manager(
        inp,
        out,
        "--generation",
        "fast=fast",
        "--generation",
        "sup=sup:modified-bases=6mA",
        "--batch-size",
        "2",
        "--live-window",
        "3",  # backfill on every engine once no file arrived for 3 s
    )
    engines = [start_engine(m.url, f"gpu{i}", *SIM) for i in (1, 2)]
    original = LegacyDriver(m.url, inp, out, "orig", native=True)  # the legacy protocol
    driver = threading.Thread(target=original.run, kwargs={"timeout": 120}, daemon=True)
    driver.start()
    _wait(m, lambda s: _generation_files(s, "fast")["done"] >= 2)
    _live_run(inp, 6, "b", 2)  # the run goes on while the backfill may have started
    status = _wait(m, lambda s: s["files_total"] == 24 and s["finished"])
    driver.join(timeout=30)
    for engine in engines:
        engine.terminate()
        engine.wait(timeout=30)
    assert _generation_files(status, "fast")["done"] == 12
    assert _generation_files(status, "sup")["done"] == 12
    assert_run_complete(inp, out, ("fast", "sup"))  # read as users' tools do; `bcm verify`
    for name in ("fast", "sup"):
        report = verify_run(inp, out, workers=0, generation=name)
        assert report.ok and report.summary_rows == report.records, report.to_dict()
        assert report.pod5_files == 12
    sup_models = _models_in_bam_headers(out / "generations" / "sup")
    assert sup_models and all("_sup@" in model for model in sup_models), sup_models
    # the bcm engines ran the live generation's model; the original engine runs its own
    assert any("_fast@" in model for model in _models_in_bam_headers(out / "generations" / "fast"))
    ledger = sqlite3.connect(out / ".bcmanager" / "ledger.sqlite3")
    legacy_gens = {g for (g,) in ledger.execute("SELECT DISTINCT gen FROM jobs WHERE api='legacy'")}
    assert legacy_gens <= {0}  # the original protocol's engine only ever got live work


def test_a_generation_added_after_the_run_survives_kill9_of_the_manager(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    _live_run(inp, 6, "a", 3, per_file_run_ids=True)
    m = start_manager(inp, out, "--batch-size", "2")
    first = start_engine(m.url, "gpu1", *SIM, "--until-empty")
    assert first.wait(timeout=120) == 0  # the run is basecalled
    assert m.terminate() == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.bam")}
    crashing = start_manager(
        inp, out, "--batch-size", "2", port=m.port, env={"BCM_FAILPOINT": "merge.after-append"}
    )
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "generations",
            "add",
            "sup=sup",
            "--manager",
            crashing.url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0 and "added sup" in added.stdout, added.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "generations", "list", "--manager", crashing.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "sup" in listed.stdout and "6 queued" in listed.stdout, listed.stdout
    engine = start_engine(crashing.url, "gpu2", *SIM, "--until-empty")
    assert crashing.proc.wait(timeout=120) == -9  # killed in the middle of sup's first merge
    restarted = start_manager(inp, out, "--batch-size", "2", port=crashing.port)
    assert engine.wait(timeout=120) == 0  # it waited for the manager and finished the backfill
    status = restarted.status()
    assert _generation_files(status, "sup")["done"] == 6
    assert _generation_files(status, "default")["done"] == 6
    assert_run_complete(inp, out, (None, "sup"))  # read as users' tools do; `bcm verify`
    report = verify_run(inp, out, workers=0, generation="sup")
    assert report.ok and report.summary_rows == report.records, report.to_dict()
    assert verify_run(inp, out, workers=0).ok  # the live tree, untouched:
    assert {
        p: p.stat().st_mtime_ns for p in out.rglob("*.bam") if "generations" not in p.parts
    } == before
