"""The simulated basecaller and the stand-in dorado with Dorado's `--reference`,
`--mm2-opts` and `--sample-sheet` (issue 25).

Real parts only: a random reference FASTA with a repeated segment, real pod5 files, the
simulated basecaller and the stand-in run as the engine runs them, the BAM read back to
its end by pysam (truncation and @SQ checked), and each primary alignment checked by an
independent run of real minimap2 (mappy).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mappy
import pysam
import pytest

from bcmanager.basecallers.abc import Invocation
from bcmanager.basecallers.simulated import SimulatedBasecaller
from bcmanager.errors import ConfigError
from bcmanager.layout import link_name
from bcmanager.pod5io import write_pod5
from bcmanager.records import parse_tags
from tests.helpers import run_invocation

FAKES = Path(__file__).parent / "fakes"
KIT = "SQK-NBD114-24"
DORADO_READ_TAGS = ("qs", "du", "ns", "ts", "mx", "ch", "st", "rn", "fn", "sm", "sd", "sv", "RG")
SECONDARY, SUPPLEMENTARY, UNMAPPED, REVERSE = 256, 2048, 4, 16
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def reverse_complement(sequence: str) -> str:
    return sequence.translate(COMPLEMENT)[::-1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Three random sequences (~150 kb), an 8 kb segment of chr1 repeated in chr2."""
    rng = random.Random(2025)

    def bases(n: int) -> str:
        return "".join(rng.choices("ACGT", k=n))

    repeat = bases(8000)
    sequences = {
        "chr1": bases(40_000) + repeat + bases(25_000),
        "chr2": bases(22_000) + repeat + bases(20_000),
        "chr3": bases(30_000),
    }
    path = tmp_path_factory.mktemp("reference") / "reference.fa"
    with open(path, "w") as fasta:
        for name, sequence in sequences.items():
            fasta.write(f">{name} simulated\n")
            for start in range(0, len(sequence), 70):
                fasta.write(sequence[start : start + 70] + "\n")
    return path, sequences


