"""A basecaller's output read back as records: BAM (pysam) or FASTQ with tags.

Dorado writes unaligned BAM with its read tags (`qs`, `ch`, `st`, `fn`, `pi`, ...), or
with `--emit-fastq` FASTQ whose header carries some of those tags as SAM-style
`key:type:value` fields after the read id, separated by tabs. The format of a file is
told by its content, not its name: the dorado adapter sends stdout to a fixed name.

Shared by the basecallers (which write records) and `bcmanager.output` (which files
them), so that neither imports the other.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pysam

NATIVE_DIR = "basecalls"  # where a native basecaller writes, under the job's output folder

FileFormat = Literal["bam", "sam", "fastq"]
TagValue = Any  # int | float | str | array; what pysam gives for a tag
READ_SUFFIXES = (".bam", ".sam", ".fastq", ".fq", ".fastq.gz", ".fq.gz")
SAM_HEADER_STARTS = (b"@HD\t", b"@SQ\t", b"@RG\t", b"@PG\t", b"@CO\t")  # FASTQ starts "@" too
_BARCODE = re.compile(r"(?:^|_)(barcode\d+)$")


@dataclass
class Record:
    """One basecalled read: its id, bases, qualities and read tags."""

    read_id: str
    sequence: str
    quality: str
    tags: dict[str, TagValue] = field(default_factory=dict)
    segment: pysam.AlignedSegment | None = None  # the BAM record itself, when from BAM

    @property
    def is_primary(self) -> bool:
        """Whether this is the read's record that counts: not a secondary or supplementary
        alignment (FASTQ records always are)."""
        seg = self.segment
        return seg is None or not (seg.is_secondary or seg.is_supplementary)

    @property
    def parent_read_id(self) -> str:
        """The pod5 read this record came from (`pi` on a split read, else itself)."""
        return str(self.tags.get("pi") or self.read_id)


def detect_format(path: Path) -> FileFormat | None:
    """BAM, SAM or FASTQ (plain or gzipped) from a file's first bytes; None otherwise."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == b"\x1f\x8b":
        with gzip.open(path, "rb") as fh:
            head = fh.read(4)
        if head == b"BAM\x01":
            return "bam"
    if head.startswith(b"@"):
        return "sam" if head[:4] in SAM_HEADER_STARTS else "fastq"
    return None


def read_files(folder: Path) -> list[Path]:
    """The read files under a folder (recursively), sorted; hidden and partial ones skipped."""
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name.endswith(READ_SUFFIXES)
    ]
    return sorted(found)


def open_alignments(path: Path) -> pysam.AlignmentFile:
    """A BAM or SAM file opened for reading; unaligned, so no @SQ is needed."""
    return pysam.AlignmentFile(str(path), "r", check_sq=False)


def iter_alignment_records(
    handle: pysam.AlignmentFile, primary_only: bool = True
) -> Iterator[Record]:
    """Records of an open BAM/SAM: the primary ones (a read's one record that counts), or
    with `primary_only` False every record, secondary and supplementary alignments too
    (what filing keeps: an aligned output holds them, as Dorado and minimap2 write it)."""
    for segment in handle.fetch(until_eof=True):
        if primary_only and (segment.is_secondary or segment.is_supplementary):
            continue
        yield Record(
            read_id=segment.query_name or "",
            sequence=segment.query_sequence or "",
            quality=pysam.qualities_to_qualitystring(segment.query_qualities)
            if segment.query_qualities is not None
            else "",
            tags=dict(segment.get_tags()),
            segment=segment,
        )


def iter_fastq_records(path: Path) -> Iterator[Record]:
    """Records of a FASTQ file (plain or gzipped) with the tags of its headers."""
    with pysam.FastxFile(str(path)) as fastx:
        for entry in fastx:
            yield Record(
                read_id=entry.name,
                sequence=entry.sequence or "",
                quality=entry.quality or "",
                tags=parse_tags(entry.comment or ""),
            )


def parse_tags(comment: str) -> dict[str, TagValue]:
    """`key:type:value` fields of a FASTQ header; tab-separated as Dorado writes them.

    Without a tab, fields are split on whitespace (the original stand-ins' `ns:i:..`).
    Fields that are not tags (e.g. `runid=...` of older tools) are ignored.
    """
    fields = comment.split("\t") if "\t" in comment else comment.split()
    tags: dict[str, TagValue] = {}
    for fld in fields:
        parts = fld.split(":", 2)
        if len(parts) != 3 or len(parts[0]) != 2:
            continue
        key, kind, value = parts
        try:
            tags[key] = int(value) if kind == "i" else float(value) if kind == "f" else value
        except ValueError:
            continue
    return tags


def format_tags(tags: Mapping[str, TagValue]) -> str:
    """Tags as a FASTQ header comment: tab-separated `key:type:value` (arrays left out)."""
    fields = []
    for key, value in tags.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            fields.append(f"{key}:i:{value}")
        elif isinstance(value, float):
            fields.append(f"{key}:f:{value:g}")
        elif isinstance(value, str):
            fields.append(f"{key}:Z:{value}")
    return "\t".join(fields)


def fastq_text(record: Record) -> str:
    """One FASTQ record (four lines) with its tags in the header."""
    comment = format_tags(record.tags)
    header = f"@{record.read_id}\t{comment}" if comment else f"@{record.read_id}"
    return f"{header}\n{record.sequence}\n+\n{record.quality}\n"


def mean_qscore(quality: str) -> float:
    """Mean qscore of a quality string as Dorado computes it: from the mean error rate."""
    if not quality:
        return 0.0
    mean_error = sum(10 ** (-(ord(c) - 33) / 10) for c in quality) / len(quality)
    return -10 * math.log10(mean_error)


def qscore_of(record: Record) -> float:
    """The record's `qs` tag, or the mean of its qualities when it has none."""
    value = record.tags.get("qs")
    return float(value) if value is not None else mean_qscore(record.quality)


def barcode_of(record: Record) -> str | None:
    """The read's barcode name (`barcode01`), from `BC`, else the FASTQ `SM` or `RG` tag.

    Dorado's `BC` is `<kit>_barcodeNN`; it is absent on unclassified reads.
    """
    for key in ("BC", "SM", "RG"):
        value = record.tags.get(key)
        if isinstance(value, str):
            found = _BARCODE.search(value)
            if found:
                return found.group(1)
    return None


def barcode_kit_of(record: Record) -> str | None:
    """The barcode kit of a classified read: `BC` without its `_barcodeNN` suffix."""
    value = record.tags.get("BC")
    if isinstance(value, str):
        found = _BARCODE.search(value)
        if found and found.start() > 0:
            return value[: found.start()]
    return None
