"""Chaos runs in the normal suite: a few seeds of `tests.chaos.driver` (see its docstring).

A failure names its seed; replay it with

    .venv/bin/python bench/chaos.py --seed SEED --keep

(`bench/chaos.py --seeds 50` runs many and writes the tally to docs/benchmarks.md).
"""

import dataclasses
import json
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


@pytest.mark.timeout(300)
def test_every_read_exactly_once_aligned_with_a_sample_sheet_through_chaos(tmp_path: Path) -> None:
    """Issue 25: engines with --kit-name, --reference and --sample-sheet (aligned BAM with
    secondary and supplementary records, barcodes under their aliases) through the same
    faults; every read once by its primary record, `bcm verify` green, every BAM with the
    reference's @SQ lines and each alignment beside its primary (`ChaosRun.check_aligned`).

    A shorter run than the default (90 files), with reads long enough to map and some
    to be chimeric (8000 samples: 400 to 1200 bases), basecalled as fast per file as the
    default's. Before issue 25 `bcm engine` knew no --reference or --sample-sheet: each
    engine exits at its start, which the driver reports (it gives up after ten).
    """
    default = ChaosConfig()
    config = dataclasses.replace(
        default,
        files=90,
        first_wave=50,
        samples=8000,
        samples_per_s=default.samples_per_s * 8000 / default.samples,
        aligned=True,
    )
    result = run_chaos(5, tmp_path / "seed-5-aligned", config)
    print(result.report())
    assert result.ok, result.report()
    assert result.faults["ledger-loss"] == 1
    assert result.faults["manager-kill"] >= 1
    kinds = result.alignments
    assert all(kinds[k] for k in ("mapped", "unmapped", "secondary", "supplementary")), kinds


@pytest.mark.timeout(300)
def test_every_read_exactly_once_with_large_files_in_slices_through_chaos(tmp_path: Path) -> None:
    """Issue 26: every fifth file is large (40 reads, 40 KB: over --slice-above 0.02) and
    goes out in slices to the engines while the manager is killed (plain and at every
    failpoint), engines are killed and frozen, and the ledger is lost and rebuilt from
    the manifests' slices: every read in exactly one record, `bcm verify` green."""
    config = ChaosConfig(
        files=90, first_wave=50, large_every=5, slice_above_mib=0.02, target_batch_s=1.0
    )
    result = run_chaos(5, tmp_path / "seed-5", config)
    print(result.report())
    assert result.ok, result.report()
    assert result.faults["ledger-loss"] == 1
    manifests = (tmp_path / "seed-5" / "output").glob("LOGOUTPUT_*/bcmanager-manifest.json")
    pieces = [i for m in manifests for i in json.loads(m.read_text())["inputs"] if "slice" in i]
    # how many slices a file takes depends on the engines' measured speeds (under load a
    # steady batch holds a whole large file); several slices of one file by several
    # engines are e2e/test_slices.py's
    assert len({i["path"] for i in pieces}) >= 5, "too few large files went out in slices"
