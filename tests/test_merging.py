"""Merging (`bcmanager.merging`): the run folder of an original engine's FASTQ is read
from its pod5 after the claim, by a thread of its own, never under the manager's lock.

A real manager in-process over real pod5 files of a flat INPUT, its merges driven by the
test; the one reader of a pod5's run table is watched while the lock is held.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import bcmanager.merging as merging
import bcmanager.output.origin as origin
from bcmanager.config import Settings, check_directories
from bcmanager.manager import Manager, Outcome
from bcmanager.merging import RunFolders
from bcmanager.states import FileState
from tests.helpers import basecall_dir, make_run, wait_until


def open_manager(inp: Path, out: Path) -> Manager:
    settings = check_directories(Settings(input=inp, output=out, lease_s=30, settle_s=0))
    m = Manager(settings)
    m.open(scan_now=True)
    return m


def test_no_merge_reads_a_pod5_under_the_lock_when_its_run_folder_was_read_ahead(
    run_dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp, out = run_dirs
    make_run(inp, 4)
    m = open_manager(inp, out)
    monkeypatch.setattr(merging, "READ_AHEAD_S", 0.05)  # the thread looks every 50 ms
    m.merger.run_folders.start()
    reads: list[bool] = []  # whether the manager's lock was held at each read
    real = origin.run_folder_of_pod5

    def watched(path: Path, rel: str) -> str:
        reads.append(m.lock._is_owned())  # type: ignore[attr-defined]
        return real(path, rel)

    monkeypatch.setattr(origin, "run_folder_of_pod5", watched)
    try:
        while m.db.file_counts()[FileState.QUEUED]:
            a = m.claim("orig", 1, api="legacy")
            assert a is not None
            basecall_dir(
                m.layout.assigned_dir(a.job.id, "orig"), m.layout.tmp_output_dir(a.job.id, "orig")
            )
            n = a.job.id
            wait_until(lambda n=n: len(reads) >= n, timeout=10, what="the run folder read ahead")
            m.complete(a.job.id, Outcome.DONE, None)
    finally:
        m.close()
    assert len(reads) == 4 and not any(reads)  # one read per file, none under the lock
    landed = sorted(p.parent.parent.name for p in out.glob("*/fastq_pass/*.fastq"))
    assert [f.split("_")[0] for f in landed] == ["FA00001", "FA00002", "FA00003", "FA00004"]


def test_a_run_folder_not_read_ahead_is_read_at_the_merge(run_dirs) -> None:
    """Without the thread (a restart mid-batch, or tests), the merge reads it itself."""
    inp, _out = run_dirs
    make_run(inp, 1)
    folders = RunFolders(inp)
    folders.want(7, ["f0000.pod5"])  # not started: nothing is queued
    assert folders.folder(7, "f0000.pod5").startswith("FA00001_")
    assert folders.folder(7, "run1/pod5_pass/x.pod5") == "run1"  # MinKNOW's: no read


def test_what_was_read_ahead_for_a_job_is_dropped_when_the_job_ends(
    run_dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp, _out = run_dirs
    make_run(inp, 2)
    monkeypatch.setattr(merging, "READ_AHEAD_S", 0.05)
    folders = RunFolders(inp)
    folders.start()
    try:
        folders.want(1, ["f0000.pod5", "f0001.pod5"])
        deadline = time.monotonic() + 10
        while len(folders._known.get(1, {})) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        folders.forget(1)
        assert 1 not in folders._known
    finally:
        folders.close()


def test_a_job_merged_before_its_turn_is_not_read_ahead(run_dirs) -> None:
    """A batch done within READ_AHEAD_S (a tiny one) reads its run folder at its merge;
    the thread then skips it rather than read it a second time."""
    inp, _out = run_dirs
    make_run(inp, 2)
    folders = RunFolders(inp)
    folders._thread = object()  # type: ignore[assignment]  # as if started: want() queues
    folders.want(1, ["f0000.pod5"])
    folders.want(2, ["f0001.pod5"])
    folders.forget(1)  # merged already
    assert folders.read_due(time.monotonic()) == 1
    assert list(folders._known) == [2]


def test_a_quarantine_the_disk_refuses_to_record_is_recorded_later_not_lost(run_dirs) -> None:
    """Found by the soak (issue 27): the ledger had a file quarantined, then writing
    QUARANTINE/quarantined.tsv failed (a full disk), the engine's report got a 500, and
    the record was lost (`bcm verify` then counts its reads missing). Now the report is
    answered and the record is written at a later tick. The failing write here: the
    record's path is a folder for a while (an OSError as a full disk's, deterministic)."""
    from bcmanager.layout import QUARANTINE_DIR, QUARANTINE_LIST

    inp, out = run_dirs
    make_run(inp, 1)
    settings = check_directories(
        Settings(input=inp, output=out, lease_s=30, settle_s=0, max_attempts=1)
    )
    now = [1_000.0]
    m = Manager(settings, clock=lambda: now[0])
    m.open(scan_now=True)
    record = out / QUARANTINE_DIR / QUARANTINE_LIST
    record.mkdir(parents=True)  # the write fails as on a full disk
    a = m.claim("e1", 1, api="v1")
    assert a is not None
    done = m.complete(a.job.id, Outcome.FAILED, a.job.token, reason="poison")  # no 500
    assert done.job.state.value == "failed"
    assert m.db.file_counts()[FileState.QUARANTINED] == 1
    assert m.merger.unrecorded
    record.rmdir()  # space again
    now[0] += 10
    m.tick()
    lines = record.read_text(encoding="utf-8").splitlines()
    assert lines == ["f0000.pod5\tfailed 1 attempts; last: poison"]
    now[0] += 10
    m.tick()  # recorded once
    assert record.read_text(encoding="utf-8").splitlines() == lines
    m.close()
