"""Splitting a job's Dorado-like output into the MinKNOW tree, with its sequencing summary.

Real pod5 files, the real simulated basecaller (a subprocess), real BAM/FASTQ read
back with pysam.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from pathlib import Path

import pysam
import pytest

from bcmanager.basecallers.simulated import SimulatedBasecaller
from bcmanager.output import split
from bcmanager.output.origin import job_origins
from bcmanager.output.split import SplitError, SplitResult, split_output
from bcmanager.output.summary import COLUMNS, read_summary
from bcmanager.records import detect_format, read_files
from tests.helpers import RUN_A, RUN_B, run_invocation, two_run_job

NAME = re.compile(
    r"^(?P<fc>[A-Z0-9]+)_(?P<status>pass|fail)_(?:(?P<bc>barcode\d\d|unclassified)_)?"
    r"(?P<prot>[0-9a-f]{8})_(?P<run>[0-9a-f]{8})_(?P<job>\d+)\.(?P<ext>bam|fastq\.gz)$"
)


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """INPUT with a MinKNOW run (run A) and a loose pod5 (run B); a job linking both."""
    return two_run_job(tmp_path)


def basecall(job_in: Path, job_out: Path, **options: object) -> Path:
    """Run the simulated basecaller in Dorado style; returns its raw output folder."""
    inv = SimulatedBasecaller(0, style="dorado", **options).invocation(job_in, job_out)  # type: ignore[arg-type]
    result = run_invocation(inv)
    assert result.returncode == 0, result.stderr
    return job_out / "basecalls"


def written_reads(dest: Path, result: SplitResult) -> dict[str, tuple[str, dict]]:
    """{read id: (DEST-relative file, tags)} over every file the split wrote; each id once."""
    found: dict[str, tuple[str, dict]] = {}
    for rel in result.files:
        path = dest / rel
        if rel.endswith(".bam"):
            with pysam.AlignmentFile(str(path), check_sq=False) as bam:
                entries = [(r.query_name, dict(r.get_tags())) for r in bam]
        else:
            with pysam.FastxFile(str(path)) as fq:
                entries = [(e.name, {"comment": e.comment}) for e in fq]
        for read_id, tags in entries:
            assert read_id not in found, f"{read_id} written twice"
            found[read_id] = (rel, tags)
    return found


def test_split_bam_partitions_every_read_once_into_minknow_folders(job) -> None:
    root, job_in, job_out, where = job
    raw = basecall(job_in, job_out, model="hac", kit_name="SQK-NBD114-24")
    origins = job_origins(job_in, root)
    result = split_output(raw, job_out, origins, job_id=7, min_qscore=9, barcoding=True)

    reads = written_reads(job_out, result)
    assert sum(result.files.values()) == len(reads)
    parents = Counter(tags.get("pi", rid) for rid, (_, tags) in reads.items())
    assert set(parents) == set(where)  # every pod5 read, and nothing else
    assert any(n == 2 for n in parents.values())  # some reads were split in two
    statuses, barcodes = Counter(), Counter()
    for read_id, (rel, tags) in reads.items():
        parent = tags.get("pi", read_id)
        folder, kind, barcode, name = rel.rsplit("/", 3)
        assert folder == where[parent]
        status = "pass" if tags["qs"] >= 9 else "fail"
        assert kind == f"bam_{status}"
        expected_barcode = tags["BC"].rsplit("_", 1)[1] if "BC" in tags else "unclassified"
        assert barcode == expected_barcode
        match = NAME.match(name)
        assert match, name
        ids = RUN_A if folder.startswith("exp/") else RUN_B
        assert match["fc"] == ids.flow_cell_id
        assert (match["status"], match["bc"], match["job"]) == (status, barcode, "7")
        assert (match["prot"], match["run"]) == (ids.protocol_run_id[:8], ids.run_id[:8])
        assert tags["RG"].startswith(f"{ids.run_id}_")
        statuses[status] += 1
        barcodes[barcode] += 1
    assert statuses["pass"] and statuses["fail"]
    assert len(barcodes) >= 4 and barcodes["unclassified"]


def test_split_bam_keeps_the_header_of_each_run(job) -> None:
    root, job_in, job_out, _ = job
    raw = basecall(job_in, job_out, model="sup", kit_name="SQK-NBD114-24")
    result = split_output(
        raw, job_out, job_origins(job_in, root), job_id=7, min_qscore=10, barcoding=True
    )
    for rel in result.files:
        with pysam.AlignmentFile(str(job_out / rel), check_sq=False) as bam:
            header = bam.header.to_dict()
            run_ids = {rg["DS"].split("runid=")[1].split()[0] for rg in header["RG"]}
            assert len(run_ids) == 1  # only the run of this file
            assert header["PG"][0]["PN"] == "dorado"
            for read in bam:
                assert read.get_tag("RG") in {rg["ID"] for rg in header["RG"]}
                assert read.get_tag("fn").endswith(".pod5")


def test_summary_rows_match_the_reads_one_to_one(job) -> None:
    root, job_in, job_out, where = job
    raw = basecall(job_in, job_out, model="hac", kit_name="SQK-NBD114-24")
    result = split_output(
        raw, job_out, job_origins(job_in, root), job_id=7, min_qscore=9, barcoding=True
    )
    reads = written_reads(job_out, result)
    assert sorted(result.summaries) == [
        "exp/sample/20260101_0000_1A_PAW11111_000000a1/sequencing_summary_PAW11111_000000a1_000000a2_7.txt",
        "loose/PBC22222_000000b2/sequencing_summary_PBC22222_000000b1_000000b2_7.txt",
    ]
    rows = []
    for rel, count in result.summaries.items():
        with open(job_out / rel) as fh:
            assert fh.readline().rstrip("\n").split("\t") == list(COLUMNS)
        file_rows = read_summary(job_out / rel)
        assert len(file_rows) == count
        for row in file_rows:
            assert rel.startswith(where[row["parent_read_id"]] + "/")  # the run's own summary
        rows += file_rows
    assert Counter(r["read_id"] for r in rows) == Counter(reads.keys())  # one row per read
    for row in rows:
        rel, tags = reads[row["read_id"]]
        assert row["filename_bam"] == rel.rsplit("/", 1)[1] and row["filename_fastq"] == ""
        assert row["parent_read_id"] == tags.get("pi", row["read_id"])
        assert row["passes_filtering"] == ("TRUE" if "/bam_pass/" in rel else "FALSE")
        assert row["barcode_arrangement"] == rel.split("/")[-2]
        assert float(row["mean_qscore_template"]) == pytest.approx(tags["qs"], abs=1e-4)
        assert int(row["channel"]) == tags["ch"] and int(row["mux"]) == tags["mx"]
        assert row["run_id"] == tags["RG"].split("_", 1)[0]
        assert row["filename_pod5"] in ("PAW11111_a_0.pod5", "b.pod5")
        assert float(row["start_time"]) >= 0 and float(row["duration"]) > 0
        assert int(row["num_events_template"]) == (tags["ns"] - tags["ts"]) // 6
        assert row["barcode_kit"] == ("SQK-NBD114-24" if "BC" in tags else "unknown")


def test_split_fastq_gives_gzipped_fastq_with_tags(job) -> None:
    root, job_in, job_out, where = job
    raw = basecall(job_in, job_out, model="fast", emit_fastq=True)
    assert {p.suffix for p in read_files(raw)} == {".fastq"}
    result = split_output(
        raw, job_out, job_origins(job_in, root), job_id=3, min_qscore=8, barcoding=False
    )
    parents: set[str] = set()
    seen: Counter[str] = Counter()
    for rel in result.files:
        path = job_out / rel
        assert rel.endswith(".fastq.gz") and path.read_bytes()[:2] == b"\x1f\x8b"
        folder, kind, name = rel.rsplit("/", 2)  # no barcode level without barcoding
        assert kind in ("fastq_pass", "fastq_fail") and NAME.match(name)["bc"] is None
        with pysam.FastxFile(str(path)) as fq:
            for entry in fq:
                tags = dict(f.split(":", 2)[::2] for f in entry.comment.split("\t"))
                assert (float(tags["qs"]) >= 8) == (kind == "fastq_pass")
                assert folder == where[tags.get("pi", entry.name)]
                parents.add(tags.get("pi", entry.name))
                seen[entry.name] += 1
    assert parents == set(where)
    assert set(seen.values()) == {1} and sum(seen.values()) == result.reads
    rows = [r for rel in result.summaries for r in read_summary(job_out / rel)]
    assert len(rows) == result.reads
    assert all(r["filename_fastq"].endswith(".fastq.gz") and not r["filename_bam"] for r in rows)


def test_split_is_repeatable_to_the_byte(job) -> None:
    root, job_in, job_out, _ = job
    raw = basecall(job_in, job_out, model="hac", kit_name="SQK-NBD114-24")
    origins = job_origins(job_in, root)
    first = split_output(raw, job_out, origins, job_id=5, min_qscore=9, barcoding=True)
    before = {rel: (job_out / rel).read_bytes() for rel in [*first.files, *first.summaries]}
    again = split_output(raw, job_out, origins, job_id=5, min_qscore=9, barcoding=True)
    assert again.files == first.files  # the split's own files in job_out are not read again
    assert {rel: (job_out / rel).read_bytes() for rel in before} == before
    assert not [p for p in job_out.rglob(".partial-*")]


def test_outputs_held_back_or_opened_early_hold_the_same_reads_in_order(
    job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small BAM outputs are held back and written at the end without compression threads
    (a thread pool costs ~20 ms a file to start and stop); an output that grows large is
    opened with them at once, and when held back reads add up, the largest is opened
    early. Whichever way, each file holds the same reads in the basecaller's order."""
    root, job_in, job_out, _ = job
    raw = basecall(job_in, job_out, model="hac", kit_name="SQK-NBD114-24")
    origins = job_origins(job_in, root)

    def reads_by_file(dest: Path) -> dict[str, list[str]]:
        result = split_output(raw, dest, origins, job_id=3, min_qscore=9, barcoding=True)
        by_file = {}
        for rel in result.files:
            with pysam.AlignmentFile(str(dest / rel), check_sq=False) as bam:
                by_file[rel] = [r.query_name for r in bam]
        return by_file

    held = reads_by_file(tmp_path / "held")
    monkeypatch.setattr(split, "THREADED_BAM_BYTES", 900)  # a few reads: threaded early
    monkeypatch.setattr(split, "HELD_BYTES", 4_000)  # and the rest released under pressure
    early = reads_by_file(tmp_path / "early")
    assert early == held
    basecalled = []
    for path in read_files(raw):
        with pysam.AlignmentFile(str(path), check_sq=False) as bam:
            basecalled += [r.query_name for r in bam]
    assert sorted(name for names in held.values() for name in names) == sorted(basecalled)
    assert len(held) >= 8


