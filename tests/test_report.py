"""`bcm report` on a finished run, written after the manager stopped."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bcmanager.report import gather, render_html
from bcmanager.runstats import ALL, LedgerReader
from bcmanager.verify import verify_run
from tests.helpers import make_run
from tests.test_status import basecall, generations_manager, live_done_backfill_started

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


def bcm_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_ledger_reader_answers_per_generation(run_dirs) -> None:
    inp, out = run_dirs
    m = generations_manager(inp, out)
    live_done_backfill_started(m)  # fast: 5 done; sup: 2 done, 1 quarantined, 2 queued
    m.close()
    reader = LedgerReader(out / ".bcmanager" / "ledger.sqlite3")
    try:
        assert [(g.id, g.name) for g in reader.generations()] == [(0, "fast"), (1, "sup")]
        assert reader.known_names_in("") == {p.name for p in inp.glob("*.pod5")}
        assert len(reader.files(0)) == len(reader.files(1)) == 5 and len(reader.files(ALL)) == 10
        assert {f.gen for f in reader.files(1)} == {1}
        assert [q[0] for q in reader.quarantined(1)] == ["f0000.pod5"]
        assert reader.quarantined(0) == [] and reader.attempts(0) == (0, 0)
        assert reader.attempts(1) == (1, 1)
        (live,) = reader.runs(0)
        assert {s: t.files for s, t in live.by_state.items()} == {"done": 5}
        (sup,) = reader.runs(1)
        assert {s: t.files for s, t in sup.by_state.items()} == {
            "done": 2,
            "quarantined": 1,
            "queued": 2,
        }
        (both,) = reader.runs(ALL)
        assert both.total().files == 10 and both.by_state["done"].files == 7
        assert set(reader.runs_by_generation()) == {0, 1}
        assert sum(t.files for _, t in reader.done_timeline(60, 0)) == 5
        assert {g: sum(t.files for _, t in tl) for g, tl in reader.done_timelines(60).items()} == {
            0: 5,
            1: 2,
        }
        assert reader.engine_totals(0)["gpu1"].files == 5 and "gpu2" not in reader.engine_totals(0)
        assert reader.engine_totals(ALL)["gpu2"].files == 2
        assert reader.job_counts(1) == {"failed": 1, "done": 1}
        assert {j.gen for j in reader.jobs(1)} == {1}
        assert reader.done_span(1) is not None and reader.done_span(0)[0] < reader.done_span(1)[0]
        assert {(y["gen"], y["reads"]) for y in reader.yield_totals()} == {(0, 15), (1, 6)}
    finally:
        reader.close()


def test_report_per_generation(run_dirs, tmp_path) -> None:
    inp, out = run_dirs
    m = generations_manager(inp, out)
    live_done_backfill_started(m)
    while basecall(m, "gpu2") is not None:  # the rest of sup
        pass
    m.close()

    data = gather(out, workers=0)
    assert data.by_generation and [g.name for g in data.generations] == ["fast", "sup"]
    summaries = data.summaries()
    fast, sup = summaries["fast"], summaries["sup"]
    assert data.summary() == fast  # the run as it is written: the live generation
    assert (fast["files_written"], fast["files_done"], fast["files_quarantined"]) == (5, 5, 0)
    assert (sup["files_written"], sup["files_done"], sup["files_quarantined"]) == (5, 4, 1)
    assert fast["fastq_records"] == 15 and sup["fastq_records"] == 12  # each from its own tree
    assert fast["exactly_once"] is True and sup["exactly_once"] is True  # quarantine excepted
    db = sqlite3.connect(out / ".bcmanager" / "ledger.sqlite3")
    for gen, summary in enumerate((fast, sup)):
        jobs = db.execute("SELECT state, count(*) FROM jobs WHERE gen = ? GROUP BY 1", (gen,))
        assert summary["jobs"] == dict(jobs.fetchall())
    db.close()
    assert sup["jobs"]["failed"] == 1 and "failed" not in fast["jobs"]
    assert [y.reads for y in data.generations[1].yields] == [12]
    for name, summary in summaries.items():
        verified = verify_run(inp, out, workers=0, generation=name)
        assert summary["fastq_records"] == verified.records

    page = render_html(data)
    assert '<div class="verdict pass" id="verdict">fast: PASS' in page
    assert '<div class="verdict pass" id="verdict-sup">sup: PASS' in page
    assert '<h3 id="summary-sup">sup (backfill)' in page
    generations = re.search(r'<table class="generations">(.*?)</table>', page, re.S)
    assert generations, "no generations table"
    assert "<td>fast</td><td>live</td>" in generations.group(1)
    assert "<td>sup</td><td>backfill</td>" in generations.group(1)
    assert "<td>4 / 5</td><td>1</td><td>0</td><td>12</td>" in generations.group(1)
    assert "<td>fast</td><td>.</td><td>unclassified</td><td>15</td>" in page  # yield rows
    assert "<td>sup</td><td>.</td><td>unclassified</td><td>12</td>" in page
    assert "<td>sup</td><td>.</td><td>caught up</td><td>4 / 5</td>" in page  # run rows
    assert "<td>sup</td><td>f0000.pod5</td>" in page  # quarantined in sup only
    for plot in PLOTS:
        assert section(page, plot).lstrip().startswith("<svg"), plot

    html_path = tmp_path / "sup.html"
    only = bcm_report(
        "--output", str(out), "-o", str(html_path), "--generation", "sup", "--no-verify"
    )
    assert only.returncode == 0, only.stderr
    assert "sup: not checked" in only.stdout and "fast" not in only.stdout
    assert 'id="summary-fast"' not in html_path.read_text()
    unknown = bcm_report("--output", str(out), "-o", str(html_path), "--generation", "hac")
    assert unknown.returncode == 1 and "no generation hac" in unknown.stderr
