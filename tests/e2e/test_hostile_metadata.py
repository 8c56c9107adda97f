"""Whole runs of hostile run metadata: a real manager, two real `bcm engine --basecaller
simulated --until-empty` processes, real pod5 in a flat INPUT (issue 22).

(a) The issue as reported: 20 pod5 files of one flow cell and one acquisition, each
with its own protocol run id, all sharing their first 8 hex digits
(`00000000-0000-0000-0000-000000000001`, ...), which once made two outputs of one
batch share a name and lost reads. (b) A flat folder of hostile metadata: several flow
cells (one with `/`, spaces and non-ASCII characters, two that `safe()` makes alike),
empty ids, `..`, one acquisition under several protocol runs.

Each runs as BAM (the default) and with `--emit-fastq`. Then `bcm verify` exits 0,
every output reads to its end when read strictly, no output file holds reads of two
runs, and nothing is written outside OUTPUT (INPUT unchanged, nothing beside them).
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pysam
import pytest

from bcmanager.output.naming import RunIds
from tests.helpers import bcm_verify, wait_until, write_run_pod5

READS_PER_FILE = 3
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
OWN_DIRS = re.compile(r"^(?:TMPOUTPUT|LOGOUTPUT|FAILEDOUTPUT|ASSIGNED)_|^QUARANTINE$|^\.")
ACQUISITION = "3f6c1a0e-9b1d-4c2e-8a7f-5d4e3c2b1a0f"  # random, as MinKNOW's (version 4)


def issue_22() -> dict[str, RunIds]:
    """The issue's run: {INPUT-relative path: run ids} of 20 files."""
    return {
        f"PAK00000_{n:02d}.pod5": RunIds(
            "PAK00000", f"00000000-0000-0000-0000-{n:012d}", ACQUISITION
        )
        for n in range(1, 21)
    }


def hostile() -> dict[str, RunIds]:
    """One flat folder of many runs, named so that the files of a batch collide."""
    shared = [f"00000000-0000-0000-0000-{n:012d}" for n in range(1, 5)]
    return {
        "h01.pod5": RunIds("PAK00000", shared[0], ACQUISITION),
        "h02.pod5": RunIds("PAK00000", shared[1], ACQUISITION),  # one acquisition,
        "h03.pod5": RunIds("PAK00000", shared[2], ACQUISITION),  # several protocol runs
        "h04.pod5": RunIds("PA/K 01ü", shared[0], "acq2"),  # `/`, space, non-ASCII
        "h05.pod5": RunIds("a/b", "run1", "acq1"),  # a/b, a-b, a b: alike once made safe
        "h06.pod5": RunIds("a-b", "run1", "acq1"),
        "h07.pod5": RunIds("a b", "run1", "acq1"),
        "h08.pod5": RunIds("", "", ""),  # empty ids
        "h09.pod5": RunIds("..", "..", ".."),
        "h10.pod5": RunIds("../..", "run1x", "acq1"),
        "h11.pod5": RunIds("PAK00000 ", shared[3], ACQUISITION),  # safe(): PAK00000
        "h12.pod5": RunIds("/", "p/1", "r 1"),
    }


