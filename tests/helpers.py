"""Test helpers: real pod5 runs, a stand-in basecall, an independent exactly-once check,
outputs read as users' tools read them, and `bcm verify` run as users run it."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bcmanager.basecallers.abc import Invocation
from bcmanager.layout import link_name
from bcmanager.output.naming import RunIds
from bcmanager.pod5io import read_ids, write_pod5

RUN_A = RunIds(
    "PAW11111", "000000a1-0000-4000-8000-00000000000a", "000000a2-0000-4000-8000-00000000000a"
)
RUN_B = RunIds(
    "PBC22222", "000000b1-0000-4000-8000-00000000000b", "000000b2-0000-4000-8000-00000000000b"
)


def two_run_job(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """INPUT with a MinKNOW run (run A) and a loose pod5 (run B); a job linking both.

    Returns (INPUT, job input folder, job output folder, {read id: run folder}).
    """
    root = tmp_path / "INPUT"
    rel_a = "exp/sample/20260101_0000_1A_PAW11111_000000a1/pod5/PAW11111_a_0.pod5"
    rel_b = "loose/b.pod5"
    where = {
        rid: "exp/sample/20260101_0000_1A_PAW11111_000000a1"
        for rid in write_run_pod5(root / rel_a, RUN_A, 60, 11)
    }
    where.update(
        {rid: "loose/PBC22222_000000b2" for rid in write_run_pod5(root / rel_b, RUN_B, 40, 12)}
    )
    job_in = tmp_path / "ASSIGNED_7_e1"
    job_in.mkdir()
    for rel in (rel_a, rel_b):
        os.symlink(root / rel, job_in / link_name(rel))
    job_out = tmp_path / "TMPOUTPUT_7_e1"
    job_out.mkdir()
    return root, job_in, job_out, where


def write_run_pod5(
    path: Path, ids: RunIds, n_reads: int, seed: int, samples: int = 1200
) -> list[str]:
    """A pod5 of `n_reads` reads (by default long enough that some split) of the run
    `ids`; returns the read ids (those `write_pod5` writes for the same arguments)."""
    import dataclasses

    import pod5

    from bcmanager.pod5io import make_reads

    reads = make_reads(n_reads, samples, seed)
    info = dataclasses.replace(
        reads[0].run_info,
        flow_cell_id=ids.flow_cell_id,
        protocol_run_id=ids.protocol_run_id,
        acquisition_id=ids.run_id,
        sample_id=f"sample_{ids.flow_cell_id}",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with pod5.Writer(path) as writer:
        writer.add_reads([dataclasses.replace(r, run_info=info) for r in reads])
    return [str(r.read_id) for r in reads]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One flow cell, one acquisition: the run of `make_run(..., per_file_run_ids=True)`.
SHARED_FLOWCELL = "PAW22022"
SHARED_ACQUISITION = "00000000-0000-0000-0000-0000000000a0"


def file_run_ids(n: int) -> RunIds:
    """The run ids of file `n` of a run whose files share one flow cell and one
    acquisition id but each have their own protocol_run_id, all sharing their first 8
    hex digits (`00000000-0000-0000-0000-000000000001`, `...0002`): converted or
    hand-made data, which once made two outputs of one batch share a name (issue 22)."""
    return RunIds(SHARED_FLOWCELL, f"00000000-0000-0000-0000-{n:012d}", SHARED_ACQUISITION)


def make_run(
    input_dir: Path,
    n_files: int,
    reads: int = 3,
    samples: int = 400,
    prefix: str = "f",
    seed: int = 0,
    per_file_run_ids: bool = False,
) -> dict[str, list[str]]:
    """Write `n_files` real pod5 files; returns {relative path: read ids}.

    Each file is its own run (`run<seed>`, flow cell `FA<seed>`) unless
    `per_file_run_ids`: then all share `SHARED_FLOWCELL` and `SHARED_ACQUISITION` and
    file i has the protocol run id `00000000-0000-0000-0000-<seed * 100000 + i + 1>`
    (`file_run_ids(n)`). The read ids are the same either way.
    """
    out = {}
    for i in range(n_files):
        rel = f"{prefix}{i:04d}.pod5"
        n = seed * 100_000 + i + 1
        if per_file_run_ids:
            ids = file_run_ids(n)
            out[rel] = write_run_pod5(input_dir / rel, ids, reads, seed=n, samples=samples)
        else:
            out[rel] = write_pod5(input_dir / rel, reads, samples, seed=n)
    return out


def basecall_dir(job_input: Path, job_output: Path) -> int:
    """Stand-in basecaller: one FASTQ record per read id of every pod5 in `job_input`."""
    (job_output / "pass").mkdir(parents=True, exist_ok=True)
    n = 0
    for entry in sorted(os.scandir(job_input), key=lambda e: e.name):
        if not entry.name.endswith(".pod5"):
            continue
        stem = entry.name[: -len(".pod5")]
        with open(job_output / "pass" / f"{stem}.fastq", "w") as fh:
            for rid in read_ids(Path(entry.path)):
                fh.write(f"@{rid}\nACGT\n+\n!!!!\n")
                n += 1
    return n


def run_invocation(inv: Invocation, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a basecaller's invocation as the engine does: argv, extra env, stdout to its
    file when it prints its reads (Dorado, the simulated one in Dorado style)."""
    env = {**os.environ, **inv.env}
    if inv.stdout_path is None:
        return subprocess.run(inv.argv, env=env, capture_output=True, text=True, timeout=timeout)
    with open(inv.stdout_path, "w") as out:
        return subprocess.run(
            inv.argv, env=env, stdout=out, stderr=subprocess.PIPE, text=True, timeout=timeout
        )


