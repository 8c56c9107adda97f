"""The engine roster (`bcmanager.roster`): each engine's speed learnt from its batches,
and the fleet model batch sizing reads, summed again less often for a large fleet."""

from __future__ import annotations

import pytest

from bcmanager.reports import Timing
from bcmanager.roster import EngineSeen, Roster
from bcmanager.scheduler import Speed


def test_the_speed_model_predicts_claim_to_report_and_trusts_long_batches_more() -> None:
    seen = EngineSeen("gpu1", 0.0)
    # a 10 s first batch whose report put 1 s of basecalling in its start-up, then a 100 s
    # one: the rate follows the long batch; the start-up is claim to report minus
    # basecalling (spawning and reporting in it)
    seen.record_batch(10_000_000, 11.3, Timing(startup_s=2.0, basecall_s=9.0))
    assert seen.speed.startup_s == pytest.approx(2.3)
    seen.record_batch(100_000_000, 101.3, Timing(startup_s=1.0, basecall_s=100.0))
    assert seen.speed.bytes_per_s == pytest.approx(105e6 / 104.5)  # the first counts half
    assert seen.speed.startup_s == pytest.approx((2.3 + 1.3) / 2)
    legacy = EngineSeen("old", 0.0)  # no timing: claim to report is all basecalling
    legacy.record_batch(10_000_000, 20.0, None)
    assert legacy.speed == Speed(0.0, 500_000.0)


def test_an_engine_learns_its_filing_time_per_byte_from_its_reports() -> None:
    seen = EngineSeen("gpu1", 0.0)
    seen.record_batch(60_000_000, 31.0, Timing(startup_s=1.0, basecall_s=30.0))
    assert seen.speed.filing_s_per_byte == 0.0
    seen.record_filing(60_000_000, 3.0)
    assert seen.speed.filing_s_per_byte == pytest.approx(3.0 / 60e6)
    seen.record_batch(60_000_000, 31.0, Timing(startup_s=1.0, basecall_s=30.0))
    assert seen.speed.filing_s_per_byte == pytest.approx(3.0 / 60e6)  # kept with new rates
    assert seen.speed.bytes_per_s == pytest.approx(2e6)


def test_a_large_fleets_speeds_are_summed_again_less_often() -> None:
    """Summing the fleet's speeds for batch sizing is a pass over every engine on the event
    loop: a small fleet is summed again each second, one of 3,000 engines every 3 s."""
    roster, t = Roster(horizon_s=60.0), 1_000.0
    for k in range(10):
        roster.seen(f"gpu{k}", t)
    small = roster.fleet(t)
    t += 1.5
    assert roster.fleet(t) is not small
    for k in range(10, 3_000):
        roster.seen(f"gpu{k}", t)
    large = roster.fleet(t)
    assert len(large) == 3_000  # engines first seen since are counted at once
    t += 1.5
    assert roster.fleet(t) is large
    t += 1.6
    assert roster.fleet(t) is not large


def test_an_engine_not_measured_yet_reports_its_progress_often_and_a_crowd_less_so() -> None:
    """Its progress measures it before its first batch ends (a probe of 15 s would end
    before a heartbeat at a third of a 60 s lease); once measured, a third of the lease.
    Hundreds of engines at their first batches together send about 100 heartbeats a second,
    and thousands no more often than at a third of the lease."""
    roster = Roster(horizon_s=60.0)
    roster.seen("gpu1", 0.0)
    assert roster.heartbeat_s("gpu1", 0, lease_s=60.0) == 2.0
    assert roster.heartbeat_s("gpu1", 0, lease_s=3.0) == 1.0  # never above a third of the lease
    roster["gpu1"].record_batch(10_000_000, 11.0, Timing(startup_s=1.0, basecall_s=10.0))
    assert roster.heartbeat_s("gpu1", 0, lease_s=60.0) == 20.0
    assert roster.heartbeat_s("gpu1", 1, lease_s=60.0) == 2.0  # another model: not measured
    for k in range(2, 501):
        roster.seen(f"gpu{k}", 0.0)
    assert roster.heartbeat_s("gpu2", 0, lease_s=60.0) == 5.0
    for k in range(501, 5_001):
        roster.seen(f"gpu{k}", 0.0)
    assert roster.heartbeat_s("gpu2", 0, lease_s=60.0) == 20.0


