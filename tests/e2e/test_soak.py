"""The soak of issue 27, short: `bench/soak.py`'s run in the suite (see its docstring).

A real live run, compressed: a simulated sequencer writing 4 flow cells in MinKNOW's layout
(pod5_pass/pod5_fail, barcode folders, a large file) for ~80 s, a `bcm manager` with a
live generation and a backfill one added mid-run, three simulated engines of mixed speeds
and start-ups and a `dorado` engine that fails a batch when told; a fault every ~12 s at a
seeded moment, each of seven kinds at least once (the manager killed plainly and at a
failpoint, an engine killed and one frozen past its lease, the ledger deleted, a
basecaller exiting 3, a pod5 cut short and finished later). Then `bcm verify` of both
generations, every output read strictly by pysam, summary rows once, nothing quarantined,
the dashboard up. A failure prints the fault log with the seed; replay the same plan with

    .venv/bin/python bench/soak.py --minutes 1.4 --flowcells 4 --interval 5 --reads 30 \\
        --samples 1500 --engines 3 --lease 4 --fault-every 12 --check-every 30 \\
        --truncate-hold 8 --no-original --kinds manager-kill,failpoint,engine-kill,\\
engine-freeze,ledger-loss,basecaller-fail,truncated-pod5 --seed 7 --no-doc --keep
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from soak import KINDS, claim_p99, plan_faults, run_soak, short_config  # noqa: E402

SEED = 7


def test_the_short_plan_has_every_kind_but_a_full_disk() -> None:
    config = short_config(SEED)
    kinds = {f.kind for f in plan_faults(config)}
    assert kinds == set(KINDS) - {"disk-full"}
    assert plan_faults(config) == plan_faults(short_config(SEED))  # the seed alone decides


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_a_compressed_run_with_a_fault_every_few_seconds_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    result = run_soak(short_config(SEED), tmp_path / "soak")
    print(result.report())
    assert result.ok, result.report()
    for gen in ("fast", "sup"):
        report = result.verify[gen]
        assert report["ok"] and report["input_reads"] == result.reads > 0
        assert report["missing"] == report["duplicated"] == 0
        assert report["summary_problems"] == 0 and report["summary_rows"] > 0
        files, records = result.strict[gen]
        assert files > 0 and records == report["records"]
    faults = result.faults
    assert faults["manager-kill"] >= 1 and faults["ledger-loss"] >= 1
    assert faults["engine-kill"] >= 1 and faults["engine-freeze"] >= 1
    assert faults["basecaller-fail"] >= 1, "the flaky engine never ran a failing batch"
    assert faults["truncated-pod5"] >= 1
    assert result.dashboard_ok >= 2 and result.dashboard_failed == 0
    p99, claims = claim_p99(result.claim_buckets)  # read from the manager's /metrics
    assert claims > 0 and p99 <= result.config.max_claim_p99_s