def basecall_native(job_input: Path, job_output: Path, job_id: int, input_root: Path) -> None:
    """What `bcm engine --kit-name K` with the simulated basecaller leaves for the manager:
    Dorado-like BAM split into MinKNOW's tree, with a summary fragment per run."""
    from bcmanager.basecallers.simulated import SimulatedBasecaller
    from bcmanager.output.filing import file_native_output

    basecaller = SimulatedBasecaller(0, kit_name="SQK-NBD114-24")
    done = run_invocation(basecaller.invocation(job_input, job_output))
    assert done.returncode == 0, done.stderr
    files = [
        {"name": e.name, "path": os.path.relpath(os.readlink(e.path), input_root)}
        for e in os.scandir(job_input)
        if e.name.endswith(".pod5")
    ]
    file_native_output(
        job_output,
        job_input,
        files,
        layout="minknow",
        job_id=job_id,
        min_qscore=9,
        barcoding=True,
    )


def output_read_ids(output_dir: Path) -> Counter[str]:
    """How many times each read is in OUTPUT: {read id: copies}, in either layout.

    Every record of every BAM/FASTQ/FASTQ.gz file outside bcmanager's own folders, read
    by `bcm verify`'s reader (`bcmanager.verify.output_read_ids`); the pieces of a split
    read count for their parent, once, so a read present exactly once counts 1.
    """
    from bcmanager.verify import output_read_ids as read_output

    return read_output(output_dir)


fastq_read_ids = output_read_ids  # the name from the FASTQ-only days


def assert_exactly_once(
    run: dict[str, list[str]], output_dir: Path, skip: set[str] = frozenset()
) -> None:
    """Every read id of `run` (but the files in `skip`) in exactly one FASTQ record, and
    every read file under `output_dir` whole (`assert_outputs_whole`)."""
    assert_outputs_whole(output_dir)
    expected = Counter(rid for rel, ids in run.items() if rel not in skip for rid in ids)
    got = fastq_read_ids(output_dir)
    missing = set(expected) - set(got)
    doubled = {rid for rid, n in got.items() if n > 1}
    unexpected = set(got) - set(expected)
    assert not missing, f"{len(missing)} read(s) missing"
    assert not doubled, f"{len(doubled)} read(s) in more than one FASTQ record"
    assert not unexpected, f"{len(unexpected)} unexpected read(s)"


# bcmanager's own folders and hidden names, skipped as `bcmanager.verify` skips them
_OWN_FOLDER = re.compile(r"^(?:TMPOUTPUT|LOGOUTPUT|FAILEDOUTPUT)_|^(?:QUARANTINE|\.bcmanager)$")
_GZIP_MAGIC = b"\x1f\x8b"


def _skipped(name: str) -> bool:
    return name.startswith(".") or bool(_OWN_FOLDER.match(name))


