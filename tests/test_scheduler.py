from dataclasses import replace
from pathlib import Path

import pytest

from bcmanager import scheduler
from bcmanager.errors import InvalidInput, LeaseLost
from bcmanager.ledger import Ledger, NewFile
from bcmanager.roster import Roster
from bcmanager.scheduler import BatchLimit, Fleet, Mark, Policy, Speed
from bcmanager.states import FileState, JobState

POLICY = Policy(lease_s=10.0, default_batch=2, max_batch=5, max_attempts=2)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile(f"f{i}.pod5", 10) for i in range(6)], now=0.0)
    return db


def test_claims_hand_out_the_oldest_files_and_never_one_file_twice(ledger: Ledger) -> None:
    first = scheduler.claim(ledger, "e1", 0, 1.0, POLICY, "v1")
    second = scheduler.claim(ledger, "e2", 3, 1.0, POLICY, "v1")
    assert [f.path for f in first.files] == ["f0.pod5", "f1.pod5"]  # 0 means the default (2)
    assert [f.path for f in second.files] == ["f2.pod5", "f3.pod5", "f4.pod5"]
    third = scheduler.claim(ledger, "e3", -7, 1.0, POLICY, "legacy")
    assert [f.path for f in third.files] == ["f5.pod5"]
    assert scheduler.claim(ledger, "e1", 2, 1.0, POLICY, "v1") is None


def test_a_batch_over_the_maximum_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput):
        scheduler.claim(ledger, "e1", 6, 1.0, POLICY, "v1")
    assert ledger.file_counts()[FileState.QUEUED] == 6
    assert ledger.job_counts()[JobState.ASSIGNED] == 0


def test_an_overdue_lease_expires_and_its_files_go_back_with_an_attempt(ledger: Ledger) -> None:
    a = scheduler.claim(ledger, "e1", 2, now=100.0, policy=POLICY, api="v1")
    scheduler.renew(ledger, a.job, now=108.0)  # lease now runs to 118
    assert scheduler.expire_overdue(ledger, now=117.0, policy=POLICY) == []
    expired = scheduler.expire_overdue(ledger, now=118.5, policy=POLICY)
    assert [job.id for job, _ in expired] == [a.job.id]
    rows = ledger.files_by_paths(["f0.pod5", "f1.pod5"])
    assert all(r.state is FileState.QUEUED and r.attempts == 1 for r in rows)
    with pytest.raises(LeaseLost):
        scheduler.renew(ledger, scheduler.get_job(ledger, a.job.id), now=119.0)
    again = scheduler.claim(ledger, "e2", 2, now=120.0, policy=POLICY, api="v1")
    assert [f.path for f in again.files] == ["f0.pod5"]  # a retried file goes out alone
    assert [f.state for f in ledger.files_of_job(a.job.id)] == [FileState.QUEUED]  # f1 waits


def test_a_file_failing_max_attempts_times_is_quarantined_with_the_reason(ledger: Ledger) -> None:
    for attempt in range(POLICY.max_attempts):
        a = scheduler.claim(ledger, "e1", 1, float(attempt), POLICY, "v1")
        assert a.files[0].path == "f0.pod5"
        poisoned = scheduler.fail(ledger, a.job, "exit code 1", float(attempt), POLICY)
    assert [f.path for f in poisoned] == ["f0.pod5"]
    row = ledger.get_file("f0.pod5")
    assert row.state is FileState.QUARANTINED
    assert "2 attempts" in row.reason and "exit code 1" in row.reason
    nxt = scheduler.claim(ledger, "e1", 1, 5.0, POLICY, "v1")
    assert nxt.files[0].path == "f1.pod5"


def test_a_released_batch_costs_no_attempt(ledger: Ledger) -> None:
    a = scheduler.claim(ledger, "e1", 2, 1.0, POLICY, "v1")
    scheduler.release(ledger, a.job, 2.0)
    assert all(
        r.attempts == 0 and r.state is FileState.QUEUED
        for r in ledger.files_by_paths(["f0.pod5", "f1.pod5"])
    )
    assert scheduler.get_job(ledger, a.job.id).state is JobState.RELEASED


def test_a_stale_token_is_refused_but_legacy_calls_carry_none(ledger: Ledger) -> None:
    a = scheduler.claim(ledger, "e1", 1, 1.0, POLICY, "v1")
    scheduler.check_token(a.job, a.job.token)
    scheduler.check_token(a.job, None)
    with pytest.raises(LeaseLost):
        scheduler.check_token(a.job, "0" * 32)


def test_merge_is_journaled_then_finished(ledger: Ledger) -> None:
    a = scheduler.claim(ledger, "e1", 2, 1.0, POLICY, "v1")
    scheduler.begin_merge(ledger, a.job, {"outputs": []}, 2.0)
    job = scheduler.get_job(ledger, a.job.id)
    assert job.state is JobState.MERGING and job.merge_plan
    assert scheduler.expire_overdue(ledger, 1000.0, POLICY) == []  # a merging job never expires
    scheduler.finish_merge(ledger, job, 3.0)
    assert ledger.file_counts()[FileState.DONE] == 2


