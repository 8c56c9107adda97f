"""Slices of large files in the ledger and the scheduler: every read handed out exactly
once, whatever fails, expires or is handed back (bcmanager.slicing)."""

from dataclasses import replace
from pathlib import Path

import pytest

from bcmanager import scheduler, slicing
from bcmanager.generations import implicit, make
from bcmanager.ledger import FileRow, Ledger, NewFile, Part
from bcmanager.scheduler import Policy, Speed
from bcmanager.states import FileState, JobState

MB = 1_000_000
POLICY = Policy(lease_s=10.0, default_batch=4, max_batch=50, max_attempts=2, slice_above=100 * MB)
FAST = Speed(startup_s=0.5, bytes_per_s=1 * MB)  # a steady batch: 60 s, 60 MB
PROBE_LEAST = POLICY.slice_above * slicing.MIN_SLICE_SHARE  # an unmeasured engine's least slice


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files(
        [
            NewFile("big.pod5", 300 * MB, reads=3000),
            NewFile("small1.pod5", 10 * MB, reads=100),
            NewFile("huge-unknown.pod5", 500 * MB),  # its read count could not be read
            NewFile("small2.pod5", 10 * MB, reads=100),
        ],
        now=0.0,
    )
    return db


def claim(db: Ledger, engine: str = "e1", now: float = 1.0, **kw: object) -> scheduler.Assignment:
    kw.setdefault("slices", True)
    kw.setdefault("speed", FAST)
    a = scheduler.claim(db, engine, None, now, POLICY, "v1", **kw)  # type: ignore[arg-type]
    assert a is not None
    return a


def covered(pieces: list[FileRow]) -> list[tuple[int, int]]:
    return sorted((p.part.first, p.part.end) for p in pieces if p.part is not None)


def test_a_large_file_goes_out_in_slices_sized_like_the_engines_batch(ledger: Ledger) -> None:
    first = claim(ledger)
    (piece,) = first.files
    assert piece.path == "big.pod5" and piece.part is not None
    assert (piece.part.first, piece.part.count, piece.part.of) == (0, 600, 3000)  # 60 MB
    assert piece.size == 60 * MB and piece.reads == 600
    assert ledger.get_file("big.pod5").state is FileState.ASSIGNED
    second = claim(ledger, "e2")
    assert covered(second.files) == [(600, 1200)]
    # an engine of whole files only never gets the file being sliced, nor a slice
    whole = scheduler.claim(ledger, "old", 5, 1.0, POLICY, "v1")
    assert [f.path for f in whole.files] == ["small1.pod5", "huge-unknown.pod5", "small2.pod5"]
    assert all(f.part is None for f in whole.files)


def test_every_read_of_a_sliced_file_is_handed_out_once_and_the_file_done_at_the_last_merge(
    ledger: Ledger,
) -> None:
    pieces = []
    while True:
        a = claim(ledger, now=2.0)
        if a.files[0].path != "big.pod5":
            break
        pieces.append(a)
    assert covered([p.files[0] for p in pieces]) == [
        (0, 600),
        (600, 1200),
        (1200, 1800),
        (1800, 2400),
        (2400, 3000),
    ]
    for a in pieces[:-1]:
        scheduler.begin_merge(ledger, a.job, {}, 3.0)
        scheduler.finish_merge(ledger, scheduler.get_job(ledger, a.job.id), 3.0)
        assert ledger.get_file("big.pod5").state is FileState.ASSIGNED
    last = pieces[-1]
    scheduler.begin_merge(ledger, last.job, {}, 4.0)
    scheduler.finish_merge(ledger, scheduler.get_job(ledger, last.job.id), 4.0)
    big = ledger.get_file("big.pod5")
    assert big.state is FileState.DONE
    assert {s.state for s in ledger.slices_of_file(big.id)} == {FileState.DONE}
    assert ledger.file_counts()[FileState.DONE] == 1


