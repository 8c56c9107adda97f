"""Many seeded chaos runs (`tests/chaos/driver.py`), tallied into docs/benchmarks.md.

Each seed runs a real manager and three simulated engines over ~150 real pod5 files
while the seed's fault plan kills the manager (plainly and at each failpoint), kills and
freezes engines mid-batch, and deletes the ledger once; then every read id must be in
exactly one FASTQ record. A failed seed's folder is kept and its report printed.

    python bench/chaos.py --seeds 50          # seeds 1..50, tally into docs/benchmarks.md
    python bench/chaos.py --seed 17 --keep    # replay one seed, keep its folder
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from _common import REPO, markdown_table, section_header, update_doc

sys.path.insert(0, str(REPO))

from tests.chaos.driver import ChaosConfig, ChaosResult, run_chaos

WORK = REPO / "bench" / "_work" / "chaos"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50, help="run seeds FIRST..FIRST+N-1")
    parser.add_argument("--first", type=int, default=1, help="the first seed [1]")
    parser.add_argument("--seed", type=int, help="run this one seed (not written to the doc)")
    parser.add_argument("--keep", action="store_true", help="keep the folders of passed seeds")
    parser.add_argument("--workdir", type=Path, default=WORK)
    return parser.parse_args(argv)


def run_one(seed: int, workdir: Path, keep: bool) -> ChaosResult:
    folder = workdir / f"seed-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    result = run_chaos(seed, folder)
    if result.ok and not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def tally_markdown(results: list[ChaosResult], seconds: float, config: ChaosConfig) -> str:
    faults: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
    failed = [r for r in results if not r.ok]
    per_seed = [r.seconds for r in results]
    lines = [
        section_header("Chaos runs (`bench/chaos.py`)"),
        f"- setup: per seed {config.files} real pod5 files ({config.reads} reads of about"
        f" {config.samples} samples each; {config.first_wave} at the start, the rest in waves),"
        f" a real `bcm manager` (lease {config.lease_s:g} s, batch {config.batch}) and"
        f" {config.engines} `bcm engine --basecaller simulated --samples-per-s"
        f" {config.samples_per_s:g}` subprocesses; {config.faults} faults per seed drawn from"
        " the seed; the check reads the pod5 read ids written and every FASTQ header, and runs"
        " `bcm verify`'s `verify_run`.",
        f"- seeds: {results[0].seed}..{results[-1].seed} ({len(results)} runs),"
        f" **{len(results) - len(failed)} passed, {len(failed)} failed**"
        + (f" (seeds {', '.join(str(r.seed) for r in failed)})" if failed else ""),
        f"- time: {seconds:.0f} s in all; per seed min {min(per_seed):.1f} s,"
        f" mean {sum(per_seed) / len(per_seed):.1f} s, max {max(per_seed):.1f} s",
        "",
        markdown_table(["fault", "count"], [[k, str(v)] for k, v in sorted(faults.items())]),
        "",
        "`failpoint X armed` counts manager lives started with BCM_FAILPOINT=X, `hit` those"
        " that died there; `engine-freeze` counts engines frozen past their lease whose late"
        " report was fenced, `missed` those whose job ended before the lease ran out;"
        " `skipped` faults found no engine with a running job.",
    ]
    for r in failed:
        lines += ["", "```", r.report(), "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the running seed stops its manager and engines
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    results: list[ChaosResult] = []
    started = time.monotonic()
    for seed in seeds:
        result = run_one(seed, args.workdir, args.keep or args.seed is not None)
        results.append(result)
        status = "ok" if result.ok else "FAILED"
        print(f"seed {seed}: {status} in {result.seconds:.1f} s {dict(result.faults)}", flush=True)
        if not result.ok:
            print(result.report(), flush=True)
    seconds = time.monotonic() - started
    if args.seed is None:
        update_doc("chaos", tally_markdown(results, seconds, ChaosConfig()))
        print("tally written to docs/benchmarks.md")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
