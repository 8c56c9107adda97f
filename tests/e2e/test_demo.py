"""`bcm demo`, the README's first command, end to end (shortened).

The demo's engines basecall with a barcoding kit, a reference and a sample sheet (issue
25): its output is aligned BAM (the reference's @SQ lines, primary and secondary records)
filed under the sheet's aliases, and its closing summary says how many reads mapped and
which aliases. Before issue 25 `bcm engine` had no --reference or --sample-sheet: the
demo's engines exit at their start, so the demo fails (it stops on an engine that exits).
"""

import csv
import os
import subprocess
import sys
from collections import Counter

import pysam

from bcmanager.output.summary import read_summary
from tests.helpers import assert_run_complete


def kind_of(seg: pysam.AlignedSegment) -> str:
    if seg.is_secondary:
        return "secondary"
    if seg.is_supplementary:
        return "supplementary"
    return "unmapped" if seg.is_unmapped else "mapped"


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
        env={**os.environ, "COLUMNS": "250"},  # the summary's lines unwrapped
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every read basecalled exactly once" in r.stdout
    assert "quarantined" in r.stdout and "failed 2 attempts" in r.stdout
    output = workdir / "output"
    assert list(output.glob("*/*/*/sequencing_summary_*.txt"))
    assert "summary rows" in r.stdout and "reads mapped" in r.stdout
    listed = (workdir / "output" / "QUARANTINE" / "quarantined.tsv").read_text().splitlines()
    assert len(listed) == 1  # the one corrupt file, nothing else
    assert_run_complete(workdir / "input", output)  # read as users' tools do; `bcm verify`

    # the sample sheet the demo wrote: each flow cell's barcodes by their own aliases
    with open(workdir / "sample_sheet.csv", encoding="ascii", newline="") as fh:
        sheet = list(csv.DictReader(fh))
    aliases = {(row["flow_cell_id"], row["barcode"]): row["alias"] for row in sheet}
    assert len(aliases) == len(sheet) and {row["kit"] for row in sheet} == {"SQK-NBD114-24"}
    assert all(alias in r.stdout for alias in aliases.values())  # the summary names them
    by_cell: dict[str, set[str]] = {}
    for (flow_cell, _barcode), alias in aliases.items():
        by_cell.setdefault(flow_cell, set()).add(alias)

    # experiment/sample/<run folder>/bam_{pass,fail}/<alias or unclassified>/*.bam
    bams = sorted(output.glob("*/*/*/bam_*/*/*.bam"))
    assert bams, sorted(str(p.relative_to(output)) for p in output.rglob("*"))[:50]
    kinds, folders = Counter(), set()
    for bam in bams:
        run_folder, folder = bam.parents[2].name, bam.parent.name
        flow_cell = run_folder.split("_")[3]  # <date>_<time>_<position>_<flow cell>_<id>
        assert folder in ("unclassified", *by_cell[flow_cell]), bam  # its flow cell's alias
        folders.add(folder)
        with pysam.AlignmentFile(str(bam)) as fh:  # check_sq on: aligned BAM has @SQ lines
            assert [sq["SN"] for sq in fh.header.to_dict()["SQ"]] == ["chr1", "chr2"]
            kinds.update(kind_of(seg) for seg in fh.fetch(until_eof=True))
    assert folders == {*aliases.values(), "unclassified"}  # no barcodeNN folder is left
    assert kinds["mapped"] and kinds["unmapped"] and kinds["secondary"], kinds
    assert f"{kinds['mapped']} of {kinds['mapped'] + kinds['unmapped']} reads mapped" in r.stdout

    # one summary row per read, with its alias and where it mapped
    rows = [row for p in output.glob("*/*/*/sequencing_summary_*.txt") for row in read_summary(p)]
    assert len(rows) == kinds["mapped"] + kinds["unmapped"]
    assert sum(row["alignment_genome"] != "*" for row in rows) == kinds["mapped"]
    assert {row["alias"] for row in rows} == {*aliases.values(), "unclassified"}


def test_the_demo_refuses_a_used_workdir(tmp_path) -> None:
    (tmp_path / "x").write_text("mine")
    r = subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "not empty" in r.stderr