def test_with_nothing_measured_a_first_batch_is_the_default_batch_at_most() -> None:
    policy = Policy(default_batch=10, max_batch=500, target_batch_s=60)
    limit = scheduler.batch_limit
    unknown = Speed()
    one, eight = Fleet.of([unknown]), Fleet.of([unknown] * 8)
    assert limit(None, unknown, one, 20, 2e7, policy, "e") == BatchLimit(10, 5e6, 10)
    assert limit(40, unknown, one, 100, 1e8, policy, "e") == BatchLimit(40, 2.5e7, 40)
    assert limit(None, unknown, eight, 20, 2e7, policy, "e").least == 3  # an even part
    assert limit(None, unknown, one, 100_000, 1e11, policy, "e").files == 10  # a big backlog
    with pytest.raises(InvalidInput):
        limit(501, unknown, one, 1000, 1e9, policy, "e")


def test_the_first_engine_to_claim_a_backlog_gets_a_probe_not_a_quarter_of_it(
    tmp_path: Path,
) -> None:
    """Engines arrive one by one (Slurm starts them as nodes come free): the first to claim
    a backlog sees a fleet of one. It gets a probe, so that a slow GPU cannot hold the tail
    while the engines that arrive after it run dry (issue 23: it got 100 of 400 files)."""
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile(f"f{i:03d}.pod5", 1000) for i in range(400)], now=0.0)
    policy = Policy(default_batch=10, max_batch=10_000)
    sizes = []
    for k in range(4):  # each arrives before the others' speeds are known
        fleet = Fleet.of({f"gpu{j}": Speed() for j in range(k + 1)}, at=0.0)
        a = scheduler.claim(db, f"gpu{k}", None, 0.1 * k, policy, "v1", Speed(), fleet)
        sizes.append(len(a.files))
    assert sizes == [10, 10, 10, 10]


def test_beside_measured_engines_a_new_engine_gets_a_part_of_a_typical_batch() -> None:
    """An engine arriving at a fleet that knows its speeds gets a probe sized in bytes from
    the fleet's median start-up and rate, over PROBE_SPLIT: if it is that many times slower
    than the typical engine, it still ends its first batch as the others end theirs."""
    policy = Policy(default_batch=10, max_batch=10_000, target_batch_s=60)
    speeds = {
        "v100": Speed(2.0, 1e6, busy_s=30.0),
        "a100": Speed(4.0, 3e6, busy_s=30.0),
        "h100": Speed(3.0, 2e6, busy_s=30.0),
        "new": Speed(),
    }
    fleet = Fleet.of(speeds, at=0.0)
    assert fleet.typical == Speed(3.0, 2e6)
    split = scheduler.PROBE_SPLIT
    limit = scheduler.batch_limit(None, Speed(), fleet, 100_000, 1e12, policy, "new")
    assert limit.bytes == pytest.approx(scheduler.steady_bytes(fleet.typical, policy) / split)
    near_end = scheduler.batch_limit(None, Speed(), fleet, 100, 1e8, policy, "new")
    typical_part = scheduler.tail_bytes(Speed(3.0, 2e6), fleet, 1e8, "new")
    assert near_end.bytes == pytest.approx(typical_part / split)
    # a GPU PROBE_SPLIT times slower than typical ends it within the typical part's time
    slow = Speed(3.0, 2e6 / split)
    assert slow.batch_s(near_end.bytes) <= Speed(3.0, 2e6).batch_s(typical_part) + 1e-9


def test_a_steady_batch_makes_start_up_at_most_1_percent_of_it() -> None:
    policy = Policy(target_batch_s=60)
    quick = Speed(startup_s=0.5, bytes_per_s=1e6)
    assert scheduler.steady_bytes(quick, policy) == 60e6  # the target: start-up is small
    slow_start = Speed(startup_s=10.0, bytes_per_s=1e6)
    budget = scheduler.steady_bytes(slow_start, policy)
    assert slow_start.startup_s / slow_start.batch_s(budget) == pytest.approx(0.01)


def test_the_tail_is_shared_so_that_every_engine_finishes_together() -> None:
    a100, v100 = Speed(10.0, 3e6), Speed(10.0, 1e6)
    engines = {"a": a100, "b": v100, "c": a100, "d": v100}
    fleet, left = Fleet.of(engines), 80e6
    parts = {name: scheduler.tail_bytes(e, fleet, left, name) for name, e in engines.items()}
    assert sum(parts.values()) == pytest.approx(left)
    finish = [e.batch_s(parts[name]) for name, e in engines.items()]
    assert max(finish) - min(finish) < 1e-6  # equal predicted finish
    assert parts["a"] == pytest.approx(3 * parts["b"])  # a slow GPU gets less
    limit = scheduler.batch_limit(None, a100, fleet, 400, left, Policy(target_batch_s=600), "a")
    assert limit.bytes == pytest.approx(parts["a"])  # near the end the tail part wins


