"""Filing aligned output with a sample sheet's aliases, as Dorado writes it with
`--reference` and `--sample-sheet`: every record kept (secondary and supplementary
alignments beside their primary), every read counted once by its primary record,
barcode folders and names from the alias, and the alignment columns in the summary.

Real pod5 files and the real simulated basecaller; its BAM is then aligned to a made-up
reference by rewriting its records with pysam (the simulated basecaller's own aligned
output has tests of its own), so that the positions here are known exactly.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pysam
import pytest

from bcmanager.basecallers.simulated import SimulatedBasecaller
from bcmanager.output.origin import job_origins
from bcmanager.output.split import split_output
from bcmanager.output.summary import ALIGNMENT_COLUMNS, COLUMNS, conform_rows, read_summary
from tests.helpers import read_strictly, run_invocation, two_run_job

KIT = "SQK-NBD114-24"
ALIASES = {"barcode01": "patient-7", "barcode02": "tumour.B"}
REFERENCE = [("chr1", 50_000), ("chr2", 30_000)]


def aligned_copy(raw: Path) -> dict[str, tuple[str, int, bool]]:
    """Rewrite every BAM under `raw` as aligned: @SQ lines, aliases in the read groups,
    each read mapped (chr, pos, strand by its index), every 5th unmapped, every 3rd with
    a secondary and a supplementary record. Returns {read id: (chr, pos, reverse)}."""
    placed: dict[str, tuple[str, int, bool]] = {}
    for path in sorted(raw.rglob("*.bam")):
        with pysam.AlignmentFile(str(path), check_sq=False) as src:
            header = src.header.to_dict()
            records = list(src)
        header["SQ"] = [{"SN": name, "LN": length} for name, length in REFERENCE]
        for rg in header.get("RG", []):
            barcode = str(rg.get("ID", "")).rsplit("_", 1)[-1]
            if barcode in ALIASES:
                rg["SM"], rg["al"] = barcode, ALIASES[barcode]
        out_path = path.with_suffix(".aligned")
        with pysam.AlignmentFile(str(out_path), "wb", header=header) as out:
            for k, r in enumerate(records):
                seg = pysam.AlignedSegment.from_dict(r.to_dict(), out.header)
                n = len(seg.query_sequence or "")
                if k % 5 == 4 or n == 0:
                    out.write(seg)  # unmapped: flag 4, stays in the output
                    continue
                ref, pos, reverse = REFERENCE[k % 2][0], 100 + 37 * k, bool(k % 2)
                seg.reference_name, seg.reference_start = ref, pos
                seg.flag = 16 if reverse else 0
                seg.mapping_quality, seg.cigarstring = 60, f"{n}M"
                seg.set_tag("NM", 1 if n > 1 else 0)
                placed[seg.query_name] = (ref, pos, reverse)
                out.write(seg)
                if k % 3 == 0:
                    for flag, at in ((256 | seg.flag, pos + 5_000), (2048 | seg.flag, pos + 9_000)):
                        other = pysam.AlignedSegment.from_dict(seg.to_dict(), out.header)
                        other.flag, other.reference_start = flag, at
                        if flag & 256:
                            other.query_sequence, other.query_qualities = None, None
                            other.cigarstring = "*" if n == 0 else f"{n}M"
                        out.write(other)
        out_path.replace(path)
    return placed


@pytest.fixture
def aligned_job(tmp_path: Path):
    root, job_in, job_out, where = two_run_job(tmp_path)
    inv = SimulatedBasecaller(0, style="dorado", kit_name=KIT).invocation(job_in, job_out)
    assert run_invocation(inv).returncode == 0
    raw = job_out / "basecalls"
    placed = aligned_copy(raw)
    origins = job_origins(job_in, root)
    result = split_output(raw, job_out, origins, job_id=3, min_qscore=9, barcoding=True)
    return job_out, result, placed, where


def records_of(dest: Path, files: dict[str, int]) -> list[tuple[str, pysam.AlignedSegment]]:
    found = []
    for rel in files:
        read_strictly(dest / rel)  # whole, to the EOF block
        with pysam.AlignmentFile(str(dest / rel)) as bam:
            assert [sq["SN"] for sq in bam.header.to_dict()["SQ"]] == [n for n, _ in REFERENCE]
            found += [(rel, seg) for seg in bam.fetch(until_eof=True)]
    return found


def test_every_read_once_by_its_primary_and_its_other_alignments_beside_it(aligned_job) -> None:
    dest, result, placed, _where = aligned_job
    records = records_of(dest, result.files)
    primaries = Counter(s.query_name for _, s in records if not (s.flag & 0x900))
    assert max(primaries.values()) == 1
    assert sum(result.files.values()) == len(primaries)  # counts are reads, not records
    others = [(rel, s) for rel, s in records if s.flag & 0x900]
    assert {s.flag & 0x900 for _, s in others} == {0x100, 0x800}
    primary_file = {s.query_name: rel for rel, s in records if not (s.flag & 0x900)}
    assert all(primary_file[s.query_name] == rel for rel, s in others)
    assert any(s.is_unmapped for _, s in records)  # unmapped reads stay
    for _rel, seg in records:
        if not (seg.flag & 0x900) and seg.query_name in placed:
            assert (seg.reference_name, seg.reference_start, seg.is_reverse) == placed[
                seg.query_name
            ]


def test_barcode_folders_and_names_use_the_sample_sheets_alias(aligned_job) -> None:
    dest, result, _placed, _where = aligned_job
    folders = {rel.split("/")[-2] for rel in result.files}
    assert "patient-7" in folders or "tumour.B" in folders
    assert not folders & set(ALIASES)  # an aliased barcode is never named by its number
    for rel in result.files:
        folder, name = rel.split("/")[-2:]
        if folder in ALIASES.values():
            assert f"_{folder}_" in name
    rows = [r for rel in result.summaries for r in read_summary(dest / rel)]
    by_alias = {(r["barcode_arrangement"], r["alias"]) for r in rows}
    assert by_alias & {(b, a) for b, a in ALIASES.items()}
    assert all(r["alias"] == r["barcode_arrangement"] for r in rows if r["alias"] == "unclassified")


def test_the_summary_has_one_row_per_read_with_its_alignment(aligned_job) -> None:
    dest, result, placed, _where = aligned_job
    rows = [r for rel in result.summaries for r in read_summary(dest / rel)]
    assert list(rows[0]) == [*COLUMNS, *ALIGNMENT_COLUMNS]
    assert len(rows) == len({r["read_id"] for r in rows}) == sum(result.files.values())
    for row in rows:
        if row["read_id"] in placed:
            ref, pos, reverse = placed[row["read_id"]]
            assert row["alignment_genome"] == ref
            assert int(row["alignment_genome_start"]) == pos
            assert row["alignment_direction"] == ("-" if reverse else "+")
            length = int(row["sequence_length_template"])
            assert int(row["alignment_genome_end"]) == pos + length
            assert int(row["alignment_num_substitutions"]) == (1 if length > 1 else 0)
            assert float(row["alignment_strand_coverage"]) == pytest.approx(1.0)
        else:
            assert row["alignment_genome"] == "*" and row["alignment_genome_start"] == "-1"


def test_rows_appended_to_a_summary_of_other_columns_take_its_columns() -> None:
    """One run's summary keeps one header though one job was aligned and another not."""
    plain = "\t".join(COLUMNS).encode() + b"\n"
    aligned = "\t".join([*COLUMNS, *ALIGNMENT_COLUMNS]).encode() + b"\n"
    row = [str(i) for i in range(len(COLUMNS))]
    aligned_row = "\t".join(row + ["chr1", "5", "9"] + ["0"] * 13).encode() + b"\n"
    down = list(conform_rows(aligned, plain, [aligned_row]))
    assert down == ["\t".join(row).encode() + b"\n"]
    up = list(conform_rows(plain, aligned, ["\t".join(row).encode() + b"\n"]))
    fields = up[0].rstrip(b"\n").split(b"\t")
    assert fields[: len(COLUMNS)] == [c.encode() for c in row]
    assert fields[len(COLUMNS)] == b"*" and fields[len(COLUMNS) + 1] == b"-1"
    assert list(conform_rows(plain, plain, [b"x\n"])) == [b"x\n"]
