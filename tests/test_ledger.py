import sqlite3
from pathlib import Path

import pytest

from bcmanager.errors import CorruptState
from bcmanager.generations import implicit, make
from bcmanager.ledger import SCHEMA_VERSION, Ledger, NewFile, checkpoint
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
    assert reopened.unsettled  # no start has settled it (Manager.open)
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


# -- state changes ----------------------------------------------------------------------


def test_files_move_queued_assigned_done_with_one_event_per_group(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.add_files(_files("a.pod5", "b.pod5"), 1.0)
    ids = [ledger.get_file(p).id for p in ("a.pod5", "b.pod5")]
    job = ledger.create_job("e1", "tok", "v1", 10.0, 2, 2.0)
    ledger.set_file_state(ids, FileState.QUEUED, FileState.ASSIGNED, 3.0, job_id=job)
    assert [(f.path, f.job_id) for f in ledger.files_of_job(job)] == [
        ("a.pod5", job),
        ("b.pod5", job),
    ]
    ledger.set_file_state(ids, FileState.ASSIGNED, FileState.DONE, 4.0, job_id=job)
    moves = [
        (e.job_id, e.from_state, e.to_state, e.count, e.at)
        for e in ledger.events(0, 100)
        if e.entity == "files"
    ]
    assert moves == [
        (None, None, "queued", 2, 1.0),
        (job, "queued", "assigned", 2, 3.0),
        (job, "assigned", "done", 2, 4.0),
    ]
    assert ledger.file_counts() == {
        FileState.QUEUED: 0,
        FileState.ASSIGNED: 0,
        FileState.DONE: 2,
        FileState.QUARANTINED: 0,
    }
    db = sqlite3.connect(ledger.path)
    assert db.execute("SELECT done_at FROM files ORDER BY id").fetchall() == [(4.0,), (4.0,)]
    with pytest.raises(CorruptState):  # done is final
        ledger.set_file_state(ids, FileState.DONE, FileState.QUEUED, 5.0)


def test_attempts_count_only_when_asked_and_a_move_keeps_the_files_job(ledger: Ledger) -> None:
    ledger.add_files(_files("a.pod5"), 1.0)
    a = ledger.get_file("a.pod5").id
    job = ledger.create_job("e1", "tok", "v1", 10.0, 1, 1.0)
    ledger.set_file_state([a], FileState.QUEUED, FileState.ASSIGNED, 2.0, job_id=job)
    ledger.set_file_state([a], FileState.ASSIGNED, FileState.QUEUED, 3.0, count_attempt=True)
    row = ledger.get_file("a.pod5")
    assert (row.state, row.attempts, row.job_id) == (FileState.QUEUED, 1, job)
    ledger.set_file_state([a], FileState.QUEUED, FileState.QUARANTINED, 4.0, reason="bad pod5")
    row = ledger.get_file("a.pod5")
    assert (row.state, row.attempts, row.reason) == (FileState.QUARANTINED, 1, "bad pod5")
    assert [f.path for f in ledger.files_in_state(FileState.QUARANTINED)] == ["a.pod5"]
    ledger.set_file_state([a], FileState.QUARANTINED, FileState.QUEUED, 5.0)  # operator retry
    assert ledger.get_file("a.pod5").reason is None


def test_an_empty_group_writes_no_event_but_a_bad_transition_is_still_refused(
    ledger: Ledger,
) -> None:
    ledger.set_file_state([], FileState.QUEUED, FileState.ASSIGNED, 1.0)
    assert ledger.events(0, 100) == []
    with pytest.raises(CorruptState):
        ledger.set_file_state([], FileState.QUEUED, FileState.DONE, 1.0)


def test_a_job_moves_through_merging_to_done_with_its_plan_and_end(ledger: Ledger) -> None:
    job = ledger.create_job("e1", "tok", "v1", 10.0, 0, 1.0)
    ledger.set_job_state(job, JobState.ASSIGNED, JobState.MERGING, 2.0, merge_plan={"m": [1]})
    merging = ledger.get_job(job)
    assert (merging.state, merging.ended, merging.merge_plan) == (
        JobState.MERGING,
        None,
        '{"m": [1]}',
    )
    ledger.set_job_state(job, JobState.MERGING, JobState.DONE, 3.0)
    done = ledger.get_job(job)
    assert (done.state, done.ended, done.merge_plan) == (JobState.DONE, 3.0, '{"m": [1]}')
    assert ledger.job_counts()[JobState.DONE] == 1
    with pytest.raises(CorruptState):  # the job is not merging any more
        ledger.set_job_state(job, JobState.MERGING, JobState.DONE, 4.0)
    changes = [(e.from_state, e.to_state) for e in ledger.events(0, 100) if e.entity == "job"]
    assert changes == [(None, "assigned"), ("assigned", "merging"), ("merging", "done")]


# -- in-memory counts and leases ---------------------------------------------------------


def test_counts_and_queued_bytes_match_the_tables_through_every_move(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path)
    ledger.add_generation(implicit(), 0.0)
    sizes = {"a.pod5": 100, "b.pod5": 200, "c.pod5": 300}
    ledger.add_files([NewFile(p, n) for p, n in sizes.items()], 1.0)
    # b is known already: only d is new, and the bytes are those of a, b, c and d
    assert ledger.add_files([NewFile("b.pod5", 200), NewFile("d.pod5", 400)], 2.0) == 1
    assert ledger.queued_bytes() == 1000
    a, b, c = (ledger.get_file(p).id for p in sizes)
    job = ledger.create_job("e1", "tok", "v1", 10.0, 2, 3.0)
    ledger.set_file_state([a, b], FileState.QUEUED, FileState.ASSIGNED, 3.0, job_id=job)
    ledger.set_file_state([b], FileState.ASSIGNED, FileState.QUEUED, 4.0)
    ledger.set_file_state([c], FileState.QUEUED, FileState.QUARANTINED, 4.0)
    assert ledger.queued_bytes() == 600 and ledger.mean_queued_size() == 300.0
    ledger.add_generation(make("sup", "dna_r10.4.1_e8.2_400bps_sup@v5.0.0"), 5.0)
    assert ledger.file_counts(1)[FileState.QUEUED] == 4
    assert ledger.queued_count() == 6 and ledger.queued_count([0]) == 2
    assert ledger.queued_bytes() == 1600
    expected = (ledger.counts_by_generation(), ledger.queued_bytes(), ledger.file_counts())
    ledger.close()
    reopened = Ledger(path)  # counted afresh from the tables
    assert (reopened.counts_by_generation(), reopened.queued_bytes()) == expected[:2]
    assert reopened.file_counts() == expected[2]
    assert expected[2][FileState.ASSIGNED] == 1 and expected[2][FileState.QUARANTINED] == 1


def test_a_rolled_back_transaction_restores_counts_bytes_leases_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path)
    ledger.add_files([NewFile("a.pod5", 100), NewFile("b.pod5", 300)], 1.0)
    running = ledger.create_job("e1", "t", "v1", 10.0, 1, 1.0)  # lease until 11
    ledger.set_file_state(
        [ledger.get_file("a.pod5").id], FileState.QUEUED, FileState.ASSIGNED, 1.0, job_id=running
    )

    def state() -> tuple:
        return (
            ledger.counts_by_generation(),
            ledger.queued_bytes(),
            ledger.lease_expiries(),
            len(ledger.events(0, 1000)),
            ledger.max_job_id(),
        )

    before = state()
    assert ledger.get_job(running).state is JobState.ASSIGNED  # its row is kept from here on
    with pytest.raises(RuntimeError, match="boom"), ledger.transaction():
        ledger.add_files([NewFile("c.pod5", 500)], 2.0)
        b = ledger.get_file("b.pod5").id
        ledger.set_file_state([b], FileState.QUEUED, FileState.ASSIGNED, 2.0, job_id=running)
        ledger.renew_lease(running, 5.0)  # renewed to 15 ...
        ledger.set_job_state(running, JobState.ASSIGNED, JobState.EXPIRED, 6.0)  # ... cleared
        assert ledger.get_job(running).state is JobState.EXPIRED  # not the row kept
        created = ledger.create_job("e2", "t2", "v1", 10.0, 0, 6.0)  # a new lease
        assert ledger.get_job(created).state is JobState.ASSIGNED
        with ledger.transaction():  # an inner transaction commits nothing by itself
            ledger.record_event(6.0, "scan", "inner")
        raise RuntimeError("boom")
    assert state() == before
    assert ledger.get_file("c.pod5") is None
    assert ledger.get_file("b.pod5").state is FileState.QUEUED
    assert ledger.get_job(running).state is JobState.ASSIGNED
    assert ledger.get_job(running).lease_expires == 11.0
    assert ledger.get_job(created) is None  # nor is the row of the job rolled back
    assert ledger.renew_lease(running, 7.0) == 17.0  # its lease is back, and runs
    reopened = Ledger(path)
    assert reopened.counts_by_generation() == ledger.counts_by_generation()
    assert reopened.queued_bytes() == ledger.queued_bytes() == 300