def test_the_tail_is_shared_so_that_every_engines_last_batch_is_filed_together() -> None:
    """A run ends when the last batch's output is filed and merged, not when its last read
    is basecalled: an engine that files more slowly (fewer cores, a larger batch) stops
    basecalling a little earlier, so that its result comes in with the others'."""
    quick = Speed(5.0, 2e6)
    slow_filer = Speed(5.0, 2e6, filing_s_per_byte=1 / 8e6)  # 8 MB filed per second
    engines = {"quick": quick, "slow_filer": slow_filer}
    fleet, left = Fleet.of(engines), 100e6
    parts = {name: scheduler.tail_bytes(e, fleet, left, name) for name, e in engines.items()}
    assert sum(parts.values()) == pytest.approx(left)
    assert parts["slow_filer"] < parts["quick"]
    filed = {
        name: e.batch_s(parts[name]) + parts[name] * e.filing_s_per_byte
        for name, e in engines.items()
    }
    assert filed["quick"] == pytest.approx(filed["slow_filer"])  # results together
    # a steady batch is its GPU time alone: filing runs beside the next batch
    policy = Policy(target_batch_s=60)
    assert scheduler.steady_bytes(slow_filer, policy) == scheduler.steady_bytes(quick, policy)


def test_a_byte_budget_takes_the_oldest_files_up_to_it(ledger: Ledger) -> None:
    files = ledger.queued_files(10)
    sizes = [f.size for f in files]
    taken = scheduler.take_bytes(files, sizes[0] + sizes[1] + 0.4 * sizes[2])
    assert [f.path for f in taken] == [f.path for f in files[:2]]
    nearer = scheduler.take_bytes(files, sizes[0] + sizes[1] + 0.6 * sizes[2])
    assert [f.path for f in nearer] == [f.path for f in files[:3]]  # the nearest whole file
    assert len(scheduler.take_bytes(files, 1)) == 1  # at least one file, however large
    assert len(scheduler.take_bytes(files, 1, least=4)) == 4


def test_a_poison_file_does_not_sink_its_batch_mates(ledger: Ledger) -> None:
    both = scheduler.claim(ledger, "e1", 2, 1.0, POLICY, "v1")  # f0 (poison) and f1
    assert scheduler.fail(ledger, both.job, "exit code 1", 2.0, POLICY) == []
    for _ in range(POLICY.max_attempts):
        solo = scheduler.claim(ledger, "e1", 5, 3.0, POLICY, "v1")
        assert len(solo.files) == 1  # a retried file goes out alone
        if solo.files[0].path == "f0.pod5":
            scheduler.fail(ledger, solo.job, "exit code 1", 4.0, POLICY)
        else:
            scheduler.begin_merge(ledger, solo.job, {}, 4.0)
            scheduler.finish_merge(ledger, scheduler.get_job(ledger, solo.job.id), 4.0)
    assert ledger.get_file("f0.pod5").state is FileState.QUARANTINED
    assert ledger.get_file("f1.pod5").state is FileState.DONE


def test_a_non_ascii_token_is_a_lost_lease_not_a_crash(ledger: Ledger) -> None:
    job = scheduler.claim(ledger, "e1", None, 0.0, POLICY, "v1").job
    with pytest.raises(LeaseLost):
        scheduler.check_token(job, "tökén")  # compare_digest on such a str raises TypeError


def test_an_engine_still_busy_with_a_batch_leaves_more_of_the_tail_to_the_others() -> None:
    idle, busy = Speed(2.0, 1e6), Speed(2.0, 1e6, busy_s=30.0)
    part = scheduler.tail_bytes(idle, Fleet.of({"idle": idle, "busy": busy}), 40e6, "idle")
    assert part == pytest.approx(35e6)  # the busy one ends its batch, then takes 5e6
    assert idle.batch_s(part) == pytest.approx(busy.busy_s + busy.batch_s(40e6 - part))


def test_an_engine_busy_past_the_common_finish_takes_no_part_of_the_tail() -> None:
    idle, stuck = Speed(1.0, 1e6), Speed(1.0, 1e6, busy_s=500.0)
    fleet = Fleet.of({"idle": idle, "stuck": stuck})
    assert scheduler.tail_bytes(idle, fleet, 10e6, "idle") == pytest.approx(10e6)


