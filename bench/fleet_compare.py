"""Two commits' managers under the same fleet, runs interleaved (`bench/fleet.py` each).

One fleet run's tail latency moves by half from run to run on a shared machine, more
than most changes move it; this runs `fleet.py --code-at A` and `--code-at B` in turn,
`--rounds` times (A B A B ...), and reports each headline number's median per commit
and the ratio B / A, beside every run's value.

    python bench/fleet_compare.py --revs 0643804,HEAD [--engines 5000] [--rounds 3]
        [--seconds 40] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    CODE,
    REPO,
    _git,
    fmt,
    markdown_table,
    print_table,
    section_header,
    stop_on_sigterm,
    update_doc,
    wait_for_quiet,
)

OTHER_BENCHES = r"bench/(protocol|startup|live|e2e|chaos|fleet)\.py"
METRICS = [  # (key in fleet.py's --json, label, digits)
    ("claim_p50_ms", "claim p50 ms", 1),
    ("claim_p99_ms", "claim p99 ms", 1),
    ("created_p99_ms", "claim sent -> job created p99 ms", 1),
    ("heartbeat_p99_ms", "heartbeat p99 ms", 1),
    ("complete_p99_ms", "complete p99 ms", 1),
    ("manager_cpu", "manager CPU (1 = a core)", 2),
    ("generator_lag_p99_ms", "generator loop lag p99 ms", 1),
    ("generator_lag_max_ms", "generator loop lag max ms", 0),
    ("false_expiries", "false expiries", 0),
    ("errors", "errors", 0),
]


def run_once(rev: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """One `fleet.py` run of `rev`'s manager; its numbers."""
    cmd = [sys.executable, str(REPO / "bench" / "fleet.py"), "--engines", str(args.engines)]
    cmd += ["--seconds", repr(args.seconds), "--code-at", rev, "--no-doc", "--no-wait"]
    cmd += ["--status-every", repr(args.status_every), "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"fleet.py --code-at {rev} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return json.loads(out.read_text(encoding="utf-8"))[0]


def table(revs: list[str], results: dict[str, list[dict[str, float]]]) -> list[list[str]]:
    a, b = revs
    out = []
    for key, label, digits in METRICS:
        va = [r[key] for r in results[a]]
        vb = [r[key] for r in results[b]]
        ma, mb = statistics.median(va), statistics.median(vb)
        ratio = f"{mb / ma:.2f}" if ma else "-"
        out.append(
            [
                label,
                fmt(ma, digits),
                fmt(mb, digits),
                ratio,
                " ".join(fmt(v, digits) for v in va),
                " ".join(fmt(v, digits) for v in vb),
            ]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--revs", required=True, help="two commits, A,B (B / A is reported)")
    p.add_argument("--engines", type=int, default=5000, help="fleet size")
    p.add_argument("--rounds", type=int, default=3, help="runs of each commit")
    p.add_argument("--seconds", type=float, default=40.0, help="measured seconds per run")
    p.add_argument(
        "--status-every",
        type=float,
        default=10.0,
        help="s between /v1/status polls (a dashboard's, `bcm status --watch`'s)",
    )
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--no-wait", action="store_true", help="do not wait for other benchmarks")
    args = p.parse_args(argv)
    names = [r.strip() for r in args.revs.split(",") if r.strip()]
    if len(names) != 2:
        p.error("--revs takes two commits, A,B")
    if args.rounds < 1 or args.engines < 1 or args.seconds <= 0 or args.status_every <= 0:
        p.error("--rounds, --engines, --seconds and --status-every must be positive")
    revs = []
    for name in names:
        commit = _git("rev-parse", "--short", name)
        if not commit:
            p.error(f"unknown revision {name!r}")
        revs.append(commit)
    CODE.describe = f"A: commit {revs[0]}, B: commit {revs[1]} (each exported with `--code-at`)"
    stop_on_sigterm()
    if not args.no_wait:
        wait_for_quiet(OTHER_BENCHES)
    results: dict[str, list[dict[str, float]]] = {rev: [] for rev in revs}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for rev in revs:
                print(f"round {k + 1}/{args.rounds}: {rev} ...", flush=True)
                r = run_once(rev, args, Path(tmp) / f"{rev}-{k}.json")
                results[rev].append(r)
                print(f"  claim p99 {r['claim_p99_ms']:.1f} ms", flush=True)
    a, b = revs
    headers = ["", f"A = {a} median", f"B = {b} median", "B / A", f"{a} runs", f"{b} runs"]
    rows = table(revs, results)
    print_table("fleet: two commits", headers, rows)
    body = "\n".join(
        [
            section_header("A fleet, two commits interleaved (`bench/fleet_compare.py`)"),
            f"- runs: `bench/fleet.py --engines {args.engines} --seconds {args.seconds:g}"
            f" --status-every {args.status_every:g}`"
            f" (its setup, section above) for A = {a} and B = {b} in turn, {args.rounds}"
            " rounds (A B A B ...); medians over the rounds, each run's value beside.",
            "",
            markdown_table(headers, rows),
        ]
    )
    if not args.no_doc:
        update_doc("fleet-compare", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