def test_a_failed_slice_goes_back_alone_and_out_of_attempts_quarantines_its_file(
    ledger: Ledger,
) -> None:
    a = claim(ledger)
    b = claim(ledger, "e2")
    assert scheduler.fail(ledger, a.job, "exit 1", 2.0, POLICY) == []
    retry = claim(ledger, "e3", now=3.0)
    assert covered(retry.files) == [(0, 600)] and retry.files[0].attempts == 1
    expired = scheduler.expire_overdue(ledger, 20.0, POLICY)  # b and the retry
    poisoned = [f.path for _job, files in expired for f in files]
    assert poisoned == ["big.pod5"]
    big = ledger.get_file("big.pod5")
    assert big.state is FileState.QUARANTINED and "reads 0-599 of 3000" in (big.reason or "")
    states = {(s.first, s.state) for s in ledger.slices_of_file(big.id)}
    assert (600, FileState.QUEUED) in states or (600, FileState.QUARANTINED) in states
    assert not ledger.queued_slices()  # the rest of a quarantined file is not handed out
    assert ledger.get_job(b.job.id).state is JobState.EXPIRED
    nxt = claim(ledger, "e4", now=21.0)
    assert nxt.files[0].path == "small1.pod5"


def test_a_slice_handed_back_or_failed_on_a_full_disk_costs_no_attempt(ledger: Ledger) -> None:
    a = claim(ledger)
    scheduler.release(ledger, a.job, 2.0)
    b = claim(ledger, now=3.0)
    assert covered(b.files) == [(0, 600)] and b.files[0].attempts == 0
    scheduler.fail(ledger, b.job, "no space", 4.0, POLICY, count_attempt=False)
    c = claim(ledger, now=5.0)
    assert covered(c.files) == [(0, 600)] and c.files[0].attempts == 0


def test_a_file_of_unknown_reads_or_below_the_size_goes_whole(tmp_path: Path) -> None:
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile("u.pod5", 500 * MB), NewFile("s.pod5", 50 * MB, reads=9)], now=0.0)
    a = claim(db)
    assert [(f.path, f.part) for f in a.files] == [("u.pod5", None)]
    b = claim(db)
    assert [(f.path, f.part) for f in b.files] == [("s.pod5", None)]


def test_slicing_off_hands_large_files_out_whole(ledger: Ledger) -> None:
    a = scheduler.claim(
        ledger, "e1", None, 1.0, Policy(max_batch=50), "v1", speed=FAST, slices=True
    )
    assert a is not None and a.files[0].path == "big.pod5" and a.files[0].part is None


def test_the_last_part_of_a_file_is_never_a_sliver(ledger: Ledger) -> None:
    pieces = [claim(ledger, f"e{i}", now=1.0).files[0] for i in range(4)]
    # 600 x 4 taken, the last 600 reads (60 MB) go as one slice
    last = claim(ledger, "e9", speed=Speed(1.0, 1.5 * MB)).files[0]
    assert covered([*pieces, last]) == [
        (0, 600),
        (600, 1200),
        (1200, 1800),
        (1800, 2400),
        (2400, 3000),
    ]
    # a tiny budget still gets a quarter of --slice-above (25 MB: 250 reads), and a rest
    # smaller than that goes with it
    assert slicing.slice_reads(last, 1.0, PROBE_LEAST) == 250
    rest = replace(last, size=30 * MB, part=Part(2700, 300, 3000))
    assert slicing.slice_reads(rest, 1.0, PROBE_LEAST) == 300
    # a budget that would leave a sliver: all of the slice, or all but the least slice,
    # whichever is nearer (taken whole past its budget, a tail part would end last)
    assert slicing.slice_reads(last, 40 * MB, PROBE_LEAST) == 350
    assert slicing.slice_reads(last, 55 * MB, PROBE_LEAST) == 600


def test_a_slice_is_never_mixed_with_whole_files_and_queued_slices_come_first(
    ledger: Ledger,
) -> None:
    claim(ledger)
    a = claim(ledger, speed=Speed(1.0, 100 * MB))  # a huge budget: still one slice
    assert len(a.files) == 1 and a.files[0].path == "big.pod5"
    assert covered(a.files) == [(600, 3000)]


def test_a_backfill_generation_slices_its_large_files_as_the_live_one(ledger: Ledger) -> None:
    ledger.add_generation(implicit(), 0.0)
    sup = ledger.add_generation(make("sup", "dna_r10.4.1_e8.2_400bps_sup@v5.0.0"), 0.5)
    live = claim(ledger, gens=[0])
    assert live.files[0].gen == 0 and covered(live.files) == [(0, 600)]
    later = claim(ledger, gens=[sup.id])
    assert later.files[0].gen == sup.id and later.files[0].path == "big.pod5"
    assert covered(later.files) == [(0, 600)]  # its own slices, from its own first read
    assert ledger.get_file("big.pod5", sup.id).reads == 3000


