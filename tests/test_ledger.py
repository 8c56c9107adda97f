from pathlib import Path

import pytest

from bcmanager.errors import CorruptState
from bcmanager.ledger import Ledger, NewFile, checkpoint
from bcmanager.runstats import LedgerReader
from bcmanager.states import FileState, JobState


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "l.sqlite3")


def _files(*names: str) -> list[NewFile]:
    return [NewFile(n, 100) for n in names]


def test_known_paths_are_added_once_and_counted(tmp_path: Path, ledger: Ledger) -> None:
    assert ledger.add_files(_files("a.pod5", "b.pod5"), now=1.0) == 2
    assert ledger.add_files(_files("b.pod5", "c.pod5"), now=2.0) == 1
    assert ledger.file_counts()[FileState.QUEUED] == 3
    ledger.close()
    reopened = Ledger(tmp_path / "l.sqlite3")
    assert not reopened.created
    assert reopened.file_counts()[FileState.QUEUED] == 3
    assert reopened.known_paths() == {"a.pod5", "b.pod5", "c.pod5"}


def test_known_names_in_a_folder(ledger: Ledger) -> None:
    ledger.add_files(_files("top.pod5", "r1/pod5/x.pod5", "r1/pod5/y.pod5", "r1/pod5x/z.pod5"), 1.0)
    reader = LedgerReader(ledger.path)
    assert reader.known_names_in("") == {"top.pod5"}
    assert reader.known_names_in("r1/pod5") == {"x.pod5", "y.pod5"}


def test_a_transition_not_in_the_table_is_refused(ledger: Ledger) -> None:
    ledger.add_files(_files("a.pod5"), 1.0)
    row = ledger.get_file("a.pod5")
    with pytest.raises(CorruptState):
        ledger.set_file_state([row.id], FileState.QUEUED, FileState.DONE, 2.0)
    assert ledger.get_file("a.pod5").state is FileState.QUEUED


def test_a_group_with_one_file_in_the_wrong_state_changes_nothing(ledger: Ledger) -> None:
    ledger.add_files(_files("a.pod5", "b.pod5"), 1.0)
    a, b = ledger.get_file("a.pod5"), ledger.get_file("b.pod5")
    job = ledger.create_job("e1", "tok", "v1", 10.0, 1, 1.0)
    ledger.set_file_state([a.id], FileState.QUEUED, FileState.ASSIGNED, 2.0, job_id=job)
    events_before = len(ledger.events(0, 1000))
    with pytest.raises(CorruptState):
        ledger.set_file_state([a.id, b.id], FileState.QUEUED, FileState.ASSIGNED, 3.0, job_id=job)
    assert ledger.get_file("b.pod5").state is FileState.QUEUED
    assert ledger.file_counts()[FileState.QUEUED] == 1
    assert ledger.file_counts()[FileState.ASSIGNED] == 1
    assert len(ledger.events(0, 1000)) == events_before


def test_every_state_change_writes_an_event(ledger: Ledger) -> None:
    ledger.add_files(_files("a.pod5"), 1.0)
    a = ledger.get_file("a.pod5")
    job = ledger.create_job("e1", "tok", "v1", 10.0, 1, 1.5)
    ledger.set_file_state([a.id], FileState.QUEUED, FileState.ASSIGNED, 2.0, job_id=job)
    ledger.set_job_state(job, JobState.ASSIGNED, JobState.EXPIRED, 3.0, reason="lease expired")
    changes = [(e.entity, e.from_state, e.to_state) for e in ledger.events(0, 100)]
    assert ("files", "queued", "assigned") in changes
    assert ("job", "assigned", "expired") in changes
    with pytest.raises(CorruptState):
        ledger.set_job_state(job, JobState.ASSIGNED, JobState.DONE, 4.0)


def test_job_ids_can_be_reserved_above_those_seen_on_disk(ledger: Ledger) -> None:
    ledger.reserve_job_ids(41)
    assert ledger.create_job("e1", "t", "v1", 10.0, 0, 1.0) == 42


def test_lease_renewal_only_for_running_jobs(ledger: Ledger) -> None:
    job = ledger.create_job("e1", "t", "v1", 10.0, 0, now=100.0)
    assert ledger.get_job(job).lease_expires == 110.0
    assert ledger.renew_lease(job, 105.0) == 115.0
    assert [j.id for j in ledger.overdue_jobs(116.0)] == [job]
    ledger.set_job_state(job, JobState.ASSIGNED, JobState.EXPIRED, 117.0)
    with pytest.raises(CorruptState):
        ledger.renew_lease(job, 118.0)


def test_a_ledger_checkpointed_elsewhere_leaves_its_commits_free_of_checkpoints(
    tmp_path: Path,
) -> None:
    """SQLite's own checkpoint (every 1,000 pages of log) runs, with an fsync, in the call
    that commits: on the manager's event loop. Turned off, the log grows past that until
    `checkpoint`, on a connection of its own, copies all of it."""
    many = [NewFile(f"run/f{i:06d}.pod5", 1000 + i) for i in range(60_000)]
    chunks = [many[i : i + 20_000] for i in range(0, len(many), 20_000)]  # ~530 pages each
    own = Ledger(tmp_path / "own.sqlite3")
    for chunk in chunks:
        own.add_files(chunk, now=0.0)
    frames, _ = checkpoint(own.path)
    assert frames < 1_000  # SQLite checkpointed (and restarted its log) while committing
    elsewhere = Ledger(tmp_path / "elsewhere.sqlite3")
    elsewhere.checkpoint_elsewhere()
    for chunk in chunks:
        elsewhere.add_files(chunk, now=0.0)
    frames, copied = checkpoint(elsewhere.path)
    assert frames > 1_000 and copied == frames
    assert Ledger(elsewhere.path).file_counts()[FileState.QUEUED] == len(many)
