"""Read ids as `bcm verify` and the engine's batch check count them.

A pod5's read ids come out of its read table as 16-byte values in numpy arrays (not
Python strings); a read file's (BAM, SAM, FASTQ, gzipped FASTQ, told by content) come
from its primary records: secondary and supplementary records of an aligned read are
other places of the same read, never another copy. Split reads (Dorado's `pi` tag)
count for their parent (`read_copies`).
"""

from __future__ import annotations

import gzip
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ID_DTYPE = np.dtype("S16")  # a UUID's 16 bytes
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UUID_STR = re.compile(_UUID.pattern.decode("ascii"))
_PARENT_TAG = b"pi:Z:"
_SPLIT_TAG = b"sp:i:"
UNSPLIT = -1  # `split_at` of a record that is not a piece of a split read
SPLIT_UNKNOWN = -2  # a piece of a split read without an `sp` tag


def pod5_read_ids(path: str) -> np.ndarray:
    """The read ids of one pod5 file, as 16-byte values."""
    import pod5

    with pod5.Reader(path) as reader:
        return raw_ids(reader)


def pod5_read_count(path: str | Path) -> int:
    """How many reads a pod5 file holds (its read table's rows; no signal is read)."""
    import pod5

    with pod5.Reader(path) as reader:
        return int(reader.num_reads)


def pod5_read_samples(path: str | Path) -> np.ndarray:
    """Each read's samples in a pod5 file, in its read table's order (the `num_samples`
    column alone: no signal is read)."""
    import pod5

    with pod5.Reader(path) as reader:
        table = reader.read_table.read_all()
        return table.column("num_samples").to_numpy().astype(np.int64)


def write_read_id_list(path: str | Path, ids: np.ndarray) -> None:
    """Write read ids (16-byte values) as Dorado's `--read-ids` takes them, one per line,
    atomically: an engine never reads half a list."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(f"{as_uuid(bytes(raw))}\n" for raw in ids), encoding="ascii")
    tmp.replace(target)


def read_id_list(path: str | Path) -> list[str]:
    """A read-id list as Dorado's `--read-ids` takes it: one UUID per line (blank lines
    skipped), in its order, each once. ValueError names the first line that is not one."""
    ids: dict[str, None] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            if not UUID_STR.fullmatch(text):
                raise ValueError(f"{path}, line {number}: not a read id: {text[:60]!r}")
            ids[text.lower()] = None
    return list(ids)


def raw_id_array(ids: Sequence[str]) -> np.ndarray:
    """Read ids (UUID strings) as the sorted 16-byte values the checks compare."""
    return np.unique(np.array([uuid.UUID(i).bytes for i in ids], dtype=ID_DTYPE))


def raw_ids(reader: object) -> np.ndarray:
    try:
        parts = [
            np.frombuffer(
                chunk.buffers()[1], dtype=ID_DTYPE, count=len(chunk), offset=chunk.offset * 16
            )
            for chunk in reader.read_ids_raw.chunks  # type: ignore[attr-defined]
        ]
        return np.concatenate(parts) if parts else np.empty(0, ID_DTYPE)
    except (AttributeError, TypeError, ValueError, IndexError):  # another pod5/arrow version
        ids = [uuid.UUID(str(r)).bytes for r in reader.read_ids]  # type: ignore[attr-defined]
        return np.array(ids, dtype=ID_DTYPE)


@dataclass
class ReadFileScan:
    """The read ids of one read file: arrays over its records with UUID ids."""

    path: str
    fmt: str  # bam, sam, fastq, fastq.gz ("" when unreadable)
    records: int  # all records, UUID ids or not
    bases: int
    own: np.ndarray  # each record's read id
    present: np.ndarray  # the read it stands for: its parent when split, else `own`
    split_at: np.ndarray  # int64: `sp` of a piece, UNSPLIT, or SPLIT_UNKNOWN
    odd: list[str]  # read ids that are not UUIDs (no pod5 has them)
    error: str = ""


class _Ids:
    """Accumulates one file's ids as bytes, then makes the arrays."""

    def __init__(self) -> None:
        self.own = bytearray()
        self.present = bytearray()
        self.split_at: list[int] = []
        self.odd: list[str] = []

    def add(self, rid: str, parent: str | None, sp: int | None) -> None:
        if UUID_STR.fullmatch(rid) and (parent is None or UUID_STR.fullmatch(parent)):
            own = bytes.fromhex(rid.replace("-", ""))
            self.own += own
            if parent is None or parent == rid:
                self.present += own
                self.split_at.append(UNSPLIT)
            else:
                self.present += bytes.fromhex(parent.replace("-", ""))
                self.split_at.append(sp if sp is not None and sp >= 0 else SPLIT_UNKNOWN)
        else:
            self.odd.append(rid)

    def scan(self, path: str, fmt: str, records: int, bases: int, error: str) -> ReadFileScan:
        return ReadFileScan(
            path,
            fmt,
            records,
            bases,
            np.frombuffer(bytes(self.own), dtype=ID_DTYPE),
            np.frombuffer(bytes(self.present), dtype=ID_DTYPE),
            np.array(self.split_at, dtype=np.int64),
            self.odd,
            error,
        )


