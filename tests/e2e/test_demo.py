"""`bcm demo`, the README's first command, end to end (shortened)."""

import subprocess
import sys

from tests.helpers import assert_run_complete


def test_the_demo_basecalls_every_read_exactly_once(tmp_path) -> None:
    workdir = tmp_path / "demo"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--files",
            "4",
            "--interval",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every read basecalled exactly once" in r.stdout
    assert "quarantined" in r.stdout and "failed 2 attempts" in r.stdout
    output = workdir / "output"
    bams = list(output.glob("*/*/*/bam_pass/barcode*/*.bam"))  # experiment/sample/run/...
    assert bams, sorted(str(p.relative_to(output)) for p in output.rglob("*"))[:50]
    assert list(output.glob("*/*/*/sequencing_summary_*.txt"))
    assert "barcode0" in r.stdout and "summary rows" in r.stdout
    listed = (workdir / "output" / "QUARANTINE" / "quarantined.tsv").read_text().splitlines()
    assert len(listed) == 1  # the one corrupt file, nothing else
    assert_run_complete(workdir / "input", output)  # read as users' tools do; `bcm verify`


def test_the_demo_refuses_a_used_workdir(tmp_path) -> None:
    (tmp_path / "x").write_text("mine")
    r = subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "not empty" in r.stderr