def test_the_last_reads_are_shared_with_fast_engines_freeing_up_not_left_to_a_slow_one() -> None:
    """A slow engine asks for the last 4 MB a moment before two fast ones (twice its
    rate) end their batches. A fast one's part would not be worth its start-up, but
    without any of them the slow GPU basecalls all 4 MB alone and ends 1.2 s after it
    need: it takes its equal-finish share, and a fast one takes the rest as it frees up."""
    slow, fast = Speed(1.0, 2e6), Speed(1.0, 4e6, busy_s=0.2)
    fleet = Fleet.of({"slow": slow, "fast1": fast, "fast2": fast})
    left = 4e6
    part = scheduler.tail_bytes(slow, fleet, left, "slow")
    assert part == pytest.approx(2e6 * (1.8 - 1.0))  # F = (4 + 2 x 1 + 4 x 1.2) / 6
    finish = slow.batch_s(part)
    assert fast.busy_s + fast.batch_s(left - part) == pytest.approx(finish)
    assert finish == pytest.approx(slow.batch_s(left) - 1.2)
    # a last MB worth half a start-up is not cut for engines idle beside the claimer
    idle = {f"idle{k}": slow for k in range(3)}
    assert scheduler.tail_bytes(slow, Fleet.of({"slow": slow, **idle}), 1e6, "slow") == 1e6


def test_the_last_file_waits_for_a_fast_engine_freeing_up_rather_than_go_to_a_slow_one(
    tmp_path: Path,
) -> None:
    """A slow GPU asks while the last file of a run is queued and a GPU three times as
    fast ends its batch in 0.4 s: a file is not cut, so whoever takes it basecalls it
    alone (the slow one in 5 s, the fast one by 2.7 s). The slow one gets nothing; once
    the fast one's batch is predicted over and it has not asked (late, or gone), the slow
    one takes the file; beside an engine barely faster, it takes it at once."""
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile("last.pod5", 4_000_000 + scheduler.POD5_FIXED_BYTES)], now=0.0)
    slow, fast = Speed(1.0, 1e6), Speed(1.0, 3e6, busy_s=0.4)
    fleet = Fleet.of({"slow": slow, "fast": fast}, at=10.0)
    policy = Policy(max_batch=100, target_batch_s=60.0)
    assert scheduler.claim(db, "slow", None, 10.0, policy, "v1", slow, fleet) is None
    assert db.file_counts()[FileState.QUEUED] == 1
    assert scheduler.claim(db, "slow", None, 10.3, policy, "v1", slow, fleet) is None
    late = scheduler.claim(db, "slow", None, 10.5, policy, "v1", slow, fleet)
    assert late is not None and [f.path for f in late.files] == ["last.pod5"]
    db.add_files([NewFile("next.pod5", 4_000_000 + scheduler.POD5_FIXED_BYTES)], now=11.0)
    barely = Fleet.of({"slow": slow, "fast": replace(fast, bytes_per_s=1.2e6)}, at=11.0)
    taken = scheduler.claim(db, "slow", None, 11.0, policy, "v1", slow, barely)
    assert taken is not None and [f.path for f in taken.files] == ["next.pod5"]


def test_the_ledger_knows_the_queued_bytes_through_every_move(ledger: Ledger) -> None:
    def truth() -> int:
        return sum(f.size for f in ledger.files_in_state(FileState.QUEUED, 1000))

    ledger.add_files([NewFile(f"g{i}.pod5", 100 + 37 * i) for i in range(5)], now=0.5)
    assert ledger.queued_bytes() == truth() > 0
    a = scheduler.claim(ledger, "e1", 2, 1.0, POLICY, "v1")
    assert ledger.queued_bytes() == truth()
    scheduler.fail(ledger, a.job, "exit 1", 2.0, POLICY)  # back to the queue
    assert ledger.queued_bytes() == truth()
    b = scheduler.claim(ledger, "e1", 1, 3.0, POLICY, "v1")
    scheduler.release(ledger, b.job, 4.0)
    c = scheduler.claim(ledger, "e2", 2, 5.0, POLICY, "v1")
    scheduler.begin_merge(ledger, c.job, {"outputs": []}, 6.0)
    scheduler.finish_merge(ledger, ledger.get_job(c.job.id), 7.0)
    assert ledger.queued_bytes() == truth()
    reopened = Ledger(ledger.path)
    assert reopened.queued_bytes() == truth()


def run_backlog(
    ledger: Ledger, speeds: dict[str, Speed], policy: Policy
) -> dict[str, list[tuple[float, float, float]]]:
    """Engines of exactly known speeds take a backlog, each claiming as soon as it is free
    (with the fleet as it is then): each engine's batches as (start, end, bytes)."""
    free = dict.fromkeys(speeds, 0.0)
    batches: dict[str, list[tuple[float, float, float]]] = {name: [] for name in speeds}
    while free:
        name = min(free, key=lambda n: (free[n], n))
        now = free[name]
        fleet = Fleet.of(
            {n: replace(s, busy_s=max(0.0, free.get(n, now) - now)) for n, s in speeds.items()},
            at=now,
        )
        got = scheduler.claim(ledger, name, None, now, policy, "v1", speeds[name], fleet)
        if got is None:
            del free[name]
            continue
        size = sum(f.size for f in got.files)
        free[name] = now + speeds[name].batch_s(size)
        batches[name].append((now, free[name], size))
    return batches