def detect_read_format(path: str) -> str | None:
    """bam, sam, fastq or fastq.gz from a file's first bytes (empty files are FASTQ)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as fh:
            inner = fh.read(4)
        return "bam" if inner == b"BAM\x01" else "fastq.gz" if inner[:1] in (b"@", b"") else None
    if not head:
        return "fastq"
    if head in (b"@HD\t", b"@SQ\t", b"@RG\t", b"@PG\t", b"@CO\t"):
        return "sam"
    return "fastq" if head.startswith(b"@") else None


def scan_read_file(path: str) -> ReadFileScan:
    """Every primary record of a BAM/SAM/FASTQ(.gz) file: ids, parents, split points, bases."""
    try:
        fmt = detect_read_format(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return _Ids().scan(path, "", 0, 0, f"{type(exc).__name__}: {exc}")
    if fmt is None:
        return _Ids().scan(path, "", 0, 0, "neither BAM, SAM nor FASTQ")
    if fmt in ("bam", "sam"):
        return _scan_alignments(path, fmt)
    return _scan_fastq(path, fmt)


def _scan_alignments(path: str, fmt: str) -> ReadFileScan:
    import pysam

    ids = _Ids()
    records = bases = 0
    error = ""
    try:
        with pysam.AlignmentFile(path, "r", check_sq=False) as handle:
            for segment in handle.fetch(until_eof=True):
                if segment.is_secondary or segment.is_supplementary:
                    continue
                records += 1
                bases += segment.query_length
                parent = segment.get_tag("pi") if segment.has_tag("pi") else None
                sp = segment.get_tag("sp") if parent and segment.has_tag("sp") else None
                ids.add(segment.query_name or "", parent, sp)
    except Exception as exc:  # pysam: OSError, ValueError on a truncated or bad file
        error = f"record {records + 1}: {type(exc).__name__}: {exc}"
    return ids.scan(path, fmt, records, bases, error)


def _scan_fastq(path: str, fmt: str) -> ReadFileScan:
    ids = _Ids()
    records = bases = 0
    error = ""
    opener = gzip.open if fmt == "fastq.gz" else open
    try:
        with opener(path, "rb") as fh:
            lines = iter(fh)
            for header in lines:
                seq = next(lines, None)
                plus = next(lines, None)
                qual = next(lines, None)
                line = 4 * records + 1
                if not header.startswith(b"@"):
                    error = f"line {line}: a record must start with '@'"
                    break
                if qual is None or seq is None or plus is None:
                    error = f"line {line}: record cut short (truncated file?)"
                    break
                if not plus.startswith(b"+"):
                    error = f"line {line + 2}: expected '+' (multi-line FASTQ is not supported)"
                    break
                records += 1
                bases += len(seq.rstrip(b"\r\n"))
                tokens = header[1:].split()
                if not tokens:
                    error = f"line {line}: header without a read id"
                    break
                parent = sp = None
                for token in tokens[1:]:
                    if token.startswith(_PARENT_TAG):
                        parent = token[5:].decode("utf-8", "replace")
                    elif token.startswith(_SPLIT_TAG) and token[5:].isdigit():
                        sp = int(token[5:])
                ids.add(tokens[0].decode("utf-8", "replace"), parent, sp if parent else None)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return ids.scan(path, fmt, records, bases, error)


def read_copies(
    own: np.ndarray, present: np.ndarray, split_at: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(distinct parent reads, how many times each is present) over a set of records.

    A parent is present as often as its unsplit records, plus the record count of its
    most repeated piece (a piece: the parent and `sp`, or the child's own id without it).
    """
    if not len(own):
        return np.empty(0, ID_DTYPE), np.empty(0, np.int64)
    unsplit = split_at == UNSPLIT
    u_ids, u_counts = np.unique(present[unsplit], return_counts=True)
    pieces = ~unsplit
    if pieces.any():
        n = int(pieces.sum())
        second = np.ascontiguousarray(own[pieces]).view(np.uint8).reshape(n, 16).copy()
        sp = split_at[pieces]
        known = sp >= 0
        second[known, :8] = sp[known].astype("<i8").view(np.uint8).reshape(-1, 8)
        second[known, 8:] = 0xFF
        first = np.ascontiguousarray(present[pieces]).view(np.uint8).reshape(n, 16)
        keys = np.ascontiguousarray(np.hstack([first, second])).view("S32").ravel()
        k_ids, k_counts = np.unique(keys, return_counts=True)
        k_parents = k_ids.astype("S32").view(np.uint8).reshape(-1, 32)[:, :16].copy()
        k_parents = k_parents.view(ID_DTYPE).ravel()
        # Keys are sorted, so each parent's pieces are adjacent: take the max per parent.
        starts = np.flatnonzero(np.r_[True, k_parents[1:] != k_parents[:-1]])
        c_ids, c_counts = k_parents[starts], np.maximum.reduceat(k_counts, starts)
    else:
        c_ids, c_counts = np.empty(0, ID_DTYPE), np.empty(0, np.int64)
    parents = np.union1d(u_ids, c_ids).astype(ID_DTYPE)
    copies = np.zeros(len(parents), dtype=np.int64)
    copies[np.searchsorted(parents, u_ids)] += u_counts
    copies[np.searchsorted(parents, c_ids)] += c_counts
    return parents, copies


def as_uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(raw).ljust(16, b"\0")))


def concat_scans(
    scans: Sequence[ReadFileScan],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """own, present, split_at and the index of each record's file, over all scans."""
    if not scans:
        empty = np.empty(0, ID_DTYPE)
        return empty, empty, np.empty(0, np.int64), np.empty(0, np.int32)
    return (
        np.concatenate([s.own for s in scans]),
        np.concatenate([s.present for s in scans]),
        np.concatenate([s.split_at for s in scans]),
        np.concatenate([np.full(len(s.own), i, dtype=np.int32) for i, s in enumerate(scans)]),
    )


def copies_over(scans: Sequence[ReadFileScan]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct parent reads, how many times each is present) over all scans' records."""
    own, present, split_at, _ = concat_scans(scans)
    return read_copies(own, present, split_at)
