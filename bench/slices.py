"""Slices of large files (issue 26): whole files against slices, side by side in one run.

Two shapes, each run with `--slice-above 0` (every file whole: what bcmanager did before
slices) and with slices on, on the same code:

- tail: 4 simulated engines of mixed speeds (1, 1, 0.5, 0.5) over a backlog of small
  files followed by 3 large ones; makespan against the ideal (one start-up plus the total
  samples over the fleet's rate);
- live: one large file appears while 8 equal engines wait in their claims; the time from
  its arrival to its last read merged, against the file's basecalling time over the
  engines plus one start-up.

Engines are real `bcm engine --basecaller simulated` processes that read every pod5 and
write real BAM; the manager is a real `bcm manager`. Prints a table and writes the
`slices` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    BACKLOG_AGE_S,
    BacklogRun,
    JobTimes,
    fmt,
    http_get_json,
    markdown_table,
    print_table,
    run_backlog,
    section_header,
    stop_on_sigterm,
    update_doc,
)

SECTION = "slices"


@dataclass
class Shape:
    name: str
    factors: list[float]  # engine speeds, relative
    small: int  # small files first
    large: int  # then large ones
    ideal_s: float  # seconds an ideal split of the timed files takes (one start-up more)
    what: str
    late: bool = False  # the large files arrive once the small ones are basecalled


@dataclass
class Result:
    shape: str
    mode: str
    makespan_s: float
    ideal_s: float
    jobs: int

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.ideal_s


def write_sources(folder: Path, shape: Shape, args: argparse.Namespace) -> list[tuple[Path, int]]:
    """Distinct real pod5 files, small ones then large ones, as old as a backlog."""
    from bcmanager.pod5io import count_reads, write_pod5

    folder.mkdir(parents=True, exist_ok=True)
    then = time.time() - BACKLOG_AGE_S
    plan = [args.small_reads] * shape.small + [args.large_reads] * shape.large
    out = []
    for i, reads in enumerate(plan):
        path = folder / f"{shape.name}_{i:03d}.pod5"
        write_pod5(path, n_reads=reads, samples=args.samples, seed=5000 + i)
        os.utime(path, (then, then))
        out.append((path, count_reads(path)[1]))
    return out


def run_shape(
    work: Path,
    shape: Shape,
    sources: list[tuple[Path, int]],
    slice_above: str,
    args: argparse.Namespace,
) -> Result:
    """One run. A `late` shape basecalls its small files first (the engines get measured),
    then its large file appears while every engine waits: timed from its arrival to its
    last read merged."""
    backlog = sources[: -shape.large] if shape.late else sources
    timed = sources[-shape.large :] if shape.late else sources
    fleet_rate = sum(s for _, s in timed) / shape.ideal_s  # samples per second, whole fleet
    rates = [fleet_rate * f / sum(shape.factors) for f in shape.factors]
    engines = {
        f"gpu{k + 1}": [
            "--basecaller",
            "simulated",
            "--samples-per-s",
            repr(rate),
            "--startup-s",
            repr(args.startup),
        ]
        for k, rate in enumerate(rates)
    }
    manager = ["--slice-above", slice_above, "--target-batch", repr(args.target), *args.manager_arg]
    late: dict[str, float] = {}

    def arrive_late(port: int) -> None:
        start = time.time()
        for k, (path, _samples) in enumerate(timed):
            os.link(path, work / "input" / "run1" / f"late_{k}.pod5")  # whole at once
        want = len(backlog) + len(timed)
        while ((http_get_json("/v1/status", port, 10) or {}).get("files") or {}).get(
            "done"
        ) != want:
            if time.time() - start > 900:
                raise RuntimeError("the late file(s) were not basecalled in 900 s")
            time.sleep(0.1)
        late["s"] = time.time() - start

    run = run_backlog(
        work,
        backlog,
        len(backlog),
        engines,
        manager_extra=manager,
        batch_size=10,
        lease_s=60,
        before_stop=arrive_late if shape.late else None,
    )
    mode = "whole files" if float(slice_above) == 0 else f"slices (--slice-above {slice_above})"
    if args.trace:
        print_trace(work / "output", run)
    makespan = late["s"] if shape.late else run.makespan_s
    return Result(shape.name, mode, makespan, args.startup + shape.ideal_s, len(run.jobs))


def job_reads(output: Path, job: JobTimes) -> int:
    """Reads a finished job basecalled, from its merge manifest."""
    manifest = json.loads(
        (output / f"LOGOUTPUT_{job.job_id}_{job.engine}" / "bcmanager-manifest.json").read_text()
    )
    return sum(
        (i["slice"]["count"] if i.get("slice") else i.get("reads") or 0)
        for i in manifest.get("inputs", [])
    )


def print_trace(output: Path, run: BacklogRun) -> None:
    """Each job of a run: engine, reads, and its times in seconds after t0."""
    print(f"{'job':>4} {'engine':>6} {'reads':>5} {'claimed':>8} {'started':>8} {'merged':>8}")
    for j in sorted(run.jobs, key=lambda j: (j.engine, j.start)):
        created = (j.created or j.start) - run.t0
        print(
            f"{j.job_id:>4} {j.engine:>6} {job_reads(output, j):>5} {created:8.1f}"
            f" {j.start - run.t0:8.1f} {j.done - run.t0:8.1f}"
        )


def main() -> int:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ideal", type=float, default=60.0, help="ideal seconds of a tail run")
    parser.add_argument("--startup", type=float, default=1.0, help="engine start-up, s")
    parser.add_argument("--target", type=float, default=5.0, help="--target-batch, s")
    parser.add_argument("--samples", type=int, default=4000, help="samples per read")
    parser.add_argument("--small-reads", type=int, default=20)
    parser.add_argument("--large-reads", type=int, default=200)
    parser.add_argument("--slice-above", default="0.5", help="MiB, for the slices mode")
    parser.add_argument("--shapes", default="tail,live-cold,live-warm")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print each run's jobs")
    parser.add_argument(
        "--slices-only",
        action="store_true",
        help="skip the whole-files runs (no table against them, no doc update)",
    )
    parser.add_argument(
        "--manager-arg",
        action="append",
        default=[],
        help="extra argument for `bcm manager`, repeatable, as --manager-arg=ARG",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each shape and mode")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    shapes = {
        "tail": Shape(
            "tail",
            [1, 1, 0.5, 0.5],
            small=6,
            large=3,
            ideal_s=args.ideal,
            what="4 engines of speeds 1, 1, 0.5, 0.5; 6 small files, then 3 large ones",
        ),
        "live-cold": Shape(
            "live-cold",
            [1] * 8,
            small=0,
            large=1,
            ideal_s=args.ideal / 4,
            what="8 equal engines waiting, never measured; one large file appears",
        ),
        "live-warm": Shape(
            "live-warm",
            [1] * 8,
            small=16,
            large=1,
            ideal_s=args.ideal / 4,
            what="8 equal engines basecall 16 small files (and so get measured); when all"
            " wait, one large file appears: timed from its arrival to its last read merged",
            late=True,
        ),
    }
    chosen = [shapes[s] for s in args.shapes.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bcm-slices-"))
    results = []
    for shape in chosen:
        sources = write_sources(work / "sources" / shape.name, shape, args)
        modes = (args.slice_above,) if args.slices_only else ("0", args.slice_above)
        for _ in range(args.repeat):
            for slice_above in modes:
                results.append(run_shape(work / "run", shape, sources, slice_above, args))
                r = results[-1]
                print(
                    f"{r.shape} / {r.mode}: {r.makespan_s:.1f} s ({r.ratio:.3f} x ideal)",
                    flush=True,
                )
    if args.slices_only:
        ratios = [r.ratio for r in results]
        print(
            f"x ideal: {', '.join(f'{x:.3f}' for x in ratios)}; mean {sum(ratios) / len(ratios):.3f}"
        )
        return 0
    headers = ["shape", "mode", "makespan s", "ideal s", "x ideal", "jobs", "vs whole files"]
    rows = []
    for r in results:
        whole = next(w for w in results if w.shape == r.shape and w.mode == "whole files")
        rows.append(
            [
                r.shape,
                r.mode,
                fmt(r.makespan_s),
                fmt(r.ideal_s),
                fmt(r.ratio, 3),
                str(r.jobs),
                fmt(r.makespan_s / whole.makespan_s, 3),
            ]
        )
    print_table("Slices of large files", headers, rows)
    if not args.no_doc:
        body = "\n".join(
            [
                section_header("Slices of large files: tail and live"),
                "",
                *[f"- {s.name}: {s.what}" for s in chosen],
                f"- small files: {args.small_reads} reads, large: {args.large_reads} reads, of"
                f" {args.samples} samples; start-up {args.startup:g} s; --target-batch"
                f" {args.target:g} s; engine rates set so that an ideal split takes the"
                " `ideal s` (one start-up included)",
                "- whole files: `--slice-above 0`, every file whole (bcmanager before slices);"
                " slices: the same run with slicing on, side by side on the same code",
                "",
                markdown_table(headers, rows),
            ]
        )
        update_doc(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
