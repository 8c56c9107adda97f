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
