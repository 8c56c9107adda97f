"""`bcm verify`: every read id of the input exactly once in the output, or a clear report."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bcmanager.basecallers.simulated import write_fastq
from bcmanager.cli.verify import command
from bcmanager.layout import POD5_SIGNATURE, Layout
from bcmanager.pod5io import write_pod5
from bcmanager.verify import verify_run


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


def verify(run: Run, *extra: str) -> tuple[Result, dict]:
    result = CliRunner().invoke(
        command, ["--input", str(run.input), "--output", str(run.output), "--json", *extra]
    )
    return result, json.loads(result.output)


def records(path: Path) -> list[str]:
    lines = path.read_text().splitlines(keepends=True)
    return ["".join(lines[i : i + 4]) for i in range(0, len(lines), 4)]


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
