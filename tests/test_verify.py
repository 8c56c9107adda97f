"""`bcm verify`: every read id of the input exactly once in the output, or a clear report."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pysam
import pytest
from click.testing import CliRunner, Result

import bcmanager.verify as verify_module
from bcmanager.basecallers.simulated import SimulatedBasecaller, write_fastq
from bcmanager.cli.verify import command
from bcmanager.layout import POD5_SIGNATURE, Layout, link_name
from bcmanager.output.naming import RunIds
from bcmanager.output.origin import job_origins
from bcmanager.output.split import split_output
from bcmanager.pod5io import write_pod5
from bcmanager.verify import output_read_ids, verify_run
from tests.helpers import fastq_read_ids, run_invocation, write_run_pod5


class Run:
    """A finished run: pod5 under INPUT, merged FASTQ under OUTPUT/pass, one per pod5."""

    def __init__(self, root: Path, files: int = 3, reads: int = 8) -> None:
        self.input = root / "input"
        self.output = root / "output"
        (self.output / "pass").mkdir(parents=True)
        (self.output / "fail").mkdir()
        self.ids: dict[str, list[str]] = {}
        for n in range(files):
            rel = f"exp/run_{n % 2}/pod5/f_{n}.pod5"
            self.ids[rel] = write_pod5(self.input / rel, reads, samples=100, seed=100 + n)
            self.basecall(rel, self.output / "pass" / f"job_id_{n}_f_{n}.fastq")

    def basecall(self, rel: str, dest: Path) -> None:
        with open(dest, "w") as out:
            write_fastq(self.input / rel, out)

    def fastq(self, n: int) -> Path:
        return self.output / "pass" / f"job_id_{n}_f_{n}.fastq"


def verify(run: Run | MinknowRun, *extra: str) -> tuple[Result, dict]:
    result = CliRunner().invoke(
        command, ["--input", str(run.input), "--output", str(run.output), "--json", *extra]
    )
    return result, json.loads(result.output)


def records(path: Path) -> list[str]:
    lines = path.read_text().splitlines(keepends=True)
    return ["".join(lines[i : i + 4]) for i in range(0, len(lines), 4)]


def test_missing_reads_are_placed_in_their_files_read_table_as_slices_count(
    tmp_path: Path,
) -> None:
    """A slice of a large file that never came (issue 26): verify names the places of
    the missing reads in the file's read order, the order slices are cut in."""
    run = Run(tmp_path)
    path = "exp/run_1/pod5/f_1.pod5"
    recs = records(run.fastq(1))
    run.fastq(1).write_text("".join(recs[:2] + recs[5:]))
    lost = [r.splitlines()[0][1:].split()[0] for r in recs[2:5]]
    places = sorted(run.ids[path].index(rid) for rid in lost)
    _result, report = verify(run)
    [entry] = report["files"]
    assert entry["missing"] == 3 and places == [2, 3, 4]
    assert entry["missing_ranges"] == [[2, 4]]
    argv = ["--input", str(run.input), "--output", str(run.output)]
    table = CliRunner().invoke(command, argv, env={"COLUMNS": "250"})
    flat = " ".join(table.output.replace("│", " ").split())
    assert "reads 2-4 of 8" in flat, table.output