def read_files_under(output_dir: Path, skip_generations: bool = False) -> list[Path]:
    """Every read file (.bam, .sam, .fastq, .fq, .gz) under `output_dir` but in
    bcmanager's own folders (TMPOUTPUT_*, LOGOUTPUT_*, FAILEDOUTPUT_*, QUARANTINE,
    .bcmanager) and hidden ones; with `skip_generations`, not in `output_dir/generations`
    either (the named generations' trees)."""
    found = []
    for folder, dirs, files in os.walk(output_dir):
        at_root = Path(folder) == Path(output_dir)
        dirs[:] = sorted(
            d
            for d in dirs
            if not _skipped(d) and not (skip_generations and at_root and d == "generations")
        )
        found += [
            Path(folder) / name
            for name in sorted(files)
            if not _skipped(name) and name.endswith((".bam", ".sam", ".fastq", ".fq", ".gz"))
        ]
    return found


def _fastq_records(lines: Iterable[bytes], where: str) -> int:
    """The count of well-formed 4-line FASTQ records in `lines` (each with its newline);
    AssertionError naming the first bad record otherwise."""
    n = 0
    record: list[bytes] = []
    last = b"\n"
    for last in lines:
        record.append(last.rstrip(b"\r\n"))
        if len(record) < 4:
            continue
        head, seq, plus, qual = record
        problem = (
            "header does not start with @" if not head.startswith(b"@") or len(head) < 2
            else "separator does not start with +" if not plus.startswith(b"+")
            else "empty sequence" if not seq
            else f"{len(seq)} bases but {len(qual)} qualities" if len(seq) != len(qual)
            else ""
        )  # fmt: skip
        assert not problem, f"{where}: record {n + 1}: {problem}: {head[:80]!r}"
        n += 1
        record = []
    assert not record, f"{where}: {len(record)} line(s) after record {n}: {record[0][:80]!r}"
    assert last.endswith(b"\n"), f"{where}: the last line has no newline"
    return n


def read_strictly(path: Path) -> int:
    """Read one read file to its end as users' tools do; its record count.

    BAM: pysam with its truncation check on (a missing BGZF EOF block raises), every
    record to the end (until_eof; a garbled block raises). SAM: pysam, every record.
    Gzip: must start with gzip's magic and decompress to its end (a missing trailer, a
    bad CRC or stale bytes after the last member raise); a .fastq.gz / .fq.gz must hold
    well-formed FASTQ. Plain FASTQ: well-formed 4-line records, the last line ended.
    """
    import pysam

    name = path.name
    if name.endswith((".bam", ".sam")):
        mode = "rb" if name.endswith(".bam") else "r"
        # ignore_truncation=False (the default): no EOF block is an error, not a warning
        fh = pysam.AlignmentFile(str(path), mode, check_sq=False, ignore_truncation=False)
        try:
            records = sum(1 for _ in fh.fetch(until_eof=True))
        except BaseException:
            with suppress(OSError):  # a failed read fails the close too: report the read
                fh.close()
            raise
        fh.close()
        return records
    if name.endswith(".gz"):
        with open(path, "rb") as raw:
            magic = raw.read(2)
        assert magic == _GZIP_MAGIC, f"not gzip: starts with {magic!r}"
        with gzip.open(path, "rb") as fh:
            if name.endswith((".fastq.gz", ".fq.gz")):
                return _fastq_records(fh, "decompressed")
            while fh.read(1 << 20):
                pass
            return 0
    with open(path, "rb") as fh:
        return _fastq_records(fh, "FASTQ")


def assert_outputs_whole(output_dir: Path, skip_generations: bool = False) -> dict[str, int]:
    """Open every read file under `output_dir` (`read_files_under`) as users' tools do
    (`read_strictly`) and fail naming each file that does not read to its end, and
    why; returns {OUTPUT-relative path: records}."""
    counts: dict[str, int] = {}
    errors: list[str] = []
    for path in read_files_under(output_dir, skip_generations):
        rel = str(path.relative_to(output_dir))
        try:
            counts[rel] = read_strictly(path)
        except Exception as exc:  # pysam: OSError, ValueError; gzip: EOFError, ...
            errors.append(f"{rel}: {type(exc).__name__}: {exc}")
    assert not errors, f"{len(errors)} output file(s) do not read to their end:\n" + "\n".join(
        errors
    )
    return counts


