"""`bcm report` on a finished run, written after the manager stopped."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bcmanager.report import gather
from bcmanager.verify import verify_run
from tests.helpers import make_run

PLOTS = ("throughput", "engines", "reads", "latency")


def read_lengths(output: Path) -> list[int]:
    """Every record's length, read independently of the report with pysam."""
    import pysam

    from bcmanager.verify import output_read_files

    lengths = []
    for path in output_read_files(output):
        with pysam.AlignmentFile(str(path), "rb", check_sq=False) as bam:
            lengths += [r.query_length for r in bam.fetch(until_eof=True)]
    return lengths


def section(page: str, plot: str) -> str:
    match = re.search(rf'<figure id="plot-{plot}">(.*?)</figure>', page, re.S)
    assert match, f"no figure for {plot}"
    return match.group(1)


def test_report_of_a_finished_run(run_dirs, start_manager, start_engine, tmp_path) -> None:
    inp, out = run_dirs
    make_run(inp, 6, reads=5, samples=2000)
    m = start_manager(inp, out, "--batch-size", "2")
    deadline = time.monotonic() + 20
    while m.status()["files_total"] < 6:
        assert time.monotonic() < deadline, "the scan did not find the files"
        time.sleep(0.05)
    engines = [start_engine(m.url, name, "--until-empty") for name in ("gpu1", "gpu2")]
    for e in engines:
        assert e.wait(timeout=60) == 0, e.log.read_text()
    assert m.terminate() == 0  # the report reads what a stopped manager left

    html_path = tmp_path / "report.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "report",
            "--output",
            str(out),
            "-o",
            str(html_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    page = html_path.read_text()
    assert "PASS" in result.stdout

    for plot in PLOTS:
        svg = section(page, plot)
        assert svg.lstrip().startswith("<svg") and "<path" in svg, plot
    assert "gpu1" in section(page, "engines") and "gpu2" in section(page, "engines")
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing to fetch

    verified = verify_run(inp, out, workers=0)
    assert verified.ok
    lengths = read_lengths(out)
    assert f"{verified.records:,} records in {verified.read_files:,} BAM/FASTQ files" in page
    assert f"all {verified.input_reads:,} reads of {verified.pod5_files:,} pod5 files" in page
    assert f"<td>bases</td><td>{sum(lengths):,}</td>" in page
    assert "6 basecalled of 6 written; 0 quarantined" in page

    data = gather(out, workers=0)
    summary = data.summary()
    db = sqlite3.connect(out / ".bcmanager" / "ledger.sqlite3")
    reads, samples, files, known = db.execute(
        "SELECT sum(reads), sum(samples), count(*), count(samples) FROM files WHERE state = 'done'"
    ).fetchone()
    jobs = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    db.close()
    assert summary["exactly_once"] is True
    assert summary["files_done"] == files == 6
    assert verified.input_reads == 30
    assert summary["reads_ledger"] == (reads or 0)  # counted only for files seen being written
    assert summary["samples_ledger"] == (samples or 0)
    assert summary["counts_known_files"] == known
    assert summary["fastq_records"] == verified.records == len(lengths) >= 30
    assert summary["bases"] == sum(lengths)
    assert summary["jobs"] == jobs
    assert summary["basecalling_s"] > 0 and summary["bases_per_s"] > 0
    assert summary["latency_p50_s"] is not None and summary["latency_p50_s"] >= 0
    assert sorted(data.fastq.lengths) == sorted(lengths)  # a small run is not sampled

    # yield per run and barcode: counted by the engines, summed by the manager, against
    # what verify reads back from the BAM files
    counted = {(y.run, y.barcode): y for y in data.yields}
    seen = {
        (run.run_folder, b.barcode or "unclassified"): b
        for run in verified.runs
        for b in run.barcodes
    }
    assert counted and set(counted) == set(seen)
    for key, y in counted.items():
        assert (y.reads, y.bases, y.pass_reads) == (
            seen[key].reads,
            seen[key].bases,
            seen[key].pass_reads,
        )
        assert f"<td>{y.run}</td><td>{y.barcode}</td><td>{y.reads:,}</td>" in page
