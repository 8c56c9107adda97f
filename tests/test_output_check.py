"""The engine's check of a batch before DONE (`bcmanager.output.check`), and the reads a
basecaller filters on purpose, counted alike by the check and `bcm verify`.

Real pod5 files, the real simulated basecaller and filing, real BAM read back strictly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bcmanager.basecallers.abc import dorado_filtered_count
from bcmanager.output.check import check_batch
from bcmanager.output.filing import file_native_output
from bcmanager.pod5io import make_reads, write_pod5
from tests.helpers import basecall_native, bcm_verify, output_read_ids, two_run_job


def write_tiny_pod5(path: Path, n_reads: int, seed: int) -> list[str]:
    """A pod5 of reads of 30 samples: 3 bases each, under Dorado's 5."""
    import dataclasses

    import pod5

    reads = [dataclasses.replace(r, signal=r.signal[:30]) for r in make_reads(n_reads, 100, seed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with pod5.Writer(path) as writer:
        writer.add_reads(reads)
    return [str(r.read_id) for r in reads]


@pytest.fixture
def filed(tmp_path: Path) -> tuple[dict[str, Path], Path, list[Path]]:
    """A job of two runs basecalled and filed: (its pod5 files, its output, outputs)."""
    root, job_in, job_out, _where = two_run_job(tmp_path)
    basecall_native(job_in, job_out, 7, root)
    pod5s = {p.name: p for p in sorted(job_in.iterdir())}
    outputs = sorted(p for p in job_out.rglob("*.bam"))
    return pod5s, job_out, outputs


def test_a_batch_filed_whole_passes_with_every_read_counted(filed) -> None:
    pod5s, _out, outputs = filed
    check = check_batch(pod5s, outputs)
    assert check.problem() is None
    assert check.reads == 100 and not check.missing and not check.duplicated
    assert check.records >= 100  # split reads: more records than reads


def test_an_output_with_stale_bytes_after_it_is_not_whole(filed) -> None:
    pod5s, _out, outputs = filed
    with open(outputs[0], "ab") as fh:
        fh.write(outputs[-1].read_bytes()[:300])  # what two writers on one file leave
    problem = check_batch(pod5s, outputs).problem()
    assert problem is not None and "not whole" in problem and outputs[0].name in problem


def test_reads_filed_twice_or_missing_are_named(filed, tmp_path: Path) -> None:
    pod5s, _out, outputs = filed
    twice = tmp_path / "again.bam"
    shutil.copy(outputs[0], twice)
    doubled = check_batch(pod5s, [*outputs, twice])
    assert doubled.duplicated and "filed more than once" in (doubled.problem() or "")
    lost = check_batch(pod5s, outputs[1:])
    n = lost.n_missing
    assert n > 0
    problem = lost.problem() or ""
    assert f"{n} of 100 read(s) missing" in problem
    some_id = next(iter(lost.missing.values()))[0]
    assert some_id in problem


def test_missing_reads_pass_only_as_many_as_the_basecaller_says_it_filtered(filed) -> None:
    pod5s, _out, outputs = filed
    n = check_batch(pod5s, outputs[1:]).n_missing
    assert check_batch(pod5s, outputs[1:], filtered_by_basecaller=n).problem() is None
    short = check_batch(pod5s, outputs[1:], filtered_by_basecaller=n - 1)
    assert "missing" in (short.problem() or "")


def test_a_read_of_no_pod5_of_the_batch_is_unexpected(filed) -> None:
    pod5s, _out, outputs = filed
    first = sorted(pod5s)[0]
    check = check_batch({first: pod5s[first]}, outputs)
    assert check.unexpected and "of no pod5 of the batch" in (check.problem() or "")


def test_dorados_closing_lines_say_how_many_reads_it_filtered() -> None:
    log = (
        "[2024-01-18 12:46:39.712] [info] > Simplex reads basecalled: 84000\n"
        "[2024-01-18 12:46:39.712] [info] > Simplex reads filtered: 2\n"
    )
    assert dorado_filtered_count(log) == 2
    assert dorado_filtered_count("[info] > Finished\n") == 0


def test_reads_dorado_drops_are_listed_and_verify_counts_them_filtered(
    run_dirs, start_manager, start_engine
) -> None:
    """Dorado drops every sequence under 5 bases (the simulated basecaller too): the
    engine's check accepts exactly those, lists them beside the run's outputs, and `bcm
    verify` reports them filtered, not missing."""
    inp, out = run_dirs
    tiny = write_tiny_pod5(inp / "tiny.pod5", 4, seed=5)  # < 5 bases each
    whole = write_pod5(inp / "whole.pod5", 6, samples=2000, seed=6)
    m = start_manager(inp, out, "--batch-size", "2")
    e = start_engine(m.url, "gpu1", "--until-empty")
    assert e.wait(timeout=90) == 0, e.log.read_text()
    assert "filtered by the basecaller" in e.log.read_text()
    lists = sorted(out.rglob("filtered_reads_*.txt"))
    assert len(lists) == 1
    assert sorted(lists[0].read_text().split()) == sorted(tiny)
    assert set(output_read_ids(out)) == set(whole)
    report = bcm_verify(inp, out)  # the real CLI, as users run it
    assert report["filtered"] == 4 and report["missing"] == 0, report


def test_without_a_list_the_dropped_reads_are_missing_for_verify(tmp_path: Path) -> None:
    """The list is what tells a filtered read from a lost one: without it verify fails."""
    inp, out = tmp_path / "in", tmp_path / "out"
    ids = write_tiny_pod5(inp / "tiny.pod5", 3, seed=5)
    (out / "r").mkdir(parents=True)
    listed = out / "r" / "filtered_reads_1.txt"
    listed.write_text("\n".join(ids) + "\n")
    from bcmanager.verify import verify_run

    report = verify_run(inp, out, workers=0)
    assert report.ok and report.filtered == 3 and report.missing == 0
    listed.unlink()
    report = verify_run(inp, out, workers=0)
    assert not report.ok and report.missing == 3


def test_filing_a_batch_of_only_filtered_reads_leaves_no_read_file(tmp_path: Path) -> None:
    root = tmp_path / "INPUT"
    write_tiny_pod5(root / "tiny.pod5", 3, seed=5)
    job_in, job_out = tmp_path / "ASSIGNED_1_e", tmp_path / "TMPOUTPUT_1_e"
    job_in.mkdir()
    job_out.mkdir()
    os.symlink(root / "tiny.pod5", job_in / "tiny.pod5")
    from bcmanager.basecallers.simulated import SimulatedBasecaller
    from tests.helpers import run_invocation

    done = run_invocation(SimulatedBasecaller(0).invocation(job_in, job_out))
    assert done.returncode == 0 and dorado_filtered_count(done.stderr) == 3
    files = [{"name": "tiny.pod5", "path": "tiny.pod5"}]
    filed = file_native_output(
        job_out, job_in, files, layout="minknow", job_id=1, min_qscore=9, barcoding=False
    )
    assert filed.reads == 0 and filed.files == []
    check = check_batch({"tiny.pod5": job_in / "tiny.pod5"}, [], filtered_by_basecaller=3)
    assert check.problem() is None and check.n_missing == 3


def test_a_read_in_two_pod5_files_of_the_batch_is_wanted_twice(filed, tmp_path: Path) -> None:
    """Hard links of one pod5 under two names (a copied backlog) are two files to
    basecall: each of their reads must be filed twice, once is a loss, thrice too many."""
    pod5s, _out, outputs = filed
    name, path = next(iter(pod5s.items()))
    link = tmp_path / f"linked-{name}"
    os.link(path, link)
    both = {**pod5s, link.name: link}
    again = tmp_path / "again"
    again.mkdir()
    copies = [again / f"{k}-{p.name}" for k, p in enumerate(outputs)]
    for src, dst in zip(outputs, copies, strict=True):
        shutil.copy(src, dst)
    twice = check_batch(both, [*outputs, *copies])
    linked_reads = twice.reads
    assert twice.problem() is not None  # the other files' reads are now filed twice
    once = check_batch(both, outputs)
    assert set(once.missing) == {link.name}  # the later file's copies are the missing ones
    assert once.n_missing == len(once.missing[link.name]) == len(_ids_of(path))
    assert once.reads == linked_reads == 100
    only_linked = check_batch({name: path, link.name: link}, outputs + copies)
    assert not only_linked.missing and not only_linked.duplicated


def _ids_of(path: Path) -> list[str]:
    import pod5

    with pod5.Reader(path) as reader:
        return [str(r.read_id) for r in reader.reads()]


def test_a_slice_is_checked_against_the_reads_it_lists_only(tmp_path: Path) -> None:
    """A slice's batch (issue 26): reads of its file that it does not list are another
    slice's, not missing; a listed read that is missing is."""
    from bcmanager.readids import raw_id_array

    pod5 = tmp_path / "a.pod5"
    ids = write_pod5(pod5, 6, samples=300, seed=3)
    out = tmp_path / "slice.fastq"
    out.write_text("".join(f"@{i}\nACGT\n+\n!!!!\n" for i in ids[:2]))
    whole = check_batch({"a.pod5": pod5}, [out])
    assert whole.n_missing == 4
    sliced = check_batch({"a.pod5": pod5}, [out], only=raw_id_array(ids[:2]))
    assert sliced.problem() is None and sliced.reads == 2
    short = check_batch({"a.pod5": pod5}, [out], only=raw_id_array(ids[:3]))
    assert short.missing == {"a.pod5": [ids[2]]}
