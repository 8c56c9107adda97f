"""Real consumers read our MinKNOW-style output (issue 11).

A small real output tree: pod5 files of two runs (run A in a MinKNOW run folder, three
files in two jobs; run B a loose pod5 in a third job), basecalled by the real simulated
basecaller in its Dorado style with a barcoding kit (a subprocess), each job split by
`bcmanager.output.split` into `OUTPUT/<run folder>/bam_{pass,fail}/<barcode>/` with its
sequencing summary fragment. Then what a sequencing centre runs next reads it:

- pysam opens every BAM (unaligned, `check_sq=False`) and every pod5 read is there;
- NanoPlot (a subprocess, from this venv) reads each run's summary fragments and each
  run's BAM files (`--ubam`), and its NanoStats report the numbers the reads give;
- NanoPlot reads aligned output too (issue 25): a run basecalled with `--reference` and
  `--sample-sheet` (the simulated basecaller aligns with real minimap2; secondary and
  supplementary records beside their primaries, files under the sheet's aliases) is
  sorted and indexed with samtools, as NanoPlot's `--bam` needs (its `check_bam` refuses
  an unsorted BAM, and Dorado's and MinKNOW's are unsorted), then read with `--bam`: its
  NanoStats count the mapped reads (primaries, plus supplementary alignments unless
  `--no_supplementary`; never secondary or unmapped records), their bases, aligned bases
  and percent identity, as pysam and our sequencing summary count them;
- pycoQC reads each run's summary where it installs. It pins plotly 4.1 (NanoPlot needs
  plotly 6) and breaks on pandas 3, so it is no test dependency: the test looks for it in
  this venv or at `$BCM_PYCOQC` (an executable in a venv of its own) and skips otherwise.

Numbers are checked, not exit codes only: reads, bases, N50, channels, mean and median
qscore, reads per barcode and pass reads.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pysam
import pytest

from bcmanager.basecallers.simulated import SimulatedBasecaller
from bcmanager.demo import write_reference, write_sample_sheet
from bcmanager.layout import link_name
from bcmanager.output.naming import RunIds
from bcmanager.output.origin import job_origins
from bcmanager.output.split import split_output
from bcmanager.output.summary import read_summary
from tests.helpers import run_invocation, write_run_pod5

BIN = Path(sys.executable).parent
KIT = "SQK-NBD114-24"
MIN_QSCORE = 9  # hac, as MinKNOW's default
READS_PER_FILE = 20
RUN_A = RunIds(
    "PAW11111", "000000a1-0000-4000-8000-00000000000a", "000000a2-0000-4000-8000-00000000000a"
)
RUN_B = RunIds(
    "PBC22222", "000000b1-0000-4000-8000-00000000000b", "000000b2-0000-4000-8000-00000000000b"
)
FOLDER_A = "exp/sample/20260101_0000_1A_PAW11111_000000a1"
FOLDER_B = "loose/PBC22222_000000b2"
# job id -> (run, INPUT-relative pod5 paths): a job holds files of one run only
JOBS: dict[int, tuple[RunIds, list[str]]] = {
    1: (
        RUN_A,
        [f"{FOLDER_A}/pod5/PAW11111_000000a1_0.pod5", f"{FOLDER_A}/pod5/PAW11111_000000a1_1.pod5"],
    ),
    2: (RUN_A, [f"{FOLDER_A}/pod5/PAW11111_000000a1_2.pod5"]),
    3: (RUN_B, ["loose/b.pod5"]),
}
RUN_FOLDERS = {RUN_A.run_id: FOLDER_A, RUN_B.run_id: FOLDER_B}
# the aligned run (issue 25): one flow cell, two jobs, reads long enough that some are
# chimeric (supplementary records); the reference's repeat gives secondary records
RUN_C = RunIds(
    "PAX33333", "000000c1-0000-4000-8000-00000000000c", "000000c2-0000-4000-8000-00000000000c"
)
FOLDER_C = "exp/sample/20260101_0000_1C_PAX33333_000000c1"
ALIGNED_JOBS: dict[int, list[str]] = {
    4: [f"{FOLDER_C}/pod5/PAX33333_000000c1_0.pod5", f"{FOLDER_C}/pod5/PAX33333_000000c1_1.pod5"],
    5: [f"{FOLDER_C}/pod5/PAX33333_000000c1_2.pod5"],
}
ALIASES = {f"barcode{n:02d}": f"sample-{n:02d}" for n in range(1, 5)}


@dataclass
class BamRead:
    read_id: str
    parent: str
    length: int
    qscore: float  # the `qs` tag
    channel: int
    barcode: str
    passed: bool


@dataclass
class Output:
    """The OUTPUT tree and what pysam read from it."""

    root: Path
    pod5_reads: dict[str, str]  # pod5 read id -> run folder
    bams: dict[str, list[Path]] = field(default_factory=dict)  # run folder -> BAM files
    summaries: dict[str, list[Path]] = field(default_factory=dict)  # run folder -> fragments
    reads: dict[str, dict[str, BamRead]] = field(default_factory=dict)  # folder -> id -> read


def basecall_and_split(
    input_root: Path,
    work: Path,
    dest: Path,
    job_id: int,
    basecaller: SimulatedBasecaller | None = None,
    rels: list[str] | None = None,
) -> None:
    """One job as the engine runs it: symlinks, the simulated basecaller, the split."""
    job_in, job_out = work / f"ASSIGNED_{job_id}", work / f"TMPOUTPUT_{job_id}"
    job_in.mkdir(parents=True)
    job_out.mkdir(parents=True)
    for rel in JOBS[job_id][1] if rels is None else rels:
        os.symlink(input_root / rel, job_in / link_name(rel))
    basecaller = basecaller or SimulatedBasecaller(0, model="hac", kit_name=KIT)
    done = run_invocation(basecaller.invocation(job_in, job_out))
    assert done.returncode == 0, done.stderr
    split_output(
        job_out / "basecalls",
        dest,
        job_origins(job_in, input_root),
        job_id=job_id,
        min_qscore=MIN_QSCORE,
        barcoding=True,
    )


def read_bams(paths: list[Path]) -> dict[str, BamRead]:
    """Every read of some BAM files, read with pysam; each read id once."""
    found: dict[str, BamRead] = {}
    for path in paths:
        passed = path.parent.parent.name == "bam_pass"
        with pysam.AlignmentFile(str(path), "rb", check_sq=False) as bam:
            assert bam.header.to_dict()["PG"][0]["PN"] == "dorado"
            for read in bam.fetch(until_eof=True):
                assert read.is_unmapped and read.query_name not in found
                tags = dict(read.get_tags())
                barcode = tags["BC"].rsplit("_", 1)[1] if "BC" in tags else "unclassified"
                assert barcode == path.parent.name
                found[read.query_name] = BamRead(
                    read_id=read.query_name,
                    parent=tags.get("pi", read.query_name),
                    length=read.query_length,
                    qscore=float(tags["qs"]),
                    channel=int(tags["ch"]),
                    barcode=barcode,
                    passed=passed,
                )
    return found


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Output:
    base = tmp_path_factory.mktemp("consumers")
    input_root, dest = base / "INPUT", base / "OUTPUT"
    pod5_reads: dict[str, str] = {}
    for seed, (ids, rels) in enumerate(JOBS.values()):
        for index, rel in enumerate(rels):
            seed_here = 100 + 10 * seed + index
            for read_id in write_run_pod5(input_root / rel, ids, READS_PER_FILE, seed_here):
                pod5_reads[read_id] = RUN_FOLDERS[ids.run_id]
    for job_id in JOBS:
        basecall_and_split(input_root, base / "work", dest, job_id)
    out = Output(dest, pod5_reads)
    for folder in RUN_FOLDERS.values():
        out.bams[folder] = sorted((dest / folder).glob("bam_*/*/*.bam"))
        out.summaries[folder] = sorted((dest / folder).glob("sequencing_summary_*.txt"))
        out.reads[folder] = read_bams(out.bams[folder])
    return out


def summary_rows(paths: list[Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in paths:
        with open(path, encoding="utf-8", newline="") as fh:
            rows += csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
    return rows


def n50(lengths: list[int]) -> int:
    """The length L such that reads of length >= L hold at least half the bases.

    NanoPlot and pycoQC walk up from the shortest read instead; they differ from this only
    when the shorter reads sum to exactly half the bases (not so with these reads).
    """
    total, running = sum(lengths), 0
    for length in sorted(lengths, reverse=True):
        running += length
        if 2 * running >= total:
            return length
    return 0


def mean_qscore_of_reads(qscores: list[float]) -> float:
    """The mean of reads' qscores through their error rates, as NanoPlot averages them."""
    return -10 * math.log10(statistics.fmean(10 ** (-q / 10) for q in qscores))