def test_leases_are_set_on_assignment_renewed_in_memory_and_cleared_on_leaving_assigned(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path)
    job = ledger.create_job("e1", "t", "v1", 10.0, 0, now=100.0)
    merging = ledger.create_job("e2", "t", "v1", 10.0, 0, now=100.0, state=JobState.MERGING)
    assert ledger.lease_expiries() == {job: 110.0}  # only an assigned job holds a lease
    with pytest.raises(CorruptState):
        ledger.renew_lease(merging, 101.0)
    assert ledger.renew_lease(job, 104.0) == 114.0
    assert ledger.get_job(job).lease_expires == 114.0
    assert ledger.overdue_jobs(114.0) == []
    assert [j.id for j in ledger.overdue_jobs(114.5)] == [job]
    # a restart reads the deadline given at assignment: renewals are never written
    assert Ledger(path).lease_expiries() == {job: 110.0}
    ledger.set_job_state(job, JobState.ASSIGNED, JobState.MERGING, 120.0)
    assert ledger.lease_expiries() == {} and ledger.overdue_jobs(1e9) == []
    assert Ledger(path).lease_expiries() == {}


# -- schema ------------------------------------------------------------------------------


_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    job_id INTEGER, reads INTEGER, samples INTEGER, reason TEXT, run TEXT,
    mtime REAL, discovered_at REAL NOT NULL, done_at REAL);