def write_input(inp: Path, runs: dict[str, RunIds]) -> dict[str, RunIds]:
    """The pod5 files of `runs` in INPUT; {read id: its run}."""
    run_of_read = {}
    for seed, (rel, ids) in enumerate(sorted(runs.items()), start=1):
        for read_id in write_run_pod5(inp / rel, ids, READS_PER_FILE, seed):
            run_of_read[read_id] = ids
    return run_of_read


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime)} of every file and link under `folder`."""
    found = {}
    for where, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(where, d))]:
            path = Path(where, name)
            found[path.relative_to(folder).as_posix()] = (
                path.lstat().st_size,
                path.lstat().st_mtime_ns,
            )
    return found


def records_of(path: Path) -> list[str]:
    """The parent read id of every record of a read file, read strictly to its end: BAM
    with pysam's truncation check and every record; gzip decompressed to its end (its
    CRC and length checked) into well-formed 4-line FASTQ records."""
    if path.name.endswith(".bam"):
        assert path.read_bytes()[-len(BGZF_EOF) :] == BGZF_EOF, "no BGZF EOF block"
        with pysam.AlignmentFile(str(path), "rb", check_sq=False, ignore_truncation=False) as bam:
            bam.check_truncation()
            return [
                str(r.get_tag("pi")) if r.has_tag("pi") else str(r.query_name)
                for r in bam.fetch(until_eof=True)
            ]
    if path.name.endswith(".gz"):
        with open(path, "rb") as raw:
            assert raw.read(2) == b"\x1f\x8b", "not gzip"
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    else:
        data = path.read_bytes()
    assert data.endswith(b"\n"), "the last line is not ended"
    lines = data[:-1].split(b"\n")
    assert len(lines) % 4 == 0, f"{len(lines)} lines"
    parents = []
    for at in range(0, len(lines), 4):
        head, seq, plus, qual = lines[at : at + 4]
        assert head.startswith(b"@") and plus.startswith(b"+"), head[:80]
        assert seq and len(seq) == len(qual), head[:80]
        name, *fields = head[1:].decode("utf-8").split("\t")
        tags = {f[:2]: f[5:] for f in fields if f[2:5] == ":Z:"}
        parents.append(tags.get("pi", name.split()[0]))
    return parents


def check_output(inp: Path, out: Path, run_of_read: dict[str, RunIds]) -> None:
    """`bcm verify` passes; every read file reads to its end and holds one run's reads;
    everything under OUTPUT lies inside it, the outputs under safe names."""
    bcm_verify(inp, out)

    root = out.resolve()
    problems, seen = [], set()
    for where, dirs, names in os.walk(out):
        here = Path(where).relative_to(out).parts
        dirs[:] = [d for d in dirs if not (not here and OWN_DIRS.match(d))]
        problems += [f"{'/'.join((*here, d))}: a link" for d in dirs if Path(where, d).is_symlink()]
        for name in names:
            path, rel = Path(where, name), Path(where, name).relative_to(out).as_posix()
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                problems.append(f"{rel}: a link, or outside OUTPUT")
                continue
            if not name.endswith((".bam", ".fastq.gz", ".fastq", ".txt")):
                continue
            if not all(SAFE_NAME.fullmatch(part) for part in rel.split("/")):
                problems.append(f"{rel}: an unsafe name")
            if name.endswith(".txt"):
                continue
            try:
                parents = records_of(path)
            except Exception as exc:  # pysam: OSError, ValueError; gzip: EOFError, ...
                problems.append(f"{rel}: does not read to its end: {type(exc).__name__}: {exc}")
                continue
            runs = {run_of_read.get(p) for p in parents}
            if len(runs) != 1 or None in runs:
                problems.append(f"{rel}: reads of {len(runs)} runs: {sorted(map(str, runs))}")
            seen.update(parents)
    assert not problems, "\n".join(problems)
    assert seen == set(run_of_read), f"{len(set(run_of_read) - seen)} read(s) in no output file"


@pytest.mark.parametrize("fmt", ["bam", "fastq"])
@pytest.mark.parametrize("metadata", [issue_22, hostile], ids=["issue22", "hostile"])
def test_a_whole_run_of_hostile_metadata_is_basecalled_exactly_once(
    run_dirs, start_manager, start_engine, tmp_path: Path, metadata, fmt: str
) -> None:
    inp, out = run_dirs
    run_of_read = write_input(inp, metadata())
    n = len(metadata())
    input_before = tree(inp)
    m = start_manager(inp, out, "--batch-size", "5", "--max-attempts", "2")
    wait_until(lambda: m.status()["files_total"] == n, 20, "the scan")
    flags = ["--until-empty", *(["--emit-fastq"] if fmt == "fastq" else [])]
    engines = [start_engine(m.url, f"gpu{i}", *flags) for i in (1, 2)]
    for engine in engines:
        assert engine.wait(timeout=60) == 0, engine.log.read_text()
    wait_until(lambda: m.status()["finished"], 20, "the run to finish")
    status = m.status()
    assert status["files"] == {"queued": 0, "assigned": 0, "done": n, "quarantined": 0}, status[
        "quarantined"
    ]
    failed = {s: k for s, k in status["jobs"].items() if s != "done" and k}
    logs = "\n".join(e.log.read_text()[-3000:] for e in engines)
    assert not failed, f"batches that did not end well: {failed}\n{logs}"
    assert m.terminate() == 0

    check_output(inp, out, run_of_read)
    assert tree(inp) == input_before, "INPUT changed"
    beside = {p.name for p in tmp_path.iterdir()} - {"input", "output"}
    assert beside == {"manager.log", "engine-gpu1.log", "engine-gpu2.log"}, beside