def bcm_verify(
    input_dir: Path, output_dir: Path, generation: str | None = None, timeout: float = 300
) -> dict:
    """Run the real `bcm verify --input IN --output OUT [--generation NAME] --json` as
    users do (the venv's `bcm` script); assert it exits 0 and returns its report. On
    failure the message holds its report as users read it (the run again without --json).
    """
    script = Path(sys.executable).with_name("bcm")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "bcmanager.cli"]
    argv += ["verify", "--input", str(input_dir), "--output", str(output_dir)]
    if generation is not None:
        argv += ["--generation", generation]
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        again = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        raise AssertionError(
            f"bcm verify exited {done.returncode}:\n$ {' '.join(argv)}\n"
            f"{again.stdout}{again.stderr}\n(--json stderr: {done.stderr[-2000:]})"
        )
    report = json.loads(done.stdout)
    assert report["ok"], done.stdout
    return report


def assert_run_complete(
    input_dir: Path, output_dir: Path, generations: tuple[str | None, ...] = (None,)
) -> list[dict]:
    """The end of a test whose run should be complete: every read file under OUTPUT
    reads to its end (`assert_outputs_whole`), and `bcm verify` passes for each of
    `generations` (None: the reads at OUTPUT's root); returns verify's reports, in
    order. Quarantined files may be missing (verify knows them: `report["quarantined"]`).
    """
    assert_outputs_whole(output_dir)
    return [bcm_verify(input_dir, output_dir, name) for name in generations]


class LegacyDriver:
    """A test engine speaking the legacy protocol: assign, basecall (stand-in), complete.

    Unlike the original engine it survives the manager going away: it remembers an
    unanswered completion and sends it again once the manager is back.
    """

    def __init__(
        self,
        url: str,
        input_dir: Path,
        output_dir: Path,
        engine: str = "drv",
        native: bool = False,
    ) -> None:
        self.url, self.input, self.output, self.engine = url, input_dir, output_dir, engine
        self.native = native  # basecall as `bcm engine` does: Dorado's BAM, split and filed
        self.unreported: list[tuple[str, str]] = []

    def _get(self, path: str, **params: object) -> dict:
        import httpx

        r = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    @contextmanager
    def _keeping_alive(self, job_id: str, lease_s: float) -> Iterator[None]:
        """Keepalives while the job is basecalled, as the original engine sends them: the
        first at once, then a few per lease (a busy machine must not expire the lease
        of a driver that is working)."""
        import threading

        import httpx

        done = threading.Event()

        def beat() -> None:
            wait = 0.0
            while not done.wait(wait):
                wait = max(0.1, lease_s / 4)
                with suppress(httpx.HTTPError):
                    httpx.get(
                        f"{self.url}/keepalive",
                        params={"job_id": job_id, "job_state": "PROCESSING"},
                        timeout=5,
                    )

        beater = threading.Thread(target=beat, daemon=True)
        beater.start()
        try:
            yield
        finally:
            done.set()
            beater.join()

    def run(self, until_finished: bool = True, timeout: float = 60) -> str:
        """Work until the run is finished ('finished') or the manager is gone ('down')."""
        import time

        import httpx

        deadline = time.monotonic() + timeout
        try:
            while self.unreported:
                self._get(
                    "/completed", job_id=self.unreported[0][0], job_state=self.unreported[0][1]
                )
                self.unreported.pop(0)
            while time.monotonic() < deadline:
                job = self._get("/assignwork", engineid=self.engine, batchsize=2)
                if job["batch_size"] == 0:
                    if self._get("/v1/status")["finished"] or not until_finished:
                        return "finished"
                    time.sleep(0.1)
                    continue
                job_input = self.input / job["job_input_dir"]
                job_output = self.output / job["job_output_dir"]
                with self._keeping_alive(job["jobid"], float(job["report_back_interval"])):
                    if self.native:
                        basecall_native(job_input, job_output, int(job["jobid"]), self.input)
                    else:
                        basecall_dir(job_input, job_output)
                self.unreported.append((job["jobid"], "DONE"))
                self._get("/completed", job_id=job["jobid"], job_state="DONE")
                self.unreported.pop()
        except httpx.TransportError:
            return "down"
        raise TimeoutError("the run did not finish in time")


def wait_until(
    predicate: Callable[[], object], timeout: float = 30, what: str = "condition"
) -> None:
    """Poll `predicate` every 0.05 s until it is true; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_for_files(m, n: int, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    """Wait until the manager `m` (conftest's `start_manager`) has found `n` files."""
    wait_until(lambda: m.status()["files_total"] >= n, timeout, "the scan to find the files")
