"""A whole run aligned to a reference with a sample sheet, as a barcoded run with
`--reference` and `--sample-sheet` is basecalled: a real manager, two real `bcm engine
--basecaller simulated` processes (reads drawn from the reference and aligned with
minimap2 through mappy), real pod5 of one flow cell.

Then `bcm verify` passes (every read once, counted by its primary record), every BAM
reads to its end with the reference's @SQ lines and some secondary or supplementary
records beside their primaries, aliased barcodes are filed under their alias, and the
sequencing summary has one row per read with the alignment and alias columns.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pysam

from bcmanager.output.naming import RunIds
from bcmanager.output.summary import ALIGNMENT_COLUMNS, read_summary
from tests.helpers import assert_run_complete, wait_until, write_run_pod5

KIT = "SQK-NBD114-24"
FLOW_CELL = "PAK00000"
ACQUISITION = "3f6c1a0e-9b1d-4c2e-8a7f-5d4e3c2b1a0f"
ALIASES = {f"barcode{n:02d}": f"sample-{n:02d}" for n in range(1, 13)}  # 13-24 unlisted


def write_reference(path: Path) -> None:
    """Two random chromosomes, the second with a repeat of the first's start (reads from
    it align twice: secondary records)."""
    rng = random.Random(7)
    chr1 = "".join(rng.choice("ACGT") for _ in range(60_000))
    chr2 = "".join(rng.choice("ACGT") for _ in range(30_000)) + chr1[:8_000]
    with open(path, "w", encoding="ascii") as fh:
        for name, seq in (("chr1", chr1), ("chr2", chr2)):
            fh.write(f">{name}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))


def write_sheet(path: Path) -> None:
    rows = ["flow_cell_id,experiment_id,kit,barcode,alias,type"]
    rows += [f"{FLOW_CELL},bcmanager,{KIT},{b},{a},test_sample" for b, a in ALIASES.items()]
    path.write_text("\n".join(rows) + "\n", encoding="ascii")


def kind_of(seg: pysam.AlignedSegment) -> str:
    if seg.is_secondary:
        return "secondary"
    if seg.is_supplementary:
        return "supplementary"
    return "unmapped" if seg.is_unmapped else "primary"


def test_an_aligned_barcoded_run_with_aliases_is_filed_whole_and_counted_once(
    run_dirs, start_manager, start_engine, tmp_path: Path
) -> None:
    inp, out = run_dirs
    for i in range(8):
        ids = RunIds(FLOW_CELL, f"00000000-0000-0000-0000-{i + 1:012d}", ACQUISITION)
        write_run_pod5(inp / f"{FLOW_CELL}_{i:02d}.pod5", ids, 10, seed=i + 1, samples=6000)
    reference, sheet = tmp_path / "ref.fa", tmp_path / "sheet.csv"
    write_reference(reference)
    write_sheet(sheet)
    m = start_manager(inp, out, "--batch-size", "3")
    wait_until(lambda: m.status()["files_total"] == 8, what="the scan")
    options = ["--until-empty", "--kit-name", KIT, "--reference", str(reference)]
    options += ["--sample-sheet", str(sheet)]
    engines = [start_engine(m.url, f"gpu{k}", *options) for k in (1, 2)]
    for e in engines:
        assert e.wait(timeout=240) == 0, e.log.read_text()[-3000:]

    report = assert_run_complete(inp, out)[0]
    assert report["ok"]

    bams = sorted(p for p in out.rglob("*.bam") if "OUTPUT_" not in str(p))
    flags, folders = Counter(), set()
    for bam in bams:
        folders.add(bam.parent.name)
        with pysam.AlignmentFile(str(bam)) as fh:  # check_sq on: the @SQ lines are there
            assert [sq["SN"] for sq in fh.header.to_dict()["SQ"]] == ["chr1", "chr2"]
            for seg in fh.fetch(until_eof=True):
                flags[kind_of(seg)] += 1
    assert flags["primary"] and flags["unmapped"]
    assert flags["secondary"] + flags["supplementary"] > 0
    aliased = folders & set(ALIASES.values())
    assert aliased, folders
    assert not folders & set(ALIASES)  # no listed barcode under its number

    summaries = [p for p in out.rglob("sequencing_summary_*.txt") if "OUTPUT_" not in str(p)]
    rows = [row for p in summaries for row in read_summary(p)]
    assert len(rows) == len({r["read_id"] for r in rows})  # one row per read
    assert all(set(ALIGNMENT_COLUMNS) <= set(r) for r in rows)
    mapped = [r for r in rows if r["alignment_genome"] != "*"]
    assert mapped and all(r["alignment_genome"] in ("chr1", "chr2") for r in mapped)
    assert {r["alias"] for r in rows} & set(ALIASES.values())
    for r in rows:
        if r["barcode_arrangement"] in ALIASES:
            assert r["alias"] == ALIASES[r["barcode_arrangement"]]