def test_a_read_of_an_unknown_pod5_fails_the_split_and_leaves_nothing(job) -> None:
    root, job_in, job_out, _ = job
    raw = basecall(job_in, job_out, model="hac")
    origins = job_origins(job_in, root)
    only_a = {k: v for k, v in origins.items() if k.startswith("exp")}
    with pytest.raises(SplitError, match="not in this job"):
        split_output(raw, job_out, only_a, job_id=1, min_qscore=9, barcoding=False)
    left = [p for p in job_out.rglob("*") if p.is_file() and "basecalls" not in p.parts]
    assert left == []


def test_the_dorado_adapter_output_is_read_by_content(tmp_path: Path) -> None:
    """The dorado adapter sends stdout to pass/basecalls.fastq: BAM there is still BAM."""
    bam = tmp_path / "basecalls.fastq"
    header = {"HD": {"VN": "1.6", "SO": "unknown"}}
    with pysam.AlignmentFile(str(bam), "wb", header=header):
        pass
    fastq_gz = tmp_path / "x.bam"
    with gzip.open(fastq_gz, "wt") as fh:
        fh.write("@r1\nACGT\n+\n!!!!\n")
    plain = tmp_path / "y.fq"
    plain.write_text("@r1\tqs:f:9\nACGT\n+\n!!!!\n")
    assert [detect_format(p) for p in (bam, fastq_gz, plain)] == ["bam", "fastq", "fastq"]


def test_a_summary_that_cannot_be_written_leaves_no_output_in_place(
    job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs and summary fragments are renamed into place only once all are written: a
    full disk at the second fragment leaves nothing, not the first fragment alone."""
    root, job_in, job_out, _ = job
    raw = basecall(job_in, job_out, model="hac")
    origins = job_origins(job_in, root)
    written, real = [], split.write_summary

    def full_disk_at_the_second(path: Path, rows) -> int:
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        return real(path, rows)

    monkeypatch.setattr(split, "write_summary", full_disk_at_the_second)
    with pytest.raises(OSError, match="No space"):
        split_output(raw, job_out, origins, job_id=2, min_qscore=9, barcoding=False)
    left = [p for p in job_out.rglob("*") if p.is_file() and "basecalls" not in p.parts]
    assert written and left == [] and not (job_out / split.STAGING_DIR).exists()