CREATE INDEX files_by_state ON files(state, id);
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, engine TEXT NOT NULL,
    state TEXT NOT NULL, token TEXT NOT NULL, api TEXT NOT NULL,
    lease_s REAL NOT NULL, lease_expires REAL NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, ended REAL, n_files INTEGER NOT NULL, reason TEXT,
    merge_plan TEXT);
INSERT INTO jobs(id, engine, state, token, api, lease_s, lease_expires, created, updated,
    n_files) VALUES (7, 'e1', 'assigned', 'tok', 'v1', 30, 130, 100, 100, 1);
INSERT INTO files(id, path, size, state, attempts, job_id, run, discovered_at) VALUES
    (3, 'r1/a.pod5', 5, 'assigned', 2, 7, 'r1', 1), (4, 'r1/b.pod5', 7, 'queued', 0, NULL, 'r1', 1);
"""


def test_a_schema_1_ledger_keeps_its_files_jobs_and_leases_and_migrates_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA_1)
    old.close()
    ledger = Ledger(path)
    assert ledger.get_meta("schema_version") == str(SCHEMA_VERSION) == "2"
    a = ledger.get_file("r1/a.pod5")
    assert (a.id, a.state, a.attempts, a.job_id, a.gen) == (3, FileState.ASSIGNED, 2, 7, 0)
    assert ledger.get_job(7).gen == 0 and ledger.lease_expiries() == {7: 130.0}
    assert ledger.queued_bytes() == 7
    ledger.set_file_state([a.id], FileState.ASSIGNED, FileState.DONE, 140.0, job_id=7)
    assert ledger.create_job("e2", "t", "v1", 10.0, 0, 150.0) == 8  # ids go on
    ledger.close()
    again = Ledger(path)  # already schema 2: opened as it is
    assert again.file_counts(0) == {
        FileState.QUEUED: 1,
        FileState.ASSIGNED: 0,
        FileState.DONE: 1,
        FileState.QUARANTINED: 0,
    }
    assert [e.to_state for e in again.events(0, 100)] == ["done", "assigned"]


def test_a_new_ledger_records_its_schema_version(ledger: Ledger) -> None:
    assert ledger.unsettled  # until a start has looked at OUTPUT (Manager.open)
    ledger.settle()
    assert not ledger.unsettled and not Ledger(ledger.path).unsettled
    assert ledger.get_meta("schema_version") == str(SCHEMA_VERSION)
    ledger.set_meta("schema_version", "99")  # a meta value is kept, not reset on reopening
    assert Ledger(ledger.path).get_meta("schema_version") == "99"


# -- queued order -------------------------------------------------------------------------


def test_queued_files_come_in_discovery_order_one_run_per_batch(ledger: Ledger) -> None:
    # The scanner hands each chunk over sorted by (mtime, path); the ledger keeps the order
    # it was given and never re-sorts by mtime, so a file found later comes later.
    ledger.add_files(
        [
            NewFile("r1/b.pod5", 1, mtime=5.0, run="r1"),
            NewFile("r2/a.pod5", 1, mtime=6.0, run="r2"),
            NewFile("r1/a.pod5", 1, mtime=7.0, run="r1"),
        ],
        1.0,
    )
    ledger.add_files([NewFile("r1/0.pod5", 1, mtime=1.0, run="r1")], 2.0)
    assert [f.path for f in ledger.queued_files(10)] == ["r1/b.pod5", "r1/a.pod5", "r1/0.pod5"]
    assert [f.path for f in ledger.queued_files(2)] == ["r1/b.pod5", "r1/a.pod5"]
    batch = [f.id for f in ledger.queued_files(10)]
    job = ledger.create_job("e1", "t", "v1", 10.0, len(batch), 3.0)
    ledger.set_file_state(batch, FileState.QUEUED, FileState.ASSIGNED, 3.0, job_id=job)
    assert [f.path for f in ledger.queued_files(10)] == ["r2/a.pod5"]
    # a file handed back takes its discovery place again, ahead of later ones
    ledger.set_file_state(batch[:1], FileState.ASSIGNED, FileState.QUEUED, 4.0)
    assert [f.path for f in ledger.queued_files(10)] == ["r1/b.pod5"]


def test_a_batch_comes_from_the_first_allowed_generation_with_files_queued(
    ledger: Ledger,
) -> None:
    ledger.add_generation(implicit(), 0.0)
    ledger.add_files(_files("a.pod5", "b.pod5"), 1.0)
    ledger.add_generation(make("sup", "dna_r10.4.1_e8.2_400bps_sup@v5.0.0"), 2.0)
    assert {f.gen for f in ledger.queued_files(10)} == {0}
    assert [(f.path, f.gen) for f in ledger.queued_files(10, gens=[1])] == [
        ("a.pod5", 1),
        ("b.pod5", 1),
    ]
    ids = [f.id for f in ledger.queued_files(10, gens=[0])]
    job = ledger.create_job("e1", "t", "v1", 10.0, 2, 3.0)
    ledger.set_file_state(ids, FileState.QUEUED, FileState.ASSIGNED, 3.0, job_id=job)
    assert ledger.next_generation() == 1
    assert ledger.next_generation([0]) == 0 and ledger.queued_files(10, gens=[0]) == []


# -- yields, runs, events ------------------------------------------------------------------


def test_yield_totals_are_replaced_per_generation_run_and_barcode(ledger: Ledger) -> None:
    ledger.put_yield_totals(
        [{"run": "r1", "barcode": "bc02", "reads": 1}, {"run": "r1", "barcode": "bc01", "reads": 3}]
    )
    ledger.put_yield_totals([{"run": "r1", "barcode": "bc01", "reads": 5}], gen=1)
    ledger.put_yield_totals([{"run": "r1", "barcode": "bc02", "reads": 4}])
    assert ledger.yield_totals() == [
        {"run": "r1", "barcode": "bc01", "reads": 3, "gen": 0},
        {"run": "r1", "barcode": "bc02", "reads": 4, "gen": 0},
        {"run": "r1", "barcode": "bc01", "reads": 5, "gen": 1},
    ]
    with pytest.raises(RuntimeError), ledger.transaction():  # the job they count failed
        ledger.put_yield_totals([{"run": "r1", "barcode": "bc01", "reads": 99}])
        raise RuntimeError
    assert ledger.yield_totals()[0]["reads"] == 3


def test_a_run_ends_once_and_its_live_files_are_counted_by_state(ledger: Ledger) -> None:
    ledger.add_files(
        [NewFile("r1/a.pod5", 1, run="r1"), NewFile("r1/b.pod5", 1, run="r1"), NewFile("t", 1)],
        1.0,
    )
    assert ledger.runs_open() == (2, 2)  # "r1" and "." (files outside any run)
    assert ledger.end_run("r1", "final summary", 2.0) is True
    assert ledger.end_run("r1", "again", 3.0) is False
    runs = {r["run"]: r for r in ledger.runs()}
    assert (runs["r1"]["ended"], runs["r1"]["summary"]) == (2.0, "final summary")
    assert runs["r1"]["files"]["queued"] == 2 and runs["."]["files"]["queued"] == 1
    assert ledger.runs_open() == (2, 1)
    assert [e.detail for e in ledger.events(0, 100) if e.entity == "run"] == ["r1"]


def test_events_page_forward_and_the_last_ones_come_oldest_first(ledger: Ledger) -> None:
    for i in range(5):
        ledger.record_event(float(i), "scan", f"scan {i}", job_id=i or None)
    first = ledger.events(0, 2)
    assert [e.detail for e in first] == ["scan 0", "scan 1"]
    assert [e.detail for e in ledger.events(first[-1].id, 10)] == ["scan 2", "scan 3", "scan 4"]
    assert [e.detail for e in ledger.last_events(2)] == ["scan 3", "scan 4"]
    assert first[1].as_dict() == {
        "id": first[1].id,
        "at": 1.0,
        "entity": "scan",
        "job_id": 1,
        "from": None,
        "to": None,
        "count": 1,
        "detail": "scan 1",
    }