@pytest.fixture(scope="module")
def pod5_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two real pod5 files (runs run1/FA00001 and run2/FA00002) of 1-3 kb reads."""
    store = tmp_path_factory.mktemp("run") / "pod5"
    ids = write_pod5(store / "a_0.pod5", 45, samples=20_000, seed=1)
    ids += write_pod5(store / "a_1.pod5", 45, samples=20_000, seed=2)
    return store, ids


@pytest.fixture
def job(tmp_path: Path, pod5_store: tuple[Path, list[str]]) -> tuple[Path, Path, list[str]]:
    """A job as the manager prepares it: a folder of links to the pod5 files, an output."""
    store, ids = pod5_store
    input_dir = tmp_path / "ASSIGNED_1_e1"
    input_dir.mkdir()
    for path in sorted(store.iterdir()):
        os.symlink(path, input_dir / link_name(f"pod5/{path.name}"))
    output_dir = tmp_path / "TMPOUTPUT_1_e1"
    output_dir.mkdir()
    return input_dir, output_dir, ids


def read_bam(path: Path, aligned: bool = True) -> tuple[dict, list[pysam.AlignedSegment]]:
    """Every record, read to the end: a truncated file (or, `aligned`, a header
    without @SQ lines) raises."""
    with pysam.AlignmentFile(str(path), "rb", check_sq=aligned, ignore_truncation=False) as bam:
        return bam.header.to_dict(), list(bam.fetch(until_eof=True))


def basecall(basecaller: SimulatedBasecaller, input_dir: Path, output_dir: Path) -> Path:
    inv = basecaller.invocation(input_dir, output_dir)
    result = run_invocation(inv)
    assert result.returncode == 0, result.stderr
    assert inv.stdout_path is not None
    return inv.stdout_path


def is_primary(record: pysam.AlignedSegment) -> bool:
    return not record.flag & (SECONDARY | SUPPLEMENTARY)


def by_read(records: list[pysam.AlignedSegment]) -> dict[str, list[pysam.AlignedSegment]]:
    reads: dict[str, list[pysam.AlignedSegment]] = {}
    for record in records:
        reads.setdefault(record.query_name, []).append(record)
    return reads


def original_sequence(record: pysam.AlignedSegment) -> str:
    """The read as it was basecalled (SEQ is reverse-complemented on the - strand)."""
    sequence = record.query_sequence
    return reverse_complement(sequence) if record.is_reverse else sequence


def run_standin(
    args: list[str], input_dir: Path, out: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "BCM_PYTHON": sys.executable, "BCM_DORADO_STANDIN_STYLE": "dorado"}
    with open(out, "w") as stdout:
        return subprocess.run(
            [str(FAKES / "dorado"), "basecaller", "hac", str(input_dir), *args],
            env={**environ, **env},
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )


def test_reads_are_drawn_from_the_reference_and_aligned_by_minimap2(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]]
) -> None:
    input_dir, output_dir, ids = job
    ref_path, sequences = reference
    basecaller = SimulatedBasecaller(0, reference=ref_path)
    header, records = read_bam(basecall(basecaller, input_dir, output_dir))

    # the header: Dorado's @HD/@PG kept, one @SQ per reference sequence with its M5 and UR
    assert header["HD"] == {"VN": "1.6", "SO": "unknown"}
    assert header["PG"][0]["PN"] == "dorado" and "--reference" in header["PG"][0]["CL"]
    assert [(sq["SN"], sq["LN"]) for sq in header["SQ"]] == [
        (name, len(sequence)) for name, sequence in sequences.items()
    ]
    for sq in header["SQ"]:
        assert sq["M5"] == hashlib.md5(sequences[sq["SN"]].encode()).hexdigest()
        assert sq["UR"] == f"file://{os.path.realpath(ref_path)}"

    # every read once as its primary (or unmapped) record, every pod5 read there
    primaries = [r for r in records if is_primary(r)]
    assert all(n == 1 for n in Counter(r.query_name for r in primaries).values())
    reads = by_read(records)
    assert set(reads) == {r.query_name for r in primaries}
    parents = {r.get_tag("pi") if r.has_tag("pi") else r.query_name for r in primaries}
    assert parents == set(ids)
    assert any(r.has_tag("pi") for r in primaries)  # split reads are there too

    # records unsorted, in read order: a read's records together, its primary first
    order = [r.query_name for r in records]
    assert [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name] == list(reads)

    unmapped = [r for r in primaries if r.is_unmapped]
    mapped = [r for r in primaries if not r.is_unmapped]
    assert 0 < len(unmapped) < len(primaries) / 4  # about one read in ten from elsewhere
    for record in unmapped:
        assert record.flag == UNMAPPED and record.reference_id == -1
        assert record.query_sequence and not record.has_tag("NM")
    assert any(r.is_reverse for r in mapped) and any(r.is_forward for r in mapped)

    # each record keeps the read's Dorado tags; minimap2's are added
    for record in records:
        for tag in DORADO_READ_TAGS:
            assert record.has_tag(tag), (record.query_name, tag)
    for record in mapped:
        assert record.flag in (0, REVERSE)
        assert record.get_tag("tp") == "P" and record.get_tag("NM") >= 0
        assert 0 <= record.get_tag("de") < 0.15 and record.get_tag("nn") == 0
        assert record.has_tag("MD") and record.query_sequence and record.query_qualities
        assert len(record.query_sequence) == record.infer_read_length()

    # the repeat: secondary records, no SEQ/QUAL, soft-clipped as minimap2 writes them
    secondary = [r for r in records if r.flag & SECONDARY]
    assert secondary
    for record in secondary:
        assert not record.flag & (SUPPLEMENTARY | UNMAPPED)
        assert record.query_sequence is None and record.get_tag("tp") == "S"
        assert record.mapping_quality == 0 and not record.has_tag("SA")
        assert "H" not in record.cigarstring
    assert {sequences[r.reference_name] for r in secondary} <= set(sequences.values())

    # chimeric reads: supplementary records, hard-clipped, SA on the primary naming them
    supplementary = [r for r in records if r.flag & SUPPLEMENTARY]
    assert supplementary
    for record in supplementary:
        primary = next(r for r in reads[record.query_name] if is_primary(r))
        assert "H" in record.cigarstring and record.get_tag("tp") == "P"
        assert len(record.query_sequence) == record.query_alignment_length
        strand = "-" if record.is_reverse else "+"
        assert f"{record.reference_name},{record.reference_start + 1},{strand}," in primary.get_tag(
            "SA"
        )
        assert f"{primary.reference_name},{primary.reference_start + 1}," in record.get_tag("SA")
        assert (
            record.query_sequence in primary.query_sequence
            or reverse_complement(record.query_sequence) in primary.query_sequence
        )

    # an independent minimap2 agrees with every primary: reference, position, strand
    same = mappy.Aligner(str(ref_path), preset="lr:hq")  # Dorado's default preset
    other = mappy.Aligner(str(ref_path), preset="map-ont")
    for record in mapped:
        hits = [h for h in same.map(original_sequence(record)) if h.is_primary]
        assert (hits[0].ctg, hits[0].r_st, hits[0].strand < 0) == (
            record.reference_name,
            record.reference_start,
            record.is_reverse,
        )
        assert hits[0].cigar_str in record.cigarstring
        if record.mapping_quality >= 30:  # unique: map-ont finds the same place
            best = next(h for h in other.map(original_sequence(record)) if h.is_primary)
            assert best.ctg == record.reference_name and (best.strand < 0) == record.is_reverse
            assert best.r_st < record.reference_end and record.reference_start < best.r_en
    # and the reads not written as mapped do not map at all
    assert all(not list(same.map(r.query_sequence)) for r in unmapped)


def test_aligned_output_is_deterministic(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    basecaller = SimulatedBasecaller(0, reference=reference[0], kit_name=KIT, model="sup")
    first_header, first = read_bam(basecall(basecaller, input_dir, output_dir))
    second_header, second = read_bam(basecall(basecaller, input_dir, tmp_path / "again"))
    assert first_header["SQ"] == second_header["SQ"] and first_header["RG"] == second_header["RG"]
    assert [r.to_string() for r in first] == [r.to_string() for r in second]
    assert any(r.is_mapped for r in first)


def test_mm2_opts_reach_the_basecallers_process(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    basecaller = SimulatedBasecaller(0, reference=reference[0], mm2_opts="--secondary=no -k 17")
    argv = basecaller.invocation(input_dir, output_dir).argv
    assert "--mm2-opts=--secondary=no -k 17" in argv
    assert argv[argv.index("--reference") + 1] == str(reference[0])
    header, records = read_bam(basecall(basecaller, input_dir, output_dir))
    assert "--mm2-opts=--secondary=no -k 17" in header["PG"][0]["CL"]
    assert records and not any(r.flag & SECONDARY for r in records)
    assert any(r.flag & SUPPLEMENTARY for r in records)
    # another model of the same engine keeps its reference, options and sample sheet
    other = basecaller.with_recipe("sup", KIT, ())
    assert (other.options.reference, other.options.mm2_opts) == (
        str(reference[0]),
        "--secondary=no -k 17",
    )


def test_a_minimap2_index_is_a_reference_too(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Dorado takes a .mmi for --reference: the same reads, @SQ without M5 and UR."""
    input_dir, output_dir, _ = job
    ref_path, sequences = reference
    index = tmp_path / "reference.mmi"
    assert mappy.Aligner(str(ref_path), preset="lr:hq", fn_idx_out=str(index))
    _, from_fasta = read_bam(
        basecall(SimulatedBasecaller(0, reference=ref_path), input_dir, output_dir)
    )
    header, from_index = read_bam(
        basecall(SimulatedBasecaller(0, reference=index), input_dir, tmp_path / "mmi")
    )
    assert header["SQ"] == [{"SN": name, "LN": len(seq)} for name, seq in sequences.items()]
    assert [r.to_string() for r in from_index] == [r.to_string() for r in from_fasta]