def test_engines_gone_long_ago_do_not_slow_a_newcomers_progress_reports() -> None:
    roster = Roster(horizon_s=60.0)
    for k in range(1, 1_001):
        roster.seen(f"old{k}", 0.0)
    roster.fleet(1.0)
    assert roster.heartbeat_s("new", 0, lease_s=90.0) == 10.0  # a thousand engines lately
    roster.seen("new", 500.0)  # the old ones went home long ago
    roster.fleet(500.0)
    assert roster.heartbeat_s("new", 0, lease_s=90.0) == 2.0


def test_an_engines_rate_mid_batch_is_its_reads_since_its_first_counted_heartbeat() -> None:
    roster = Roster(horizon_s=60.0)
    seen = roster.seen("gpu1", 0.0)
    roster.claimed(seen, job_id=1, job_bytes=60_000_000, now=0.0)
    seen.heard(Timing(1.0, 0.5, 10, reads_done=0, reads_total=100), 2.0)  # nothing filed yet
    seen.heard(Timing(1.0, 3.0, 10, reads_done=25, reads_total=100), 4.0)
    seen.heard(Timing(1.0, 9.0, 10, reads_done=55, reads_total=100), 10.0)
    speed = seen.fleet_speed(10.0)
    assert speed.bytes_per_s == pytest.approx(60e6 * 0.30 / 6.0)  # not 0.55 in 9 s
    roster.claimed(seen, job_id=2, job_bytes=60_000_000, now=12.0)  # a new batch: anew
    assert seen.first_share is None and seen.progress is None


def test_an_engines_rate_mid_batch_counts_from_when_each_count_was_reached() -> None:
    """Output comes in blocks: a count heard 3 s after it was reached (a heartbeat between
    two blocks) is a count of then, not of the heartbeat, else the engine seems slower."""
    roster = Roster(horizon_s=60.0)
    seen = roster.seen("gpu1", 0.0)
    roster.claimed(seen, job_id=1, job_bytes=60_000_000, now=0.0)
    seen.heard(Timing(1.0, 3.0, 10, reads_done=25, reads_total=100, reads_at_s=2.0), 4.0)
    seen.heard(Timing(1.0, 9.0, 10, reads_done=55, reads_total=100, reads_at_s=6.0), 10.0)
    speed = seen.fleet_speed(10.0)
    assert speed.bytes_per_s == pytest.approx(60e6 * 0.30 / 4.0)  # not over 6 s
    # what is left: 45 % of the batch, less the 3 s it has basecalled since its count
    assert speed.busy_s == pytest.approx((60e6 * 0.45 - 3.0 * 60e6 * 0.30 / 4.0) / (4.5e6))


def test_an_engines_rate_by_output_counts_from_the_output_heard_after_its_header() -> None:
    """Its first output heard is the BAM's header (written as basecalling begins, no read's
    work); its reads' output comes a block of reads after that: output over the whole
    basecalling time, or from the header's mark, would make it seem faster than it is."""
    roster = Roster(horizon_s=60.0)
    roster.learn_output(0, output_bytes=1_000_000, input_bytes=4_000_000)  # 0.25 a byte
    seen = roster.seen("gpu1", 0.0)
    roster.claimed(seen, job_id=1, job_bytes=60_000_000, now=0.0)
    seen.heard(Timing(1.0, 0.5, 40_000), 1.5)  # the header
    seen.heard(Timing(1.0, 2.0, 1_000_000), 3.0)
    assert seen.fleet_speed(3.0, roster.output_per_byte(0)).bytes_per_s is None  # one mark
    seen.heard(Timing(1.0, 10.0, 5_000_000), 11.0)
    speed = seen.fleet_speed(11.0, roster.output_per_byte(0))
    assert speed.bytes_per_s == pytest.approx(4_000_000 / 0.25 / 8.0)  # not 20e6 in 10 s
    roster.claimed(seen, job_id=2, job_bytes=60_000_000, now=12.0)  # a new batch: anew
    assert seen.first_output is None and not seen.output_began