def test_a_backlog_ends_in_one_tail_batch_per_engine_all_finishing_together(
    tmp_path: Path,
) -> None:
    """Engines of mixed speeds whose speeds are known: every engine ends with one tail
    batch, no batch is too small to be worth its start-up, and all end within a file of
    each other (parts are whole files: the nearest, so nothing is left over for a batch
    of its own)."""
    db = Ledger(tmp_path / "l.sqlite3")
    sizes = [80_000, 135_000, 260_000]  # interleaved, as a run's files come
    db.add_files([NewFile(f"f{i:04d}.pod5", sizes[i % 3]) for i in range(6000)], now=0.0)
    speeds = {f"gpu{k}": Speed(1.0, f * 1e6) for k, f in enumerate((1.0, 1.5, 2.0, 3.0))}
    policy = Policy(max_batch=10_000, target_batch_s=6.0)
    batches = run_backlog(db, speeds, policy)
    assert db.file_counts()[FileState.QUEUED] == 0
    for name, mine in batches.items():
        assert len(mine) <= 2, (name, mine)  # a steady batch, then its part of the tail
        for _, _, size in mine:
            assert size / speeds[name].bytes_per_s >= speeds[name].startup_s, (name, mine)
    ends = [mine[-1][1] for mine in batches.values()]
    assert max(ends) - min(ends) <= max(sizes) / 1e6, ends


def test_claims_within_the_second_the_fleet_was_seen_share_the_tail_as_it_is_then(
    tmp_path: Path,
) -> None:
    """The manager sums the fleet at most every second; an engine that claims puts its
    new batch in (`with_engine`), so the next claim in that second does not take it for
    idle and leave part of the tail over."""
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile(f"f{i:03d}.pod5", 100_000) for i in range(200)], now=0.0)
    speeds = {"a": Speed(1.0, 1e6), "b": Speed(1.0, 1e6)}
    policy = Policy(max_batch=10_000, target_batch_s=600.0)
    fleet = Fleet.of(speeds, at=10.0)
    first = scheduler.claim(db, "a", None, 10.2, policy, "v1", speeds["a"], fleet)
    busy = speeds["a"].batch_s(sum(f.size for f in first.files))
    fleet = fleet.with_engine("a", replace(speeds["a"], busy_s=busy), 10.2)
    second = scheduler.claim(db, "b", None, 10.5, policy, "v1", speeds["b"], fleet)
    assert len(first.files) == len(second.files) == 100
    assert db.file_counts()[FileState.QUEUED] == 0


def test_an_engine_that_claims_replaces_its_entry_as_a_fresh_count_would() -> None:
    speeds = {
        "a": Speed(1.0, 1e6, busy_s=5.0),
        "b": Speed(2.0, 3e6),
        "c": Speed(1.5, 2e6, busy_s=40.0),
    }
    seen = Fleet.of(speeds, at=100.0)
    claimed = seen.with_engine("b", Speed(2.0, 3e6, busy_s=30.0), now=100.4)
    fresh = Fleet.of({**speeds, "b": Speed(2.0, 3e6, busy_s=30.4)}, at=100.0)
    assert [e.name for e in claimed.rates] == [e.name for e in fresh.rates]
    for mine, theirs in zip(claimed.rates, fresh.rates, strict=True):
        assert mine._replace(key=0, t=0) == theirs._replace(key=0, t=0)
        assert (mine.key, mine.t) == pytest.approx((theirs.key, theirs.t))
    assert claimed.index["b"] == claimed.rates[1]
    assert claimed.total_rate == pytest.approx(fresh.total_rate)
    assert claimed.weighted == pytest.approx(fresh.weighted)
    assert claimed.busy_rate == pytest.approx(fresh.busy_rate)


def test_an_engine_still_on_its_first_batch_counts_as_fast_unless_it_would_be_done() -> None:
    """An engine at its first batch that has said nothing of its progress: taken to be as
    fast as the fastest measured (it may have just arrived: taken to be slow, a claimer's
    part would run past everyone's), but no faster than would have it done by now
    (engines started together end their first batches fastest first)."""
    fast, slow = Speed(1.0, 3e6), Speed(1.0, 1e6)
    first = Speed(held_bytes=60e6, held_s=10.0)  # 1 + 60e6 / 3e6 = 21 s at the fast rate
    fleet = Fleet.of({"fast": fast, "slow": slow, "first": first}, at=0.0)
    assert fleet.index["first"].rate == pytest.approx(3e6)  # the fastest, not the slowest
    assert fleet.index["first"].t == pytest.approx(21.0 - 10.0 + 1.0)  # busy 11 s more
    part = scheduler.tail_bytes(slow, fleet, 60e6, "slow")
    alone = scheduler.tail_bytes(slow, Fleet.of({"slow": slow, "fast": fast}), 60e6, "slow")
    assert part < alone  # the newcomer takes a share of what is left
    late = Speed(held_bytes=60e6, held_s=50.0)  # would have ended by now at 3e6: slower
    guessed = Fleet.of({"fast": fast, "first": late}, at=0.0).index["first"]
    assert guessed.rate == pytest.approx(60e6 / 49.0) and not guessed.busy