def run_tool(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


def nanoplot(kind: str, files: list[Path], outdir: Path, *extra: str) -> dict[str, list[str]]:
    """Run NanoPlot headless (no static images: kaleido would need Chrome); its NanoStats.

    Returns {metric: [value per column]} of `NanoStats.txt` (as TSV, `--tsv_stats`).
    """
    exe = BIN / "NanoPlot"
    if not exe.exists():
        pytest.fail(f"NanoPlot is a test dependency: pip install -e '.[test]' ({exe} missing)")
    argv = [str(exe), f"--{kind}", *map(str, files), "-o", str(outdir), "--no_static"]
    run_tool([*argv, "--tsv_stats", "-t", "2", *extra], outdir.parent / f"{outdir.name}.cwd")
    reports = sorted(outdir.glob("*NanoPlot-report.html"))  # `<barcode>_...` with --barcoded
    assert reports and all(p.stat().st_size > 10_000 for p in reports)
    return nanostats(outdir / "NanoStats.txt")


def nanostats(path: Path) -> dict[str, list[str]]:
    lines = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    header, *rows = lines
    assert header[0] == "Metrics", header
    return {row[0]: row[1:] for row in rows} | {"_columns": header[1:]}


def the(stats: dict[str, list[str]], metric: str) -> float:
    (value,) = stats[metric]
    return float(value)


def test_pysam_reads_every_bam_and_every_pod5_read_is_there(output: Output) -> None:
    every = {rid: read for reads in output.reads.values() for rid, read in reads.items()}
    assert sum(len(reads) for reads in output.reads.values()) == len(every)  # ids unique
    parents = Counter(read.parent for read in every.values())
    assert set(parents) == set(output.pod5_reads)  # every pod5 read, and nothing else
    assert len(output.pod5_reads) == READS_PER_FILE * sum(len(r) for _, r in JOBS.values())
    assert max(parents.values()) == 2  # some reads split in two
    for folder, reads in output.reads.items():
        assert {output.pod5_reads[r.parent] for r in reads.values()} == {folder}
        assert all(r.passed == (r.qscore >= MIN_QSCORE) for r in reads.values())
    assert {r.passed for r in every.values()} == {True, False}
    assert len({r.barcode for r in every.values()}) == 5  # barcode01-04 and unclassified
    # one summary fragment per job and run, one row per BAM read
    assert [len(output.summaries[f]) for f in (FOLDER_A, FOLDER_B)] == [2, 1]
    for folder, paths in output.summaries.items():
        rows = summary_rows(paths)
        assert Counter(r["read_id"] for r in rows) == Counter(list(output.reads[folder]))


@pytest.mark.parametrize("folder", [FOLDER_A, FOLDER_B])
def test_nanoplot_reads_the_sequencing_summary(output: Output, folder: str, tmp_path: Path) -> None:
    reads = output.reads[folder]
    rows = summary_rows(output.summaries[folder])
    stats = nanoplot("summary", output.summaries[folder], tmp_path / "nanoplot", "--barcoded")

    lengths = [r.length for r in reads.values()]
    qscores = [r.qscore for r in reads.values()]
    assert the(stats, "number_of_reads") == len(rows) == len(reads)
    assert the(stats, "number_of_bases") == sum(lengths)
    assert the(stats, "n50") == n50(lengths)
    assert the(stats, "active_channels") == len({r.channel for r in reads.values()})
    assert the(stats, "median_read_length") == statistics.median(lengths)
    assert the(stats, "mean_qual") == pytest.approx(mean_qscore_of_reads(qscores), abs=0.051)
    assert the(stats, "median_qual") == pytest.approx(statistics.median(qscores), abs=0.051)

    # --barcoded: NanoPlot splits by `barcode_arrangement`, one column per barcode
    per_barcode = nanostats(tmp_path / "nanoplot" / "NanoStats_barcoded.txt")
    counts = dict(
        zip(per_barcode["_columns"], map(float, per_barcode["number_of_reads"]), strict=True)
    )
    assert counts == Counter(r.barcode for r in reads.values())
    reports = {p.name.split("_")[0] for p in (tmp_path / "nanoplot").glob("*NanoPlot-report.html")}
    assert reports == {b for b, n in counts.items() if n > 5}  # NanoPlot skips smaller ones


@pytest.mark.parametrize("folder", [FOLDER_A, FOLDER_B])
def test_nanoplot_reads_the_bam_files(output: Output, folder: str, tmp_path: Path) -> None:
    reads = output.reads[folder]
    assert len(output.bams[folder]) > 5  # pass and fail, several barcodes, two jobs for run A
    stats = nanoplot("ubam", output.bams[folder], tmp_path / "nanoplot")

    lengths = [r.length for r in reads.values()]
    assert the(stats, "number_of_reads") == len(reads)
    assert the(stats, "number_of_bases") == sum(lengths)
    assert the(stats, "n50") == n50(lengths)
    # NanoPlot averages each read's qualities itself: it agrees with our `qs` tags
    qscores = [r.qscore for r in reads.values()]
    assert the(stats, "mean_qual") == pytest.approx(mean_qscore_of_reads(qscores), abs=0.051)
    assert the(stats, "median_qual") == pytest.approx(statistics.median(qscores), abs=0.051)


@dataclass
class Alignment:
    """One BAM record of the aligned run, as pysam reads it."""

    read_id: str
    kind: str  # mapped (a read's primary record), unmapped, secondary or supplementary
    length: int  # query length, as NanoPlot takes it
    aligned: int  # bases of the query in the alignment
    identity: float | None  # percent: 1 - NM / (matches + insertions + deletions)


@dataclass
class AlignedOutput:
    root: Path
    reads: list[str]  # pod5 read ids
    bams: list[Path]
    summaries: list[Path]
    records: list[Alignment]

    def of(self, *kinds: str) -> list[Alignment]:
        return [r for r in self.records if r.kind in kinds]


def alignment_of(seg: pysam.AlignedSegment) -> Alignment:
    kind = (
        "secondary" if seg.is_secondary
        else "supplementary" if seg.is_supplementary
        else "unmapped" if seg.is_unmapped
        else "mapped"
    )  # fmt: skip
    identity = None
    if kind != "unmapped":
        ops = Counter()
        for op, n in seg.cigartuples or ():
            ops[op] += n
        columns = ops[0] + ops[7] + ops[8] + ops[1] + ops[2]  # M = X, I, D
        identity = 100 * (1 - int(seg.get_tag("NM")) / columns)
    return Alignment(
        seg.query_name or "", kind, seg.query_length, seg.query_alignment_length, identity
    )


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> AlignedOutput:
    """A run basecalled as `bcm engine --kit-name KIT --reference FASTA --sample-sheet CSV`
    runs it: the real simulated basecaller aligns with minimap2, the split files it."""
    base = tmp_path_factory.mktemp("aligned")
    input_root, dest = base / "INPUT", base / "OUTPUT"
    reference, sheet = base / "reference.fa", base / "sample_sheet.csv"
    write_reference(reference, (60_000, 30_000), repeat=8_000, seed=1)
    write_sample_sheet(sheet, {RUN_C.flow_cell_id: ALIASES}, "bcmanager", KIT)
    reads: list[str] = []
    for seed, rels in enumerate(ALIGNED_JOBS.values()):
        for index, rel in enumerate(rels):
            seed_here = 300 + 10 * seed + index
            reads += write_run_pod5(input_root / rel, RUN_C, READS_PER_FILE, seed_here, 12_000)
    basecaller = SimulatedBasecaller(
        0, model="hac", kit_name=KIT, reference=reference, sample_sheet=sheet
    )
    for job_id, rels in ALIGNED_JOBS.items():
        basecall_and_split(input_root, base / "work", dest, job_id, basecaller, rels)
    bams = sorted((dest / FOLDER_C).glob("bam_*/*/*.bam"))
    records = []
    for path in bams:
        with pysam.AlignmentFile(str(path), "rb") as bam:  # check_sq: aligned, with @SQ
            assert [sq["SN"] for sq in bam.header.to_dict()["SQ"]] == ["chr1", "chr2"]
            assert bam.header.to_dict()["HD"]["SO"] != "coordinate"  # as Dorado writes it
            records += [alignment_of(seg) for seg in bam.fetch(until_eof=True)]
    summaries = sorted((dest / FOLDER_C).glob("sequencing_summary_*.txt"))
    return AlignedOutput(dest, reads, bams, summaries, records)


def test_the_aligned_output_has_every_kind_of_record_under_the_aliases(
    aligned: AlignedOutput,
) -> None:
    kinds = Counter(r.kind for r in aligned.records)
    assert all(kinds[k] for k in ("mapped", "unmapped", "secondary", "supplementary")), kinds
    primaries = Counter(r.read_id for r in aligned.of("mapped", "unmapped"))
    assert max(primaries.values()) == 1  # each read once by its primary record
    assert {p.parent.name for p in aligned.bams} == {*ALIASES.values(), "unclassified"}
    rows = [row for path in aligned.summaries for row in read_summary(path)]
    assert Counter(row["read_id"] for row in rows) == primaries  # a row per read
    mapped = {row["read_id"] for row in rows if row["alignment_genome"] != "*"}
    assert mapped == {r.read_id for r in aligned.of("mapped")}


@pytest.mark.parametrize("supplementary", [True, False], ids=["default", "no_supplementary"])
def test_nanoplot_reads_the_aligned_bam_files(
    aligned: AlignedOutput, supplementary: bool, tmp_path: Path
) -> None:
    """`samtools sort` and `samtools index` each BAM (pysam's samtools), as users do before
    `NanoPlot --bam`; NanoPlot counts the mapped reads, as pysam and our summary do."""
    sorted_bams = []
    for path in aligned.bams:
        out = tmp_path / "sorted" / f"{path.parent.parent.name}_{path.name}"
        out.parent.mkdir(exist_ok=True)
        pysam.sort("-o", str(out), str(path))
        pysam.index(str(out))
        sorted_bams.append(out)
    extra = () if supplementary else ("--no_supplementary",)
    stats = nanoplot("bam", sorted_bams, tmp_path / "nanoplot", *extra)

    # NanoPlot's rows: a mapped read's primary record, and its supplementary ones unless
    # --no_supplementary; never a secondary record, nor an unmapped read
    supplementaries = aligned.of("supplementary") if supplementary else []
    counted = aligned.of("mapped") + supplementaries
    rows = [row for path in aligned.summaries for row in read_summary(path)]
    mapped_rows = [row for row in rows if row["alignment_genome"] != "*"]  # our summary's
    assert aligned.of("secondary") and len(mapped_rows) < len(rows)
    assert the(stats, "number_of_reads") == len(mapped_rows) + len(supplementaries)
    assert the(stats, "number_of_reads") == len(counted)
    lengths = [r.length for r in counted]
    assert the(stats, "number_of_bases") == sum(lengths)
    assert the(stats, "number_of_bases_aligned") == sum(r.aligned for r in counted)
    assert the(stats, "n50") == n50(lengths)
    identities = [r.identity for r in counted if r.identity is not None]
    assert the(stats, "average_identity") == pytest.approx(statistics.fmean(identities), abs=0.051)
    assert the(stats, "median_identity") == pytest.approx(statistics.median(identities), abs=0.051)
    assert 90 < the(stats, "average_identity") < 100  # hac's simulated error rate: 3.5 %


def pycoqc_executable() -> Path | None:
    """pycoQC in this venv, else `$BCM_PYCOQC`; None where it is not installed."""
    here = BIN / "pycoQC"
    if here.exists():
        return here
    given = os.environ.get("BCM_PYCOQC")
    if given:
        found = shutil.which(given)
        if not found:
            pytest.fail(f"BCM_PYCOQC={given!r} is not an executable")
        return Path(found)
    return None


@pytest.mark.parametrize("folder", [FOLDER_A, FOLDER_B])
def test_pycoqc_reads_the_sequencing_summary(output: Output, folder: str, tmp_path: Path) -> None:
    exe = pycoqc_executable()
    if exe is None:
        pytest.skip(
            "pycoQC is not installed: it pins plotly==4.1.0 (NanoPlot needs plotly>=6.1) and"
            " fails on pandas 3, so it is no test dependency; set BCM_PYCOQC to a pycoQC"
            " in a venv of its own (pip install pycoQC 'pandas<3') to run this test"
        )
    reads = output.reads[folder]
    html, report = tmp_path / "pycoQC.html", tmp_path / "pycoQC.json"
    argv = [str(exe), "-f", *map(str, output.summaries[folder]), "-o", str(html)]
    run_tool([*argv, "-j", str(report), "--min_pass_qual", str(MIN_QSCORE), "-q"], tmp_path)

    assert html.stat().st_size > 100_000  # the report with its plots
    summary = json.loads(report.read_text())
    lengths = [r.length for r in reads.values()]
    everything, passing = summary["All Reads"], summary["Pass Reads"]
    assert everything["basecall"]["reads_number"] == len(reads)
    assert everything["basecall"]["bases_number"] == sum(lengths)
    assert everything["basecall"]["N50"] == n50(lengths)
    assert everything["run"]["active_channels"] == len({r.channel for r in reads.values()})
    assert everything["run"]["runid_number"] == 1
    assert everything["run"]["barcodes_number"] == len({r.barcode for r in reads.values()})
    # with MinKNOW's threshold, pycoQC's pass reads are our bam_pass reads
    assert passing["basecall"]["reads_number"] == sum(r.passed for r in reads.values())
