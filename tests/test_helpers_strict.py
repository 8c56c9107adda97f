"""The tests' strict reader (`tests.helpers.assert_outputs_whole`) catches what users'
tools catch: a truncated or garbled BAM, a gzip without its trailer or with stale bytes,
a FASTQ cut mid-record; and it skips bcmanager's own folders as `bcm verify` does."""

from __future__ import annotations

import gzip
from pathlib import Path

import pysam
import pytest

from bcmanager.pod5io import read_ids
from tests.helpers import (
    SHARED_ACQUISITION,
    SHARED_FLOWCELL,
    assert_outputs_whole,
    make_run,
    read_files_under,
)

FASTQ = b"".join(b"@read%d\nACGT\n+\n!!!!\n" % i for i in range(200))


def _bam(path: Path, n: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pysam.AlignmentFile(str(path), "wb", header={"HD": {"VN": "1.6"}}) as fh:
        for i in range(n):
            a = pysam.AlignedSegment()
            a.query_name, a.flag = f"r{i}", 4
            a.query_sequence = "ACGT" * 50
            a.query_qualities = pysam.qualitystring_to_array("I" * 200)
            fh.write(a)
    return path.read_bytes()


def _broken(tmp_path: Path, name: str, data: bytes) -> str:
    out = tmp_path / "OUTPUT"
    (out / "run" / "bam_pass").mkdir(parents=True, exist_ok=True)
    (out / "run" / "bam_pass" / name).write_bytes(data)
    with pytest.raises(AssertionError) as caught:
        assert_outputs_whole(out)
    assert f"run/bam_pass/{name}" in str(caught.value)
    return str(caught.value)


def test_whole_files_are_read_to_their_end_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "OUTPUT"
    _bam(out / "run" / "bam_pass" / "a.bam", 300)
    (out / "run" / "fastq_pass").mkdir(parents=True)
    (out / "run" / "fastq_pass" / "a.fastq.gz").write_bytes(gzip.compress(FASTQ))
    (out / "run" / "fastq_pass" / "b.fastq.gz").write_bytes(  # two members, zero padding
        gzip.compress(FASTQ) + gzip.compress(FASTQ) + b"\0" * 8
    )
    (out / "pass").mkdir()
    (out / "pass" / "c.fastq").write_bytes(FASTQ)
    for own in ("TMPOUTPUT_3_e1", "QUARANTINE", ".bcmanager", "FAILEDOUTPUT_2_e", ".hidden"):
        (out / own).mkdir()
        (out / own / "junk.bam").write_bytes(b"not a bam")
    (out / "pass" / ".partial.fastq").write_bytes(b"@cut")
    assert assert_outputs_whole(out) == {
        "pass/c.fastq": 200,
        "run/bam_pass/a.bam": 300,
        "run/fastq_pass/a.fastq.gz": 200,
        "run/fastq_pass/b.fastq.gz": 400,
    }
    _bam(out / "generations" / "sup" / "run" / "bam_pass" / "a.bam", 1)
    assert len(read_files_under(out)) == 5
    assert len(read_files_under(out, skip_generations=True)) == 4


def test_a_truncated_bam_fails(tmp_path: Path) -> None:
    whole = _bam(tmp_path / "whole.bam", 2000)
    assert "EOF marker" in _broken(tmp_path, "cut.bam", whole[: len(whole) // 2])


def test_a_bam_with_stale_bytes_or_a_second_bam_after_its_end_fails(tmp_path: Path) -> None:
    big, small = _bam(tmp_path / "big.bam", 2000), _bam(tmp_path / "small.bam", 10)
    stale = small + big[len(small) :]  # a shorter BAM written over a longer one
    assert "OSError: truncated file" in _broken(tmp_path, "stale.bam", stale)
    _broken(tmp_path, "twice.bam", big + small)  # two BAMs end to end: a header mid-file


def test_a_gzip_without_its_trailer_or_with_stale_bytes_fails(tmp_path: Path) -> None:
    whole = gzip.compress(FASTQ)
    assert "EOFError" in _broken(tmp_path, "cut.fastq.gz", whole[:-4])
    _broken(tmp_path, "stale.fastq.gz", whole + b"stale bytes")
    _broken(tmp_path, "empty.fastq.gz", b"")


def test_a_fastq_cut_mid_record_or_garbled_fails(tmp_path: Path) -> None:
    cut = FASTQ[: FASTQ.index(b"@read10\n") + len(b"@read10\nAC")]
    assert "2 line(s) after record 10: b'@read10'" in _broken(tmp_path, "cut.fastq", cut)
    assert "no newline" in _broken(tmp_path, "end.fastq", FASTQ[:-1])
    assert "qualities" in _broken(tmp_path, "bad.fastq", FASTQ.replace(b"!!!!\n", b"!!!\n", 1))
    assert "@" in _broken(tmp_path, "head.fastq", b"read0\nACGT\n+\n!!!!\n")
    assert "fastq" in _broken(tmp_path, "cut.fastq.gz", gzip.compress(FASTQ[:-3]))


def test_per_file_run_ids_share_flow_cell_and_acquisition_and_8_hex_digits(tmp_path) -> None:
    import pod5

    plain = make_run(tmp_path / "a", 3, reads=2)
    hostile = make_run(tmp_path / "b", 3, reads=2, per_file_run_ids=True)
    assert plain == hostile  # the same reads, other run info
    infos = []
    for rel in hostile:
        assert read_ids(tmp_path / "b" / rel) == hostile[rel]
        with pod5.Reader(tmp_path / "b" / rel) as reader:
            infos.append(next(reader.reads()).run_info)
    assert {(i.flow_cell_id, i.acquisition_id) for i in infos} == {
        (SHARED_FLOWCELL, SHARED_ACQUISITION)
    }
    assert [i.protocol_run_id for i in infos] == [
        f"00000000-0000-0000-0000-{n:012d}" for n in (1, 2, 3)
    ]