def test_an_engine_at_its_first_batch_is_known_by_its_progress() -> None:
    """Its output between two heartbeats over the output a pod5 byte makes is what it has
    basecalled between them: a rate, and how long its batch still takes. Not before that
    ratio is learnt, nor from one heartbeat alone (the first output comes a block of reads
    after basecalling began), nor from a first second."""
    ratio = 0.25  # output bytes per pod5 byte
    first = Mark(1e6, 2.0)
    seen = scheduler.speed_from_progress(60e6, 1.0, 10.0, 5e6, ratio, 2.0, first_output=first)
    assert seen is not None
    assert seen.bytes_per_s == pytest.approx(2e6)  # 16e6 pod5 bytes in 8 s
    assert seen.busy_s == pytest.approx((60e6 - 20e6 - 2 * 2e6) / 2e6)
    assert seen.startup_s == 1.0
    assert scheduler.speed_from_progress(60e6, 1.0, 10.0, 5e6, None, first_output=first) is None
    assert scheduler.speed_from_progress(60e6, 1.0, 0.5, 5e6, ratio, first_output=first) is None
    assert scheduler.speed_from_progress(60e6, 1.0, 10.0, 5e6, ratio) is None  # one heartbeat
    assert scheduler.speed_from_progress(60e6, 1.0, 10.0, 1e6, ratio, first_output=first) is None
    over = scheduler.speed_from_progress(60e6, 1.0, 10.0, 40e6, ratio, first_output=first)
    assert over is not None and over.busy_s == 0.0  # output over-counted: done


def run_from_nothing(
    ledger: Ledger, truth: dict[str, Speed], policy: Policy, progress: bool
) -> dict[str, list[float]]:
    """Engines of unknown speeds start on a backlog together, each claiming as soon as it
    is free: an engine's speed is known once it ends its first batch, and (with
    `progress`) from its progress mid-batch once any batch has taught the output ratio,
    as the manager sees it. Each engine's batch sizes in bytes."""
    ratio = 0.3
    free = dict.fromkeys(truth, 0.0)
    held: dict[str, tuple[float, float]] = {}  # name -> (claimed, bytes) of a first batch
    measured: dict[str, Speed] = {}
    sizes: dict[str, list[float]] = {name: [] for name in truth}
    while free:
        name = min(free, key=lambda n: (free[n], n))
        now = free[name]
        if name in held:
            measured[name] = truth[name]
            del held[name]
        speeds = {}
        for n, s in truth.items():
            if n in measured:
                speeds[n] = replace(measured[n], busy_s=max(0.0, free.get(n, now) - now))
            elif n in held:
                claimed, size = held[n]
                running = now - claimed - s.startup_s
                guess = None
                if progress and measured:
                    out = max(0.0, running) * (s.bytes_per_s or 0.0) * ratio
                    guess = scheduler.speed_from_progress(
                        size, s.startup_s, running, out, ratio, first_output=Mark(0.0, 0.0)
                    )
                speeds[n] = guess or Speed(held_bytes=size, held_s=now - claimed)
            else:
                speeds[n] = Speed()
        fleet = Fleet.of(speeds, at=now)
        got = scheduler.claim(ledger, name, None, now, policy, "v1", speeds[name], fleet)
        if got is None:
            del free[name]
            continue
        size = sum(f.size for f in got.files)
        if name not in measured:
            held[name] = (now, size)
        free[name] = now + truth[name].batch_s(size)
        sizes[name].append(size)
    return sizes


def test_with_progress_every_engine_basecalls_a_backlog_in_two_batches(tmp_path: Path) -> None:
    """Engines of mixed, unknown speeds: a probe each, then one part of the tail. Without
    progress a fast engine ends its probe while the slower ones have said nothing, takes
    them to be as fast as itself, and its second batch ends early: a third start-up.

    The probe (the default batch) lasts seconds here, as Dorado's default of 10 files of
    4,000 reads lasts minutes: longer than the MIN_PROGRESS_S progress needs."""
    truth = {f"gpu{k}": Speed(1.0, f * 1e6) for k, f in enumerate((1.0, 1.5, 2.0, 3.0))}
    policy = Policy(default_batch=40, max_batch=10_000, target_batch_s=6.0)
    counts = {}
    for progress in (False, True):
        db = Ledger(tmp_path / f"{progress}.sqlite3")
        sizes = [80_000, 135_000, 260_000]
        db.add_files([NewFile(f"f{i:04d}.pod5", sizes[i % 3]) for i in range(1200)], now=0.0)
        batches = run_from_nothing(db, truth, policy, progress)
        assert db.file_counts()[FileState.QUEUED] == 0
        counts[progress] = {name: len(b) for name, b in batches.items()}
    assert max(counts[False].values()) == 3, counts  # what progress mends
    assert set(counts[True].values()) == {2}, counts


