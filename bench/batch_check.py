"""What the engine's batch check costs beside filing (issue 22).

The engine files a batch (split into MinKNOW's tree, compressed) and then checks it:
every read id of its pod5 files read back from the filed outputs, every output read to
its end (`bcmanager.output.check`). Both run on the GPU node while the next batch
basecalls; this measures them side by side on one batch, in one process, alternating,
for the default settings (no barcoding) and a barcode kit (many small outputs).

    .venv/bin/python bench/batch_check.py [--reads 4000] [--rounds 5] [--no-doc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import print_table, section_header, update_doc
from tests.helpers import run_invocation

from bcmanager.basecallers.simulated import SimulatedBasecaller
from bcmanager.layout import link_name
from bcmanager.output.check import check_batch
from bcmanager.output.filing import file_native_output
from bcmanager.pod5io import write_pod5

FILES = 4


def make_job(root: Path, reads: int) -> tuple[Path, Path, list[dict]]:
    """A job of FILES pod5 files of `reads` reads in all, linked as the manager links them."""
    inp, job_in = root / "INPUT", root / "ASSIGNED_1_e"
    job_in.mkdir(parents=True)
    files = []
    for i in range(FILES):
        rel = f"run/pod5/f{i}.pod5"
        write_pod5(inp / rel, reads // FILES, samples=4000, seed=100 + i)
        os.symlink(inp / rel, job_in / link_name(rel))
        files.append({"name": link_name(rel), "path": rel})
    return inp, job_in, files


def basecalled(root: Path, job_in: Path, kit: str | None) -> Path:
    """The simulated basecaller's raw output for the job, kept to file again each round."""
    raw = root / f"raw-{kit or 'none'}"
    raw.mkdir()
    done = run_invocation(SimulatedBasecaller(0, kit_name=kit).invocation(job_in, raw))
    assert done.returncode == 0, done.stderr
    return raw


def one_round(root: Path, raw: Path, job_in: Path, files: list[dict], kit: str | None):
    out = root / "TMPOUTPUT_1_e"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(raw, out)
    started = time.perf_counter()
    filed = file_native_output(
        out, job_in, files, layout="minknow", job_id=1, min_qscore=9, barcoding=bool(kit)
    )
    filing = time.perf_counter() - started
    pod5s = {f["name"]: job_in / f["name"] for f in files}
    started = time.perf_counter()
    check = check_batch(pod5s, [out / rel for rel in filed.files])
    checking = time.perf_counter() - started
    assert check.problem() is None, check.problem()
    return filing, checking, len(filed.files), check.reads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=4000, help="reads per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bcm-check-") as tmp:
        root = Path(tmp)
        _inp, job_in, files = make_job(root, args.reads)
        for kit in (None, "SQK-NBD114-24"):
            raw = basecalled(root, job_in, kit)
            timings = [one_round(root, raw, job_in, files, kit) for _ in range(args.rounds)]
            filing = statistics.median(t[0] for t in timings)
            checking = statistics.median(t[1] for t in timings)
            rows.append(
                [
                    "default (no barcoding)" if kit is None else f"--kit-name {kit}",
                    str(timings[0][3]),
                    str(timings[0][2]),
                    f"{filing * 1000:.0f}",
                    f"{checking * 1000:.0f}",
                    f"{checking / filing:.2f}",
                ]
            )
    headers = ["settings", "reads", "outputs", "filing ms", "check ms", "check / filing"]
    print_table("The engine's batch check beside filing (medians)", headers, rows)
    if not args.no_doc:
        from bench._common import markdown_table

        body = "\n".join(
            [
                section_header("The engine's batch check beside filing (`bench/batch_check.py`)"),
                "",
                f"One batch of {FILES} pod5 files, basecalled once by the simulated basecaller"
                f" (Dorado-like BAM), then filed and checked {args.rounds} times, alternating,"
                " in one process; medians. Filing is what the engine did before the check"
                " existed (split, compress, rename); the check reads every pod5's read ids"
                " and every output to its end.",
                "",
                markdown_table(headers, rows),
            ]
        )
        update_doc("batch_check", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
