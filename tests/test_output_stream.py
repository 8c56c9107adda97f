"""Filing a basecaller's stream while it is written (`bcmanager.output.stream`).

The real simulated basecaller prints Dorado-like BAM or FASTQ on stdout into a file, as
the engine runs Dorado; the filing follows that file and must file exactly what a split
of the finished file files, read for read and row for row.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pysam
import pytest

from bcmanager.basecallers.simulated import READY_MARK, SimulatedBasecaller
from bcmanager.output.origin import job_origins
from bcmanager.output.split import STAGING_DIR, SplitError, split_output
from bcmanager.output.stream import StreamFiling
from tests.helpers import two_run_job


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """INPUT with a MinKNOW run and a loose pod5 of another run; a job linking both."""
    return two_run_job(tmp_path)


def start_basecaller(
    job_in: Path, job_out: Path, **options: object
) -> tuple[subprocess.Popen, Path]:
    """The simulated basecaller started as the engine starts Dorado: stdout to its file."""
    inv = SimulatedBasecaller(style="dorado", **options).invocation(job_in, job_out)  # type: ignore[arg-type]
    assert inv.stdout_path is not None
    with open(inv.stdout_path, "wb") as out:
        proc = subprocess.Popen(
            inv.argv, env={**os.environ, **inv.env}, stdout=out, stderr=subprocess.PIPE
        )
    return proc, inv.stdout_path


def filing_of(stream: Path, dest: Path, origins: dict, **options: object) -> StreamFiling:
    return StreamFiling(
        stream, dest, lambda: origins, job_id=7, min_qscore=9, barcoding=True, **options
    ).start()


def reads_by_file(dest: Path, files: dict[str, int]) -> dict[str, list[str]]:
    found = {}
    for rel in files:
        if rel.endswith(".bam"):
            with pysam.AlignmentFile(str(dest / rel), check_sq=False) as bam:
                found[rel] = [r.query_name for r in bam]
        else:
            with pysam.FastxFile(str(dest / rel)) as fastq:
                found[rel] = [e.name for e in fastq]
    return found


def nothing_left(dest: Path) -> bool:
    """No output under a final name, no staging folder: only the basecaller's own files
    (its stream, the mark a killed one leaves) may remain."""
    own = [dest / "basecalls", dest / READY_MARK]
    return not [
        p for p in dest.rglob("*") if p.is_file() and not any(p.is_relative_to(o) for o in own)
    ]


def test_a_stream_is_filed_while_the_basecaller_writes_it(job, tmp_path: Path) -> None:
    """Reads are filed as they come (most of them before the basecaller exits, which is
    what takes filing off the GPU's critical path), and the stream files exactly what a
    split of the finished BAM files: the same reads in the same order in each file, the
    same summary rows."""
    root, job_in, job_out, _ = job
    origins = job_origins(job_in, root)
    # 100 reads of ~1,200 samples: ~2.4 s of basecalling at 50,000 samples/s
    proc, stream = start_basecaller(
        job_in, job_out, samples_per_s=50_000, model="hac", kit_name="SQK-NBD114-24"
    )
    filing = filing_of(stream, job_out, origins)
    filed_while_running = 0
    while proc.poll() is None:
        filed_while_running = filing.reads
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    filing.basecaller_exited()
    streamed = filing.finish()
    assert filed_while_running >= streamed.reads // 2, (filed_while_running, streamed.reads)
    assert filing.reads_at_exit is not None and filing.reads_at_exit >= filed_while_running
    assert not (job_out / STAGING_DIR).exists()
    # progress counts the job's pod5 reads (a split read's records once), of all it holds
    assert filing.pod5_reads_filed == filing.reads_in == sum(o.reads for o in origins.values())
    assert filing.reads > filing.pod5_reads_filed  # some reads were split

    whole = split_output(
        stream.parent, tmp_path / "whole", origins, job_id=7, min_qscore=9, barcoding=True
    )
    assert streamed.files == whole.files and len(whole.files) >= 8
    assert reads_by_file(job_out, streamed.files) == reads_by_file(tmp_path / "whole", whole.files)
    assert streamed.rows == whole.rows
    for rel in whole.summaries:
        assert (job_out / rel).read_bytes() == (tmp_path / "whole" / rel).read_bytes()


def test_a_fastq_stream_is_filed_as_gzipped_fastq(job, tmp_path: Path) -> None:
    root, job_in, job_out, _ = job
    origins = job_origins(job_in, root)
    proc, stream = start_basecaller(
        job_in, job_out, samples_per_s=0, emit_fastq=True, kit_name="SQK-NBD114-24"
    )
    filing = filing_of(stream, job_out, origins)
    assert proc.wait(timeout=60) == 0
    filing.basecaller_exited()
    streamed = filing.finish()
    whole = split_output(
        stream.parent, tmp_path / "whole", origins, job_id=7, min_qscore=9, barcoding=True
    )
    assert streamed.files == whole.files
    assert all(rel.endswith(".fastq.gz") for rel in streamed.files)
    assert reads_by_file(job_out, streamed.files) == reads_by_file(tmp_path / "whole", whole.files)
    assert streamed.rows == whole.rows


def test_a_read_of_no_pod5_of_the_job_fails_the_stream_and_leaves_nothing(job) -> None:
    """The filing stops at the first foreign read; the basecaller keeps writing (its file
    is not a pipe it waits on) and finish() raises what stopped it."""
    root, job_in, job_out, _ = job
    only_a = {k: v for k, v in job_origins(job_in, root).items() if k.startswith("exp")}
    proc, stream = start_basecaller(job_in, job_out, samples_per_s=200_000)
    filing = filing_of(stream, job_out, only_a)
    assert proc.wait(timeout=60) == 0  # never blocked by the filing's stop
    filing.basecaller_exited()
    with pytest.raises(SplitError, match="not in this job"):
        filing.finish()
    assert nothing_left(job_out) and not (job_out / STAGING_DIR).exists()
    assert stream.stat().st_size > 0  # the raw stream is kept: the engine files it whole


def test_an_abandoned_stream_leaves_nothing_under_a_final_name(job) -> None:
    root, job_in, job_out, _ = job
    proc, stream = start_basecaller(job_in, job_out, samples_per_s=40_000)
    filing = filing_of(stream, job_out, job_origins(job_in, root))
    deadline = time.monotonic() + 30
    while filing.reads < 5:  # a few reads filed, into the staging folder
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    assert (job_out / STAGING_DIR).is_dir()
    proc.kill()  # e.g. its lease was lost
    proc.wait()
    filing.abandon()
    assert nothing_left(job_out) and not (job_out / STAGING_DIR).exists()
    filing.abandon()  # again: nothing to do
    with pytest.raises(SplitError, match="already"):
        filing.finish()


def test_an_empty_stream_is_an_error_not_an_empty_batch(tmp_path: Path) -> None:
    stream = tmp_path / "basecalls" / "basecalls.bam"
    stream.parent.mkdir()
    stream.touch()
    filing = filing_of(stream, tmp_path, {})
    filing.basecaller_exited()
    with pytest.raises(SplitError, match="wrote nothing"):
        filing.finish()


def test_a_job_folder_moved_aside_mid_stream_is_not_made_again(job, tmp_path: Path) -> None:
    """An engine frozen past its lease finds its job folder set aside by the manager
    (LATE_...): its stream's filing must not make the folder again under its old name,
    where it would look like a running job's output."""
    root, job_in, job_out, _ = job
    proc, stream = start_basecaller(job_in, job_out, samples_per_s=40_000, kit_name="SQK-NBD114-24")
    filing = filing_of(stream, job_out, job_origins(job_in, root))
    deadline = time.monotonic() + 30
    while filing.reads < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.rename(job_out, tmp_path / "LATE_7_e1")
    assert proc.wait(timeout=60) == 0  # it wrote on into its open file, now aside
    filing.basecaller_exited()
    with pytest.raises(OSError):
        filing.finish()  # outputs first seen after the move had nowhere to go
    assert not job_out.exists()