def test_a_part_sized_beside_a_guessed_engine_is_cut_until_the_guess_is_measured() -> None:
    """An engine arrived a moment ago holds its probe and has said nothing of its speed:
    another's equal-finish part, sized on a guess of it, is cut (it comes back when the
    guess is a measure), so that a wrong guess cannot leave one GPU holding the tail."""
    policy = Policy(target_batch_s=6.0)
    fast = Speed(1.0, 2e6)
    newcomer = Speed(held_bytes=20e6, held_s=0.5)
    fleet = Fleet.of({"fast": fast, "new": newcomer}, at=0.0)
    assert fleet.guessed == {"new"}
    part = scheduler.tail_bytes(fast, fleet, 300e6, "fast")
    limit = scheduler.batch_limit(None, fast, fleet, 300, 300e6, policy, "fast")
    assert limit.bytes == pytest.approx(min(scheduler.steady_bytes(fast, policy), part) / 2)
    measured = Fleet.of({"fast": fast, "new": Speed(1.0, 3e6, busy_s=5.0)}, at=0.0)
    assert not measured.guessed
    full = scheduler.batch_limit(None, fast, measured, 300, 300e6, policy, "fast")
    assert full.bytes == pytest.approx(
        min(
            scheduler.steady_bytes(fast, policy),
            scheduler.tail_bytes(fast, measured, 300e6, "fast"),
        )
    )
    again = fleet.with_engine("new", Speed(1.0, 3e6), now=1.0)
    assert not again.guessed  # its speed measured: no longer a guess


def test_progress_by_reads_is_the_reads_filed_between_two_counts_over_the_time_between() -> None:
    """The share of its batch's reads an engine has filed gives its rate before any batch
    has ended (no output ratio needed, none of a small batch's headers in it). Output
    comes in blocks, so the count grows in steps: the rate is the reads filed between two
    counts over the time between them (when each was reached), not one count over the
    basecalling time, which reads fast or slow by a block; one count alone says nothing."""
    first = Mark(0.25, 4.0)
    since = scheduler.speed_from_progress(
        60e6, 1.0, 10.0, 0, None, share=Mark(0.5, 10.0), first=first
    )
    assert since is not None and since.bytes_per_s == pytest.approx(2.5e6)
    assert since.busy_s == pytest.approx(12.0)
    # the same count heard 3 s after it was reached: the same rate, 3 s less left
    stale = scheduler.speed_from_progress(
        60e6, 1.0, 13.0, 0, None, share=Mark(0.5, 10.0), first=first
    )
    assert stale is not None and stale.bytes_per_s == pytest.approx(2.5e6)
    assert stale.busy_s == pytest.approx(9.0)
    assert scheduler.speed_from_progress(60e6, 1.0, 10.0, 0, None, share=Mark(0.5, 10.0)) is None
    assert scheduler.speed_from_progress(60e6, 1.0, 10.0, 0, None, share=first, first=first) is None
    near = Mark(0.3, 4.5)  # less than MIN_PROGRESS_S after the first count
    assert scheduler.speed_from_progress(60e6, 1.0, 10.0, 0, None, share=near, first=first) is None
    assert scheduler.speed_from_progress(60e6, 1.0, 0.5, 0, None, share=Mark(0.1, 0.4)) is None


def test_of_reads_and_output_each_reads_low_and_the_faster_is_taken() -> None:
    """Filing lags the basecaller on a busy node (its reads count low); a ratio learnt from
    small batches is high with their headers (their output counts low): the faster. A
    few blocks of output between two heartbeats say nothing yet."""
    now, first, out = Mark(0.5, 10.0), Mark(0.25, 4.0), Mark(0.0, 4.0)
    by_reads = scheduler.speed_from_progress(60e6, 1.0, 10.0, 0, None, share=now, first=first)
    by_output = scheduler.speed_from_progress(60e6, 1.0, 10.0, 24e6, 1.0, first_output=out)
    both = scheduler.speed_from_progress(
        60e6, 1.0, 10.0, 24e6, 1.0, share=now, first=first, first_output=out
    )
    assert by_reads is not None and by_output is not None
    assert by_output.bytes_per_s == pytest.approx(4e6) and both == by_output
    slow = scheduler.speed_from_progress(
        60e6, 1.0, 10.0, 6e6, 1.0, share=now, first=first, first_output=out
    )
    assert slow == by_reads
    few = scheduler.MIN_PROGRESS_OUTPUT
    assert scheduler.speed_from_progress(60e6, 1.0, 10.0, few, 1.0, first_output=out) is None
    alone = scheduler.speed_from_progress(
        60e6, 1.0, 10.0, few, 1.0, share=now, first=first, first_output=out
    )
    assert alone == by_reads


