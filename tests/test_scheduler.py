from pathlib import Path

import pytest

from bcmanager import scheduler
from bcmanager.errors import InvalidInput, LeaseLost
from bcmanager.ledger import Ledger, NewFile
from bcmanager.scheduler import BatchLimit, Fleet, Policy, Speed
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


def test_an_engine_of_unknown_speed_gets_the_default_or_an_even_part_of_the_queue() -> None:
    policy = Policy(default_batch=10, max_batch=500, target_batch_s=60)
    limit = scheduler.batch_limit
    unknown = Speed()
    one, eight = Fleet.of([unknown]), Fleet.of([unknown] * 8)
    assert limit(None, unknown, one, 1000, 1e9, policy) == BatchLimit(10)
    assert limit(40, unknown, one, 1000, 1e9, policy) == BatchLimit(40)  # as asked
    assert limit(None, unknown, eight, 20, 2e7, policy) == BatchLimit(3)  # an even part
    with pytest.raises(InvalidInput):
        limit(501, unknown, one, 1000, 1e9, policy)


def test_a_steady_batch_makes_start_up_at_most_1_percent_of_it() -> None:
    policy = Policy(target_batch_s=60)
    quick = Speed(startup_s=0.5, bytes_per_s=1e6)
    assert scheduler.steady_bytes(quick, policy) == 60e6  # the target: start-up is small
    slow_start = Speed(startup_s=10.0, bytes_per_s=1e6)
    budget = scheduler.steady_bytes(slow_start, policy)
    assert slow_start.startup_s / slow_start.batch_s(budget) == pytest.approx(0.01)


def test_the_tail_is_shared_so_that_every_engine_finishes_together() -> None:
    a100, v100 = Speed(10.0, 3e6), Speed(10.0, 1e6)
    engines = [a100, v100, a100, v100]
    fleet, left = Fleet.of(engines), 80e6
    parts = [scheduler.tail_bytes(e, fleet, left) for e in engines]
    assert sum(parts) == pytest.approx(left)
    finish = [e.batch_s(b) for e, b in zip(engines, parts, strict=True)]
    assert max(finish) - min(finish) < 1e-6  # equal predicted finish
    assert parts[0] == pytest.approx(3 * parts[1])  # a slow GPU gets less
    limit = scheduler.batch_limit(None, a100, fleet, 400, left, Policy(target_batch_s=600))
    assert limit.bytes == pytest.approx(parts[0])  # near the end the tail part wins


def test_a_byte_budget_takes_the_oldest_files_up_to_it(ledger: Ledger) -> None:
    files = ledger.queued_files(10)
    sizes = [f.size for f in files]
    taken = scheduler.take_bytes(files, sizes[0] + sizes[1] + 0.5 * sizes[2])
    assert [f.path for f in taken] == [f.path for f in files[:2]]
    assert len(scheduler.take_bytes(files, 1)) == 1  # at least one file, however large


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
    part = scheduler.tail_bytes(idle, Fleet.of([idle, busy]), 40e6)
    assert part == pytest.approx(35e6)  # the busy one ends its batch, then takes 5e6
    assert idle.batch_s(part) == pytest.approx(busy.busy_s + busy.batch_s(40e6 - part))


def test_an_engine_busy_past_the_common_finish_takes_no_part_of_the_tail() -> None:
    idle, stuck = Speed(1.0, 1e6), Speed(1.0, 1e6, busy_s=500.0)
    assert scheduler.tail_bytes(idle, Fleet.of([idle, stuck]), 10e6) == pytest.approx(10e6)


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