def test_a_clean_run_passes(tmp_path: Path) -> None:
    run = Run(tmp_path)
    # Job folders on INPUT (symlinks to the same files) are not counted twice.
    job = run.input / "ASSIGNED_9_e1"
    job.mkdir()
    os.symlink(run.input / "exp/run_0/pod5/f_0.pod5", job / "exp__run_0__pod5__f_0.pod5")
    result = CliRunner().invoke(command, ["--input", str(run.input), "--output", str(run.output)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    report = verify_run(run.input, run.output)
    assert report.ok
    assert report.pod5_files == 3
    assert report.input_reads == report.fastq_records == 24


def test_a_missing_read_is_reported_for_its_file(tmp_path: Path) -> None:
    run = Run(tmp_path)
    recs = records(run.fastq(1))
    run.fastq(1).write_text("".join(recs[1:]))
    lost = run.ids["exp/run_1/pod5/f_1.pod5"][0]
    result, report = verify(run)
    assert result.exit_code == 1
    assert report["ok"] is False
    assert report["missing"] == 1
    [entry] = report["files"]
    assert entry["path"] == "exp/run_1/pod5/f_1.pod5"
    assert entry["missing"] == 1 and entry["missing_ids"] == [lost]
    table = CliRunner().invoke(command, ["--input", str(run.input), "--output", str(run.output)])
    assert table.exit_code == 1
    assert "f_1.pod5" in table.output and lost in table.output and "FAILED" in table.output


def test_a_duplicated_record_is_reported_with_where_it_is(tmp_path: Path) -> None:
    run = Run(tmp_path)
    dup = records(run.fastq(0))[3]
    dup_id = dup[1:].split()[0]
    (run.output / "fail" / "job_id_7_x.fastq").write_text(dup)
    result, report = verify(run)
    assert result.exit_code == 1
    assert report["duplicated"] == 1 and report["extra_records"] == 1
    assert report["missing"] == 0 and report["unexpected"] == 0
    [entry] = report["files"]
    assert entry["path"] == "exp/run_0/pod5/f_0.pod5" and entry["duplicated_ids"] == [dup_id]
    assert sorted(report["duplicate_locations"][dup_id]) == sorted(
        [str(run.fastq(0)), str(run.output / "fail" / "job_id_7_x.fastq")]
    )


def test_an_unexpected_read_is_reported(tmp_path: Path) -> None:
    run = Run(tmp_path)
    stranger = str(uuid.uuid4())
    with open(run.fastq(2), "a") as fh:
        fh.write(f"@{stranger} ns:i:10\nA\n+\n5\n@not-a-uuid\nAC\n+\n55\n")
    result, report = verify(run)
    assert result.exit_code == 1
    assert report["unexpected"] == 2
    assert set(report["unexpected_ids"]) == {stranger, "not-a-uuid"}
    assert report["missing"] == 0 and report["duplicated"] == 0


def test_quarantined_files_may_be_missing(tmp_path: Path) -> None:
    run = Run(tmp_path)
    layout = Layout(run.input, run.output)
    # A poison file: complete by signature, unreadable; quarantined by the manager.
    poison = run.input / "exp/run_0/pod5/poison.pod5"
    poison.write_bytes(POD5_SIGNATURE + os.urandom(300) + POD5_SIGNATURE)
    result, report = verify(run)
    assert result.exit_code == 1 and report["unreadable"] == 1  # not quarantined: an error
    layout.record_quarantine("exp/run_0/pod5/poison.pod5", "failed 3 times: exit code 1")
    # A readable file that kept failing: its reads are absent, and that is expected.
    run.fastq(1).unlink()
    layout.record_quarantine("exp/run_1/pod5/f_1.pod5", "failed 3 times")
    result, report = verify(run)
    assert result.exit_code == 0, report
    assert report["missing"] == 0
    assert set(report["quarantined"]) == {"exp/run_0/pod5/poison.pod5", "exp/run_1/pod5/f_1.pod5"}
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["exp/run_1/pod5/f_1.pod5"]["quarantined"] == "failed 3 times"
    assert by_path["exp/run_1/pod5/f_1.pod5"]["reads"] == 8
    assert by_path["exp/run_0/pod5/poison.pod5"]["error"]
    # Quarantined reads that do show up twice are still duplicates.
    run.basecall("exp/run_1/pod5/f_1.pod5", run.output / "pass" / "a.fastq")
    run.basecall("exp/run_1/pod5/f_1.pod5", run.output / "pass" / "b.fastq")
    result, report = verify(run)
    assert result.exit_code == 1 and report["duplicated"] == 8


def test_gzip_fastq_split_reads_and_incomplete_pod5(tmp_path: Path) -> None:
    run = Run(tmp_path)
    # Gzipped FASTQ counts like plain FASTQ.
    plain = run.fastq(0)
    with gzip.open(plain.with_suffix(".fastq.gz"), "wt") as gz:
        gz.write(plain.read_text())
    plain.unlink()
    # Dorado split one read into two subreads with new ids and a pi:Z: parent tag.
    parent_rec = records(run.fastq(1))[0]
    parent = parent_rec[1:].split()[0]
    rest = "".join(records(run.fastq(1))[1:])
    subreads = "".join(f"@{uuid.uuid4()} pi:Z:{parent}\nACGT\n+\n5555\n" for _ in range(2))
    run.fastq(1).write_text(subreads + rest)
    # A pod5 still being written is skipped, not an error.
    (run.input / "exp/run_0/pod5/growing.pod5").write_bytes(POD5_SIGNATURE + b"partial")
    report = verify_run(run.input, run.output)
    assert report.ok, report.to_dict()
    assert report.incomplete == ["exp/run_0/pod5/growing.pod5"]
    assert report.fastq_records == 25


def test_a_malformed_fastq_fails(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with open(run.fastq(0), "a") as fh:
        fh.write("@cut-short\nACGT\n")
    result, report = verify(run)
    assert result.exit_code == 1
    assert "cut short" in report["fastq_errors"][str(run.fastq(0))]


@pytest.mark.timeout(120)
def test_many_files_through_the_process_pool(tmp_path: Path) -> None:
    run = Run(tmp_path, files=80, reads=2)
    records_0 = records(run.fastq(40))
    run.fastq(40).write_text(records_0[0])
    report = verify_run(run.input, run.output, workers=2)
    assert report.pod5_files == 80 and report.fastq_files == 80
    assert report.missing == 1
    assert [f.path for f in report.files] == ["exp/run_0/pod5/f_40.pod5"]
    inline = verify_run(run.input, run.output, workers=0)
    assert inline.to_dict() == report.to_dict()


# -- the MinKNOW layout: BAM, gzipped FASTQ and plain legacy FASTQ, with summaries -------

RUN_A = RunIds(
    "PAW11111", "000000a1-0000-4000-8000-00000000000a", "000000a2-0000-4000-8000-00000000000a"
)
RUN_B = RunIds(
    "PBC22222", "000000b1-0000-4000-8000-00000000000b", "000000b2-0000-4000-8000-00000000000b"
)
FOLDER_A = "exp/sample/20260101_0000_1A_PAW11111_000000a1"
FOLDER_B = "loose/PBC22222_000000b2"
KIT = "SQK-NBD114-24"
FRAGMENT_SUFFIX = re.compile(r"_\d+\.txt$")  # a job's summary rows: `_<job>.txt`


class MinknowRun:
    """INPUT with a MinKNOW run folder (run A) and a loose pod5 (run B), basecalled by
    the simulated basecaller in Dorado style, split by `split_output` and merged into
    OUTPUT the way the manager does: files renamed to their final names, each run's
    summary fragments appended to its `sequencing_summary_*.txt`.

    Job 7: run A's a_0 as BAM with barcodes; job 8: a_1 as gzipped FASTQ with barcodes;
    job 9: a_2 by an original (legacy) engine, plain FASTQ without summary rows;
    job 10: run B as BAM without barcodes. The raw basecaller output stays in
    OUTPUT/TMPOUTPUT_<job>_e1 (bcmanager's own folders are not read).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.input = root / "input"
        self.output = root / "output"
        self.output.mkdir(parents=True)
        self.ids: dict[str, list[str]] = {}
        self.files: list[str] = []  # OUTPUT-relative read files
        self.summaries: dict[str, str] = {}  # run folder -> OUTPUT-relative summary
        a = [f"{FOLDER_A}/pod5/PAW11111_a_{n}.pod5" for n in range(3)]
        b = "loose/b.pod5"
        for n, rel in enumerate(a):
            self.ids[rel] = write_run_pod5(self.input / rel, RUN_A, 24, 20 + n)
        self.ids[b] = write_run_pod5(self.input / b, RUN_B, 16, 30)
        self.job(7, a[0], min_qscore=9, model="hac", kit_name=KIT)
        self.job(8, a[1], min_qscore=9, model="hac", kit_name=KIT, emit_fastq=True)
        self.legacy_job(9, a[2])
        self.job(10, b, min_qscore=10, model="sup")

    def job(self, job_id: int, rel: str, min_qscore: float, **options: object) -> None:
        job_in = self.input / f"ASSIGNED_{job_id}_e1"
        job_in.mkdir()
        os.symlink(self.input / rel, job_in / link_name(rel))
        job_out = self.output / f"TMPOUTPUT_{job_id}_e1"
        job_out.mkdir()
        inv = SimulatedBasecaller(0, style="dorado", **options).invocation(job_in, job_out)  # type: ignore[arg-type]
        done = run_invocation(inv)
        assert done.returncode == 0, done.stderr
        staged = self.root / f"split_{job_id}"
        result = split_output(
            job_out / "basecalls",
            staged,
            job_origins(job_in, self.input),
            job_id=job_id,
            min_qscore=min_qscore,
            barcoding="kit_name" in options,
        )
        for file in result.files:
            os.renames(staged / file, self.output / file)
            self.files.append(file)
        for fragment in result.summaries:
            folder, name = fragment.rsplit("/", 1)
            final = folder + "/" + FRAGMENT_SUFFIX.sub(".txt", name)
            rows = (staged / fragment).read_text().splitlines(keepends=True)
            target = self.output / final
            with open(target, "a") as fh:
                fh.writelines(
                    rows if not target.exists() or not target.stat().st_size else rows[1:]
                )
            self.summaries[folder] = final

    def legacy_job(self, job_id: int, rel: str) -> None:
        """An original engine's plain FASTQ, merged under the run folder; no summary rows."""
        name = f"{FOLDER_A}/fastq_pass/job_id_{job_id}_{rel.rsplit('/', 1)[1][:-5]}.fastq"
        (self.output / name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.output / name, "w") as out:
            write_fastq(self.input / rel, out)
        self.files.append(name)

    def copy(self, dest: Path) -> MinknowRun:
        """This run's INPUT and OUTPUT copied to `dest` (symlinks kept as they are)."""
        shutil.copytree(self.input, dest / "input", symlinks=True)
        shutil.copytree(self.output, dest / "output", symlinks=True)
        twin = object.__new__(MinknowRun)
        twin.__dict__.update(self.__dict__, root=dest, input=dest / "input", output=dest / "output")
        return twin

    def summary(self, folder: str = FOLDER_A) -> Path:
        return self.output / self.summaries[folder]

    def rows(self, folder: str = FOLDER_A) -> tuple[str, list[str]]:
        header, *rows = self.summary(folder).read_text().splitlines(keepends=True)
        return header, rows

    def bam(self, folder: str = FOLDER_A) -> Path:
        """The largest BAM of a run folder."""
        bams = [f for f in self.files if f.startswith(folder + "/") and f.endswith(".bam")]
        return max((self.output / f for f in bams), key=lambda p: p.stat().st_size)

    def all_reads(self) -> set[str]:
        return {rid for ids in self.ids.values() for rid in ids}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> MinknowRun:
    return MinknowRun(tmp_path_factory.mktemp("minknow"))


@pytest.fixture
def mk(pristine: MinknowRun, tmp_path: Path) -> MinknowRun:
    """A fresh copy of the MinKNOW-shaped run for a test to damage."""
    return pristine.copy(tmp_path)


def bam_records(path: Path) -> tuple[dict, list[pysam.AlignedSegment]]:
    with pysam.AlignmentFile(str(path), check_sq=False) as bam:
        return bam.header.to_dict(), list(bam.fetch(until_eof=True))


def write_bam(path: Path, header: dict, records: list[pysam.AlignedSegment]) -> None:
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for record in records:
            bam.write(record)


def test_the_minknow_tree_passes_with_counts_per_run_and_barcode(mk: MinknowRun) -> None:
    # The fixture is what it claims: BAM, gzipped FASTQ and plain FASTQ, split reads.
    assert {f.rsplit(".", 1)[-1] for f in mk.files} == {"bam", "gz", "fastq"}
    assert sorted(mk.summaries) == [FOLDER_A, FOLDER_B]
    result, report = verify(mk)
    assert result.exit_code == 0, report
    assert report["ok"] is True and report["layout"] == "minknow"
    assert report["input_reads"] == len(mk.all_reads()) == 88
    assert report["records"] > report["input_reads"]  # some reads were split in two
    assert set(report["formats"]) == {"bam", "fastq", "fastq.gz"}
    assert report["formats"]["fastq"] == 1  # the legacy engine's file
    runs = {r["run_folder"]: r for r in report["runs"]}
    assert set(runs) == {FOLDER_A, FOLDER_B}
    a, b = runs[FOLDER_A], runs[FOLDER_B]
    assert a["reads"] + b["reads"] == report["records"]
    assert a["bases"] + b["bases"] == report["bases"] > 0
    assert a["pass_reads"] and a["fail_reads"] and 0 < a["pass_share"] < 1
    assert a["pass_share"] == round(a["pass_reads"] / (a["pass_reads"] + a["fail_reads"]), 4)
    barcodes = {bc["barcode"]: bc for bc in a["barcodes"]}
    assert "unclassified" in barcodes and len(barcodes) >= 4
    assert None in barcodes  # the legacy engine's FASTQ has no barcode level
    assert sum(bc["reads"] for bc in a["barcodes"]) == a["reads"]
    assert [bc["barcode"] for bc in b["barcodes"]] == [None]  # no kit: no barcode level
    # Summaries: one row per split record; the legacy FASTQ's records have none, allowed.
    legacy_reads = len(mk.ids[f"{FOLDER_A}/pod5/PAW11111_a_2.pod5"])
    assert a["summary"]["legacy_records"] == legacy_reads
    assert a["summary"]["rows"] == a["summary"]["matched"] == a["reads"] - legacy_reads
    assert b["summary"]["rows"] == b["summary"]["matched"] == b["reads"]
    assert b["summary"]["legacy_records"] == 0
    assert report["summary_rows"] == a["summary"]["rows"] + b["summary"]["rows"]
    # The human output shows the counts per run and barcode.
    table = CliRunner().invoke(command, ["--input", str(mk.input), "--output", str(mk.output)])
    assert table.exit_code == 0, table.output
    for text in (FOLDER_A, FOLDER_B, "unclassified", "barcode", "no summary row (legacy engine)"):
        assert text in table.output
    assert "OK" in table.output


def test_the_shared_reader_counts_each_read_once(mk: MinknowRun) -> None:
    got = output_read_ids(mk.output)
    assert got == Counter(dict.fromkeys(mk.all_reads(), 1))
    assert fastq_read_ids(mk.output) == got  # the tests' helper reads the same
    # A whole BAM twice, under another name: its reads (split ones too) count twice.
    bam = mk.bam()
    shutil.copy(bam, bam.with_name("copy.bam"))
    twice = fastq_read_ids(mk.output)
    _, records = bam_records(bam)
    assert {rid for rid, n in twice.items() if n == 2} == {
        r.get_tag("pi") if r.has_tag("pi") else r.query_name for r in records
    }


def test_a_duplicated_read_fails(mk: MinknowRun) -> None:
    header, records = bam_records(mk.bam())
    single = next(r for r in records if not r.has_tag("pi"))
    write_bam(mk.bam().with_name("again.bam"), header, [single])
    result, report = verify(mk)
    assert result.exit_code == 1 and report["ok"] is False
    assert report["duplicated"] == 1 and report["extra_records"] == 1
    assert report["missing"] == 0 and report["unexpected"] == 0
    assert sorted(report["duplicate_locations"][single.query_name]) == sorted(
        [str(mk.bam()), str(mk.bam().with_name("again.bam"))]
    )


def test_a_split_read_basecalled_twice_with_new_child_ids_is_duplicated(mk: MinknowRun) -> None:
    """Dorado draws new ids for a split read's pieces: the same parent and `sp` twice."""
    header, records = bam_records(mk.bam())
    child = next(r for r in records if r.has_tag("pi"))
    copy = pysam.AlignedSegment.from_dict(child.to_dict(), pysam.AlignmentHeader.from_dict(header))
    copy.query_name = str(uuid.uuid4())
    write_bam(mk.bam().with_name("again.bam"), header, [copy])
    report = verify_run(mk.input, mk.output)
    assert not report.ok
    assert report.duplicated == 1 and report.missing == 0 and report.unexpected == 0
    assert child.get_tag("pi") in report.duplicate_locations
    [entry] = report.files
    assert entry.duplicated_ids == [child.get_tag("pi")]
    run = next(r for r in report.runs if r.run_folder == FOLDER_A)
    assert run.summary is not None and run.summary.records_without_row == 1  # the new id


def test_a_missing_read_fails(mk: MinknowRun) -> None:
    header, records = bam_records(mk.bam())
    lost = next(r for r in records if not r.has_tag("pi"))
    write_bam(mk.bam(), header, [r for r in records if r.query_name != lost.query_name])
    head, rows = mk.rows()
    mk.summary().write_text(head + "".join(r for r in rows if lost.query_name not in r))
    result, report = verify(mk)
    assert result.exit_code == 1 and report["ok"] is False
    assert report["missing"] == 1 and report["duplicated"] == 0
    assert report["summary_problems"] == 0  # the summary still matches the reads
    [entry] = report["files"]
    assert entry["missing_ids"] == [lost.query_name]
    assert entry["path"] == f"{FOLDER_A}/pod5/PAW11111_a_0.pod5"


def test_a_summary_row_without_a_read_fails(mk: MinknowRun) -> None:
    head, rows = mk.rows(FOLDER_B)
    stranger = str(uuid.uuid4())
    victim = rows[0].split("\t")
    columns = head.rstrip("\n").split("\t")
    victim[columns.index("read_id")] = victim[columns.index("parent_read_id")] = stranger
    mk.summary(FOLDER_B).write_text(head + "".join(rows) + "\t".join(victim))
    result, report = verify(mk)
    assert result.exit_code == 1 and report["ok"] is False
    assert report["missing"] == report["duplicated"] == report["unexpected"] == 0
    assert report["summary_problems"] == 1
    check = {r["run_folder"]: r for r in report["runs"]}[FOLDER_B]["summary"]
    assert check["rows_without_read"] == 1 and check["rows_without_read_ids"] == [stranger]
    assert check["records_without_row"] == check["dangling_rows"] == 0
    table = CliRunner().invoke(command, ["--input", str(mk.input), "--output", str(mk.output)])
    assert "summary row(s) without a read" in table.output and stranger in table.output
    assert "FAILED" in table.output


def test_a_read_without_a_summary_row_fails(mk: MinknowRun) -> None:
    head, rows = mk.rows()
    columns = head.rstrip("\n").split("\t")
    gone = rows[5].split("\t")[columns.index("read_id")]
    mk.summary().write_text(head + "".join(rows[:5] + rows[6:]))
    result, report = verify(mk)
    assert result.exit_code == 1 and report["ok"] is False
    assert report["missing"] == report["duplicated"] == 0
    check = {r["run_folder"]: r for r in report["runs"]}[FOLDER_A]["summary"]
    assert check["records_without_row"] == 1 and check["records_without_row_ids"] == [gone]
    assert check["rows_without_read"] == 0
    # A duplicated row is a mismatch too.
    mk.summary().write_text(head + "".join(rows) + rows[5])
    report = verify_run(mk.input, mk.output)
    check = next(r for r in report.runs if r.run_folder == FOLDER_A).summary
    assert check is not None and check.duplicated_rows == 1 and check.duplicated_row_ids == [gone]
    assert not report.ok


def test_a_row_naming_a_missing_file_fails(mk: MinknowRun) -> None:
    head, rows = mk.rows()
    columns = head.rstrip("\n").split("\t")
    col = columns.index("filename_bam")
    cells = rows[0].split("\t")
    assert cells[col].endswith(".bam")
    cells[col] = "PAW11111_pass_barcode99_000000a1_000000a2_77.bam"
    mk.summary().write_text(head + "\t".join(cells) + "".join(rows[1:]))
    result, report = verify(mk)
    assert result.exit_code == 1 and report["ok"] is False
    assert report["missing"] == report["duplicated"] == 0
    check = {r["run_folder"]: r for r in report["runs"]}[FOLDER_A]["summary"]
    assert check["dangling_rows"] == 1
    assert check["dangling_files"] == {"PAW11111_pass_barcode99_000000a1_000000a2_77.bam": 1}
    assert check["rows_without_read"] == check["records_without_row"] == 0
    table = CliRunner().invoke(command, ["--input", str(mk.input), "--output", str(mk.output)])
    assert "PAW11111_pass_barcode99_000000a1_000000a2_77.bam" in table.output
    # A row naming another file of the run (one that exists) is a mismatch as well.
    other = next(f for f in mk.files if f.startswith(FOLDER_A) and f.endswith(".fastq.gz"))
    cells[col], cells[columns.index("filename_fastq")] = "", other.rsplit("/", 1)[1]
    mk.summary().write_text(head + "\t".join(cells) + "".join(rows[1:]))
    report = verify_run(mk.input, mk.output)
    check = next(r for r in report.runs if r.run_folder == FOLDER_A).summary
    assert check is not None and check.dangling_rows == 0 and check.wrong_file_rows == 1
    assert not report.ok


def test_bcmanagers_own_folders_are_not_read(mk: MinknowRun) -> None:
    # The raw basecaller output in TMPOUTPUT_* holds every read again: it is skipped.
    assert list((mk.output / "TMPOUTPUT_7_e1" / "basecalls").glob("*.bam"))
    for name in ("LOGOUTPUT_3_e1", "FAILEDOUTPUT_4_e1", "QUARANTINE/LATE_5_e1", ".bcmanager"):
        (mk.output / name).mkdir(parents=True)
        shutil.copy(mk.bam(), mk.output / name / "x.bam")
    shutil.copy(mk.bam(), mk.bam().with_name(".partial-x.bam"))
    assert verify_run(mk.input, mk.output).ok
    shutil.copy(mk.bam(), mk.bam().with_name("visible.bam"))
    assert verify_run(mk.input, mk.output).duplicated > 0


def test_the_process_pool_gives_the_same_report(
    mk: MinknowRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    head, rows = mk.rows()
    mk.summary().write_text(head + "".join(rows[1:]))
    inline = verify_run(mk.input, mk.output, workers=0)
    monkeypatch.setattr(verify_module, "_INLINE_BELOW", 1)  # a pool even for a few files
    pooled = verify_run(mk.input, mk.output, workers=2)
    assert pooled.to_dict() == inline.to_dict()
    assert not pooled.ok and pooled.summary_problems == 1


def test_an_unknown_generation_is_refused_naming_those_output_holds(tmp_path: Path) -> None:
    from bcmanager.errors import ConfigError
    from bcmanager.generations import make
    from bcmanager.layout import Layout

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    Layout(inp, out).write_generation_spec(make("sup", "sup", modified_bases=("6mA",)))
    with pytest.raises(ConfigError, match="holds default, sup"):
        verify_module.verify_run(inp, out, workers=0, generation="supp")
    report = verify_module.verify_run(inp, out, workers=0, generation="sup")
    assert report.output.endswith("generations/sup")