def test_error_rates_follow_the_model(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    input_dir, _, _ = job
    divergence = {}
    for model in ("fast", "hac", "sup"):
        path = basecall(
            SimulatedBasecaller(0, model=model, reference=reference[0]), input_dir, tmp_path / model
        )
        mapped = [r for r in read_bam(path)[1] if is_primary(r) and r.is_mapped]
        events = sum(r.get_tag("NM") for r in mapped)
        divergence[model] = events / sum(r.query_alignment_length for r in mapped)
    assert 0.005 < divergence["sup"] < divergence["hac"] < divergence["fast"] < 0.1, divergence


def test_stand_in_dorado_takes_reference_and_mm2_opts(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    input_dir, _, ids = job
    out = tmp_path / "calls.bam"
    opts = "-x map-ont -k 15 -w 10 --secondary=no -Y"
    result = run_standin(["--reference", str(reference[0]), "--mm2-opts", opts], input_dir, out)
    assert result.returncode == 0, result.stderr
    header, records = read_bam(out)
    assert [sq["SN"] for sq in header["SQ"]] == ["chr1", "chr2", "chr3"]
    assert header["PG"][0]["CL"].startswith("dorado basecaller hac ")
    assert f"--mm2-opts '{opts}'" in header["PG"][0]["CL"]
    primaries = [r for r in records if is_primary(r)]
    parents = {r.get_tag("pi") if r.has_tag("pi") else r.query_name for r in primaries}
    assert parents == set(ids)
    assert not any(r.flag & SECONDARY for r in records)  # --secondary=no
    supplementary = [r for r in records if r.flag & SUPPLEMENTARY]
    assert supplementary
    for record in supplementary:  # -Y: soft-clipped, with all its bases
        assert "H" not in record.cigarstring and "S" in record.cigarstring
        primary = next(r for r in primaries if r.query_name == record.query_name)
        assert len(record.query_sequence) == len(primary.query_sequence)

    # the default: secondary records, hard-clipped supplementary ones
    plain = tmp_path / "plain.bam"
    result = run_standin(["--reference", str(reference[0])], input_dir, plain)
    assert result.returncode == 0, result.stderr
    records = read_bam(plain)[1]
    assert any(r.flag & SECONDARY for r in records)
    assert all("H" in r.cigarstring for r in records if r.flag & SUPPLEMENTARY)


def test_what_dorado_refuses_is_refused(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    ref = reference[0]
    fastq_message = "--emit-fastq cannot be used with --reference"
    with pytest.raises(ConfigError, match=fastq_message):
        SimulatedBasecaller(0, reference=ref, emit_fastq=True)
    with pytest.raises(ConfigError, match="Unknown argument: -z"):
        SimulatedBasecaller(0, reference=ref, mm2_opts="-z 3")
    with pytest.raises(ConfigError, match="preset: nonsense"):
        SimulatedBasecaller(0, reference=ref, mm2_opts="-x nonsense")
    with pytest.raises(ConfigError, match="cannot read reference"):
        SimulatedBasecaller(0, reference=tmp_path / "missing.fa")
    with pytest.raises(ConfigError, match="dorado style"):
        SimulatedBasecaller(0, style="legacy", reference=ref)

    result = run_standin(["--reference", str(ref), "--emit-fastq"], input_dir, tmp_path / "o")
    assert result.returncode == 1 and fastq_message in result.stderr
    result = run_standin(["--reference", str(ref), "--mm2-opts", "-k"], input_dir, tmp_path / "o")
    assert result.returncode == 1 and "-k" in result.stderr

    # the module refuses them as the stand-in does, when run by hand
    legacy = SimulatedBasecaller(0, style="legacy").invocation(input_dir, output_dir)
    with_ref = Invocation([*legacy.argv, "--reference", str(ref)], env=legacy.env)
    assert run_invocation(with_ref).returncode == 2  # Dorado flags need the dorado style


def write_sheet(path: Path) -> Path:
    path.write_text(
        "flow_cell_id,experiment_id,kit,barcode,alias\n"
        f"FA00001,bcmanager,{KIT},barcode01,patient_a\n"
        f"FA00002,bcmanager,{KIT},barcode01,patient_a\n"
        f"FA00001,bcmanager,{KIT},barcode02,patient_b\n"
        f"FA00002,bcmanager,{KIT},barcode02,patient_b\n"
        f"FA00001,bcmanager,{KIT},barcode03,patient_c\n"
    )
    return path


def test_sample_sheet_aliases_as_dorado_writes_them(
    job: tuple[Path, Path, list[str]], reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """barcode01/02 have aliases on both flow cells, barcode03 on FA00001 only, barcode04
    is not listed: Dorado classifies it no more."""
    input_dir, output_dir, _ = job
    sheet = write_sheet(tmp_path / "sheet.csv")
    ref = reference[0]
    plain_bam = basecall(SimulatedBasecaller(0, kit_name=KIT), input_dir, output_dir)
    _, plain = read_bam(plain_bam, aligned=False)
    with_sheet = SimulatedBasecaller(0, kit_name=KIT, sample_sheet=sheet, reference=ref)
    header, records = read_bam(basecall(with_sheet, input_dir, tmp_path / "sheet"))

    groups = {rg["ID"]: rg for rg in header["RG"]}
    model = "dna_r10.4.1_e8.2_400bps_hac@v5.2.0"
    for run in ("run1", "run2"):
        for barcode, alias in (("barcode01", "patient_a"), ("barcode02", "patient_b")):
            group = groups[f"{run}_{model}_{alias}"]
            assert (group["SM"], group["al"], group["bk"]) == (barcode, alias, KIT)
    assert groups[f"run1_{model}_patient_c"]["SM"] == "barcode03"
    listed_only = groups[f"run2_{model}_{KIT}_barcode03"]  # no alias for FA00002
    assert (listed_only["SM"], listed_only["al"]) == ("barcode03", "barcode03")
    assert not any(rg.get("SM") == "barcode04" for rg in header["RG"])

    barcode_of = {r.query_name: r.get_tag("BC") if r.has_tag("BC") else None for r in plain}
    seen = Counter()
    for record in records:  # every record of a read, aligned or not, carries it
        assert record.get_tag("RG") in groups
        run = "run1" if record.get_tag("fn").endswith("a_0.pod5") else "run2"
        barcode = barcode_of[record.query_name]
        alias = {
            f"{KIT}_barcode01": "patient_a",
            f"{KIT}_barcode02": "patient_b",
            f"{KIT}_barcode03": "patient_c" if run == "run1" else None,
        }.get(barcode)
        if alias is None:  # unlisted, or listed without an alias for its run: unclassified
            assert not record.has_tag("BC") and record.get_tag("RG") == f"{run}_{model}"
        else:
            assert record.get_tag("BC") == alias
            assert record.get_tag("RG") == f"{run}_{model}_{alias}"
        assert not record.has_tag("al")  # Dorado writes the alias per read in FASTQ only
        seen[barcode, alias] += 1
    assert all(seen[f"{KIT}_barcode0{i}", a] for i, a in ((1, "patient_a"), (2, "patient_b")))
    assert seen[f"{KIT}_barcode04", None] and seen[f"{KIT}_barcode03", "patient_c"]
    assert seen[f"{KIT}_barcode03", None]

    # FASTQ: SM (the barcode) and al (its alias) in each classified read's header
    fastq = SimulatedBasecaller(0, kit_name=KIT, sample_sheet=sheet, emit_fastq=True)
    path = basecall(fastq, input_dir, tmp_path / "fastq")
    aliases = set()
    with pysam.FastxFile(str(path)) as entries:
        for entry in entries:
            tags = parse_tags(entry.comment)
            if "BC" in tags:
                assert tags["al"] == tags["BC"] and tags["SM"].startswith("barcode0")
                aliases.add(tags["al"])
    assert aliases == {"patient_a", "patient_b", "patient_c"}


def test_stand_in_dorado_takes_a_sample_sheet(
    job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, _, _ = job
    sheet = write_sheet(tmp_path / "sheet.csv")
    out = tmp_path / "calls.bam"
    result = run_standin(["--kit-name", KIT, "--sample-sheet", str(sheet)], input_dir, out)
    assert result.returncode == 0, result.stderr
    header, records = read_bam(out, aligned=False)
    assert {r.get_tag("BC") for r in records if r.has_tag("BC")} == {
        "patient_a",
        "patient_b",
        "patient_c",
    }
    assert {rg["al"] for rg in header["RG"] if "al" in rg} >= {"patient_a", "barcode03"}
    bad = write_sheet(tmp_path / "bad.csv")
    bad.write_text(bad.read_text().replace("patient_c", "barcode07"))
    result = run_standin(["--kit-name", KIT, "--sample-sheet", str(bad)], input_dir, out)
    assert result.returncode == 1 and "barcode07" in result.stderr