def test_slices_begun_go_on_after_a_restart_with_slicing_off(ledger: Ledger) -> None:
    first = claim(ledger)
    scheduler.release(ledger, first.job, 2.0)
    off = Policy(lease_s=10.0, default_batch=4, max_batch=50, slice_above=0)
    again = scheduler.claim(ledger, "e1", None, 3.0, off, "v1", speed=FAST, slices=True)
    assert again is not None and again.files[0].path == "big.pod5"
    assert again.files[0].part is not None  # never the whole file: part of it is out
    old = scheduler.claim(ledger, "old", 4, 3.0, off, "v1", speed=FAST)
    assert "big.pod5" not in [f.path for f in old.files]


def test_engines_not_measured_cut_a_file_into_a_multiple_of_the_fleet_not_one_more() -> None:
    """Eight idle engines never measured: probes are small, the least slice binds (a
    quarter of --slice-above), and the file holds nine such slices; it is cut in eight
    equal ones instead, so no engine gets a second round alone."""
    piece = FileRow(1, "big.pod5", 240 * MB, FileState.QUEUED, 0, None, 240, None, None)
    piece = replace(piece, part=Part(0, 240, 240))
    least = POLICY.slice_above * slicing.MIN_SLICE_SHARE  # 25 MB: 25 reads
    assert slicing.slice_reads(piece, 1 * MB, PROBE_LEAST, engines=1) == 27  # 9 even
    assert slicing.slice_reads(piece, 1 * MB, PROBE_LEAST, engines=8) == 30
    taken, left = [], piece
    while left.part.count:
        n = slicing.slice_reads(left, 1 * MB, PROBE_LEAST, engines=8)
        taken.append(n)
        rest = Part(left.part.first + n, left.part.count - n, 240)
        left = replace(left, size=rest.count * MB, part=rest)
    assert taken == [30] * 8 and least == 25 * MB
    # a measured engine's budget above the least is not evened out
    assert slicing.slice_reads(piece, 40 * MB, PROBE_LEAST, engines=8) == 40


def test_a_slow_engine_gets_its_tail_part_of_a_files_last_reads_not_a_probes_least(
    tmp_path: Path,
) -> None:
    """The last 30 reads of a file, a slow engine and a fast one both idle: the slow one
    gets its equal-finish part (6 reads), not a quarter of --slice-above (25 reads, and the
    5 left after them too: 120 s of a slow GPU while the fast one would end in 30)."""
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile("big.pod5", 150 * MB, reads=150)], now=0.0)
    for k in range(2):
        claim(db, f"e{k}", fleet=scheduler.Fleet.of({f"e{k}": FAST}, 1.0))
    slow = Speed(startup_s=0.5, bytes_per_s=0.25 * MB)
    fleet = scheduler.Fleet.of({"slow": slow, "fast": FAST}, 2.0)
    got = claim(db, "slow", now=2.0, speed=slow, fleet=fleet)
    assert got.files[0].part == Part(120, 6, 150)
    assert [p.part.count for p in db.queued_slices()] == [24]


def test_a_files_last_read_waits_for_a_fast_engine_freeing_up_rather_than_go_to_a_slow_one(
    tmp_path: Path,
) -> None:
    """The last read of a run (1 MB) is asked for by a slow GPU (2.5 s for it, start-up
    included) while one forty times as fast ends its batch in 0.3 s (by 1.1 s): a read is
    not cut, so the slow one gets nothing; once the fast one's batch is predicted over and
    it has not asked (late, or gone), the slow one takes it."""
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile("big.pod5", 121 * MB, reads=121)], now=0.0)
    for k in range(2):  # alone: steady batches of 60 reads
        claim(db, f"e{k}", fleet=scheduler.Fleet.of({f"e{k}": FAST}, 1.0))
    assert [p.part.count for p in db.queued_slices()] == [1]
    slow = Speed(startup_s=0.5, bytes_per_s=0.5 * MB)
    fast = Speed(startup_s=0.5, bytes_per_s=20 * MB, busy_s=0.3)
    fleet = scheduler.Fleet.of({"slow": slow, "fast": fast}, 2.0)
    kw = {"speed": slow, "fleet": fleet, "slices": True}
    assert scheduler.claim(db, "slow", None, 2.0, POLICY, "v1", **kw) is None
    assert [p.part.count for p in db.queued_slices()] == [1]
    got = scheduler.claim(db, "slow", None, 2.35, POLICY, "v1", **kw)
    assert got is not None and got.files[0].part == Part(120, 1, 121)