def test_while_engines_keep_joining_a_tail_part_is_cut_until_the_fleet_is_whole() -> None:
    """Engines that join one by one (Slurm starting them as nodes come free): a part sized
    for the fleet as it is would end after the others' once the next engine joins, so it
    is cut (the engine comes back when more is known); engines started together, or the
    last of them long joined, are not arriving."""
    joined = [0.0, 15.6, 44.3, 54.6, 75.8, 103.6, 105.1]  # a mean gap of 17.5 s
    assert scheduler.still_arriving(joined, now=125.0)
    assert not scheduler.still_arriving(joined, now=141.0)
    assert not scheduler.still_arriving([0.0, 0.2, 0.3, 0.5], now=5.0)
    assert not scheduler.still_arriving([3.0], now=3.5)
    policy = Policy(target_batch_s=600.0)
    fast, other = Speed(1.0, 2e6), Speed(1.0, 3e6, busy_s=5.0)
    settled = Fleet.of({"fast": fast, "other": other}, at=0.0)
    growing = Fleet.of({"fast": fast, "other": other}, at=0.0, arriving=True)
    full = scheduler.batch_limit(None, fast, settled, 300, 300e6, policy, "fast")
    cut = scheduler.batch_limit(None, fast, growing, 300, 300e6, policy, "fast")
    assert full.tail and cut.bytes == pytest.approx(full.bytes / 2)
    assert growing.with_engine("fast", fast, now=1.0).arriving  # kept through claims


def test_the_roster_sees_engines_still_joining() -> None:
    roster = Roster(horizon_s=600.0)
    for name, t in (("a", 0.0), ("b", 20.0), ("c", 40.0)):
        roster.seen(name, t)
    assert roster.fleet(45.0).arriving
    assert not roster.fleet(90.0).arriving


def test_a_roster_told_the_fleets_size_sees_engines_arriving_until_all_have_joined() -> None:
    """Told how many engines the run is to have (`--expect-engines`), the roster knows
    exactly when they have all come: arriving while fewer have joined, however long ago the
    last one did (the gaps would say the fleet is whole), and not arriving the moment the
    last one joins (the gaps would say more may come), cached fleet or not."""
    roster = Roster(horizon_s=600.0)
    roster.expect(4)
    for name, t in (("a", 0.0), ("b", 20.0), ("c", 40.0)):
        roster.seen(name, t)
    assert roster.fleet(45.0).arriving
    assert roster.fleet(400.0).arriving  # long after the last join: still one to come
    roster.seen("d", 401.0)  # the cached fleet gets it at once
    assert not roster.fleet(401.0).arriving
    assert not roster.fleet(402.0).arriving  # summed again
    roster.expect(None)  # not told: inferred from the gaps again (d came 361 s after c)
    assert roster.fleet(402.0).arriving


def test_a_batchs_work_in_bytes_is_its_signal_whatever_the_files_sizes(tmp_path: Path) -> None:
    """An engine measured on small files is as fast on a large file's slices: the bytes a
    rate is counted in stand for the same samples in a 20-read file, a 400-read file and
    a slice of it (real pod5 files, reads of the same lengths)."""
    from bcmanager.ledger import FileRow, Part
    from bcmanager.pod5io import write_pod5

    def work_per_sample(reads: int, part: Part | None = None) -> float:
        import pod5

        path = tmp_path / f"{reads}.pod5"
        if not path.exists():
            write_pod5(path, n_reads=reads, samples=4000, seed=11)  # reads of alike lengths

        with pod5.Reader(path) as reader:
            lengths = [r.num_samples for r in reader.reads()]
        size = path.stat().st_size
        # a small file's reads are not counted when it is found; a large one's are
        row = FileRow(1, path.name, size, FileState.QUEUED, 0, None, None, None, None)
        if part is not None:
            share = sum(lengths[part.first : part.end]) / sum(lengths)
            row = replace(row, size=round(size * share), reads=part.count, part=part)
            lengths = lengths[part.first : part.end]
        return scheduler.signal_bytes([row]) / sum(lengths)

    small, large = work_per_sample(20), work_per_sample(400)
    piece = work_per_sample(400, Part(100, 80, 400))
    assert abs(small / large - 1) < 0.01 and abs(piece / large - 1) < 0.01, (small, large, piece)


def test_a_claims_sizing_is_in_the_debug_log_with_the_fleet_it_was_sized_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Why an engine got the batch it got, for an operator reading the manager's debug log:
    its speed, its budget and every other engine's rate and time to free up."""
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_files([NewFile(f"f{i}.pod5", 1_000_000) for i in range(4)], now=0.0)
    slow, fast = Speed(1.0, 1e6), Speed(1.0, 3e6, busy_s=2.0)
    fleet = Fleet.of({"slow": slow, "fast": fast}, at=10.0)
    with caplog.at_level("DEBUG", logger="bcmanager.scheduler"):
        scheduler.claim(db, "slow", None, 10.5, POLICY, "v1", slow, fleet)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bcmanager.scheduler"]
    assert line.startswith("claim by slow (1,000,000 B/s, start-up 1.00 s")
    assert "(tail part)" in line and "4,000,000 B queued" in line
    assert "fast 3,000,000 B/s free in 2.5 s" in line  # 2 s busy + 1 s start-up, 0.5 s on
