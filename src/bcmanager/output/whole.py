"""Whether a finished job's outputs are whole, told cheaply: what the manager checks
before it renames them into OUTPUT (`merge_problem`), on its request path, reading a
few bytes of each file and never a record. The engine's own check
(`bcmanager.output.check`) reads every record before it reports DONE; this one catches
what happened to the files since (a copy cut short, a disk that lost a write).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# htslib's empty BGZF block that ends every whole BAM (the SAM specification, 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
GZIP_MAGIC = b"\x1f\x8b"
GZIP_SMALLEST = 20  # header (10) + an empty deflate block (2) + trailer (8)


def output_problem(path: Path) -> str | None:
    """What the manager checks of an output before it renames it into OUTPUT, cheaply
    (no record is read, on the manager's request path): a BAM ends with its EOF block,
    a gzip file starts as one and is not shorter than the smallest; None when fine.
    The engine's `check_batch` reads every record; this catches what went wrong since."""
    name = path.name
    if not name.endswith((".bam", ".gz")):
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(max(0, size - len(BGZF_EOF)))
            tail = fh.read()
    except OSError as exc:
        return f"{name}: {exc.strerror or exc}"
    if name.endswith(".bam") and tail != BGZF_EOF:
        return f"{name}: no BGZF EOF block at its end ({size} bytes): truncated or with stale bytes"
    if name.endswith(".gz") and (head != GZIP_MAGIC or size < GZIP_SMALLEST):
        return f"{name}: not a whole gzip file ({size} bytes)"
    return None


def merge_problem(tmp: Path, sources: Sequence[str]) -> str | None:
    """The first output of a finished job (`sources`, relative to its folder `tmp`) that
    must not be merged, and why; None when every one may."""
    for rel in sources:
        problem = output_problem(tmp / rel)
        if problem is not None:
            return problem
    return None