def test_a_tail_part_is_cut_from_a_file_that_holds_it_not_from_a_shorter_rest(
    tmp_path: Path,
) -> None:
    """Near the end an engine's part is cut where it fits whole: from the next large file
    rather than from the 30 reads left of another (a part cut short at a file's end takes
    its engine one batch and one start-up more). Outside the tail the oldest goes first,
    so that the last reads of a file are not passed over while new files keep coming."""
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile(f"{n}.pod5", 150 * MB, reads=150) for n in "ab"], now=0.0)
    for k in range(2):  # alone: steady batches of 60 MB
        claim(db, f"e{k}", fleet=scheduler.Fleet.of({f"e{k}": FAST}, 1.0))
    assert [(p.path, p.part.count) for p in db.queued_slices()] == [("a.pod5", 30)]
    four = scheduler.Fleet.of({f"e{k}": FAST for k in range(4)}, 2.0)
    tail = claim(db, "e2", now=2.0, fleet=four).files[0]  # its part: 45 MB
    assert (tail.path, tail.part) == ("b.pod5", Part(0, 45, 150))
    steady = claim(db, "e3", now=2.0, fleet=scheduler.Fleet.of({"e3": FAST}, 2.0)).files[0]
    assert (steady.path, steady.part) == ("a.pod5", Part(120, 30, 150))


def _file_of_long_then_short_reads(tmp_path: Path) -> Ledger:
    """A 100 MB file of 100 reads: the first 20 ten times as long as the other 80."""
    from bcmanager.ledger.rows import read_sizes_blob

    lengths = [10_000] * 20 + [1_000] * 80  # 280,000 samples: the first 20 hold 200,000
    db = Ledger(tmp_path / "w.sqlite3")
    db.add_files(
        [
            NewFile(
                "long-first.pod5",
                280 * MB,
                reads=100,
                samples=sum(lengths),
                read_samples=read_sizes_blob(lengths),
            )
        ],
        now=0.0,
    )
    return db


def test_a_slice_is_sized_by_its_reads_lengths_where_the_ledger_has_them(tmp_path: Path) -> None:
    db = _file_of_long_then_short_reads(tmp_path)
    # 60 MB of a 280 MB file: 6 of the long reads (6 x 10,000 of 280,000 samples), not
    # the 22 reads an even share per read would give
    first = claim(db)
    (piece,) = first.files
    assert (piece.part.first, piece.part.count) == (0, 6)
    assert piece.size == 60 * MB
    # what is left is sized by its own reads: 14 long and 80 short ones
    (rest,) = db.queued_slices()
    assert (rest.part.first, rest.part.count) == (6, 94)
    assert rest.size == 220 * MB
    # across the last long reads: 2 long and 40 short ones
    for engine in ("e2", "e3"):
        claim(db, engine)
    (fourth,) = claim(db, "e4").files
    assert (fourth.part.first, fourth.part.count, fourth.size) == (18, 42, 60 * MB)


def test_read_sizes_of_another_read_count_are_not_used(tmp_path: Path) -> None:
    from bcmanager.ledger.rows import read_sizes_blob

    db = Ledger(tmp_path / "w.sqlite3")
    sizes = read_sizes_blob([10_000] * 20 + [1_000] * 80)
    db.add_files([NewFile("f.pod5", 300 * MB, reads=3000, read_samples=sizes)], now=0.0)
    (piece,) = claim(db).files
    assert (piece.part.count, piece.size) == (600, 60 * MB)  # an even share per read


def test_the_intake_learns_each_reads_samples_of_a_large_file(tmp_path: Path) -> None:
    import numpy as np
    import pod5

    from bcmanager.ledger.rows import cumulative_samples
    from bcmanager.pod5io import write_pod5
    from bcmanager.readlists import with_read_counts

    write_pod5(tmp_path / "large.pod5", n_reads=30, samples=4000, seed=7)
    write_pod5(tmp_path / "small.pod5", n_reads=3, samples=4000, seed=8)
    found = [
        NewFile(p.name, p.stat().st_size)
        for p in (tmp_path / "large.pod5", tmp_path / "small.pod5")
    ]
    above = (tmp_path / "small.pod5").stat().st_size + 1
    large, small = with_read_counts(tmp_path, found, above)
    with pod5.Reader(tmp_path / "large.pod5") as reader:
        truth = [r.num_samples for r in reader.reads()]
    assert large.reads == 30 and large.samples == sum(truth)
    assert list(np.diff(cumulative_samples(large.read_samples))) == truth
    assert len(set(truth)) > 1  # reads of different lengths: the test means something
    assert small.reads is None and small.read_samples is None
