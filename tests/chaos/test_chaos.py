"""Chaos runs in the normal suite: a few seeds of `tests.chaos.driver` (see its docstring).

A failure names its seed; replay it with

    .venv/bin/python bench/chaos.py --seed SEED --keep

(`bench/chaos.py --seeds 50` runs many and writes the tally to docs/benchmarks.md).
"""

from pathlib import Path

import pytest

from tests.chaos.driver import FAILPOINTS, ChaosConfig, plan_faults, run_chaos

SEEDS = (1, 2, 3)


def test_the_suite_seeds_arm_every_failpoint() -> None:
    armed = {f.failpoint for seed in SEEDS for f in plan_faults(seed, ChaosConfig()) if f.failpoint}
    assert armed == set(FAILPOINTS)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_read_exactly_once_through_chaos(seed: int, tmp_path: Path) -> None:
    result = run_chaos(seed, tmp_path / f"seed-{seed}")
    print(result.report())
    assert result.ok, result.report()
    assert result.faults["ledger-loss"] == 1
    assert result.faults["manager-kill"] >= 1


@pytest.mark.timeout(300)
def test_every_read_exactly_once_per_generation_through_chaos(tmp_path: Path) -> None:
    """A live generation and a backfill one (4x slower, as sup is) through the same faults."""
    config = ChaosConfig(files=90, first_wave=50, generations=("live=fast", "sup=sup"))
    result = run_chaos(4, tmp_path / "seed-4", config)
    print(result.report())
    assert result.ok, result.report()
    assert result.faults["ledger-loss"] == 1
