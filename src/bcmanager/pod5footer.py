"""Whether a pod5 file is whole, from a few small reads of its ends (no pod5 library).

A pod5 file is laid out as (the pod5 format's DESIGN, "Combined file layout")::

    <signature 8> <section marker 16>
    <embedded Arrow file> <pad to 8> <section marker 16>      (signal, run info, reads)
    ...
    "FOOTER\\0\\0" <footer flatbuffer> <footer length: int64 LE> <section marker 16> <signature 8>

The writer puts the footer down when it closes the file, so a file whose footer is
whole is complete the instant it is seen, be it written in place or renamed into
INPUT. A half-copied file is not: its tail is missing or, where a copy wrote out of
order, the section markers that the footer's table entries point to are not all in
place. The section marker is a random UUID per file, so zeros never pass for one.

The check costs an `open` and three or four small `pread`s: the head, the tail (which
holds the footer), and the marker after each embedded table.

`run_ids` reads a file's run (flow cell, protocol run and acquisition ids) the same way:
the footer, then the run information table alone (a few KB of Arrow, parsed only when
its bytes name the run columns, and once for all the files of a run: their tables differ
only by the file's identifier), a fiftieth of what opening the file with the pod5
library costs.
"""

from __future__ import annotations

import os
import struct

SIGNATURE = b"\x8bPOD\r\n\x1a\n"
FOOTER_MAGIC = b"FOOTER\x00\x00"
MARKER_LEN = 16
HEAD_LEN = len(SIGNATURE) + MARKER_LEN
# signature + marker + footer length: what follows the footer flatbuffer
TRAILER_LEN = len(SIGNATURE) + MARKER_LEN + 8
TAIL_READ = 4096  # a footer is a few hundred bytes: one read usually holds it all
MAX_FOOTER = 1 << 20
_FOOTER_CONTENTS = 3  # Footer { file_identifier, software, pod5_version, contents }
_EMBEDDED_OFFSET, _EMBEDDED_LENGTH = 0, 1  # EmbeddedFile { offset, length, format, ... }


class _Malformed(Exception):
    """A flatbuffer offset points outside the footer: not a whole footer."""


def footer_is_whole(path: str | os.PathLike[str], size: int | None = None) -> bool:
    """True when `path` is a complete pod5 file by its footer (see the module doc)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        end = os.fstat(fd).st_size if size is None else size
        return _whole(fd, end)
    except (OSError, _Malformed, struct.error):
        return False
    finally:
        os.close(fd)


_RUN_COLUMNS = ("flow_cell_id", "protocol_run_id", "acquisition_id")
_FOOTER_FILE_ID = 0  # Footer { file_identifier, ... }
_RUN_TABLES_KEPT = 64
# run tables parsed, by their bytes less the file identifier: (is run table, ids)
_run_tables: dict[bytes, tuple[bool, tuple[str, str, str] | None]] = {}


def run_ids(path: str | os.PathLike[str]) -> tuple[str, str, str] | None:
    """(flow cell, protocol run, acquisition) ids of the one run a whole pod5 file holds,
    read from its run information table alone; None when the file is not whole, holds
    several runs (a merged file: ask the pod5 library), or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        found = _whole_footer(fd, os.fstat(fd).st_size)
        if found is None:
            return None
        footer = found[0]
        file_id = _string(footer, _FOOTER_FILE_ID)
        for offset, length in sorted(_embedded_tables(footer), key=lambda t: t[1]):
            data = os.pread(fd, length, offset)  # the run table is the smallest, or next
            if not all(c.encode() in data for c in _RUN_COLUMNS):
                continue  # its schema names no run columns: the reads or the signal table
            is_run_table, ids = _run_table_of_file(data, file_id)
            if is_run_table:
                return ids
        return None
    except (OSError, _Malformed, struct.error, ValueError):
        return None
    finally:
        os.close(fd)


def _run_table_of_file(data: bytes, file_id: bytes) -> tuple[bool, tuple[str, str, str] | None]:
    """`_run_table`, parsed once a run: the files of a run hold the same table but for
    the file's identifier in its metadata, so the table less that identifier is the key
    (a few KB each, the last _RUN_TABLES_KEPT kept). A table that raises is not kept; a
    kept answer is used only where the file's table holds its ids too."""
    key = data.replace(file_id, b"") if file_id else data
    known = _run_tables.get(key)
    if known is not None and (known[1] is None or all(i.encode() in data for i in known[1])):
        return known
    known = _run_table(data)
    if len(_run_tables) >= _RUN_TABLES_KEPT:
        _run_tables.pop(next(iter(_run_tables)), None)
    _run_tables[key] = known
    return known


def _run_table(data: bytes) -> tuple[bool, tuple[str, str, str] | None]:
    """Whether an embedded Arrow file is the run information table, and the run ids of
    its only row (None when it has several)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        reader = ipc.open_file(pa.py_buffer(data))
    except pa.ArrowInvalid as exc:
        raise ValueError(str(exc)) from exc
    names = reader.schema.names
    if "read_id" in names or not all(c in names for c in _RUN_COLUMNS):
        return False, None  # the reads or the signal table
    if reader.num_record_batches != 1:
        return True, None  # not one row (MinKNOW writes one batch)
    batch = reader.get_batch(0)
    if batch.num_rows != 1:
        return True, None
    flow_cell, protocol, acquisition = (
        str(batch.column(names.index(c))[0].as_py() or "") for c in _RUN_COLUMNS
    )
    return True, (flow_cell, protocol, acquisition)


def _whole(fd: int, end: int) -> bool:
    found = _whole_footer(fd, end)
    if found is None:
        return False
    footer, magic_start, marker = found
    tables = _embedded_tables(footer)
    return bool(tables) and all(
        _marker_after(fd, offset, length, magic_start, marker) for offset, length in tables
    )


def _whole_footer(fd: int, end: int) -> tuple[bytes, int, bytes] | None:
    """(footer flatbuffer, where its magic starts, the section marker) of a file whose
    head, tail and footer frame are whole; None otherwise."""
    if end < HEAD_LEN + len(FOOTER_MAGIC) + TRAILER_LEN:
        return None
    head = os.pread(fd, HEAD_LEN, 0)
    if head[:8] != SIGNATURE:
        return None
    marker = head[8:]
    tail_start = max(0, end - TAIL_READ)
    tail = os.pread(fd, end - tail_start, tail_start)
    if len(tail) != end - tail_start or tail[-8:] != SIGNATURE or tail[-24:-8] != marker:
        return None
    (footer_len,) = struct.unpack_from("<q", tail, len(tail) - TRAILER_LEN)
    footer_start = end - TRAILER_LEN - footer_len
    magic_start = footer_start - len(FOOTER_MAGIC)
    if not 0 < footer_len <= MAX_FOOTER or magic_start - MARKER_LEN < HEAD_LEN:
        return None
    if magic_start - MARKER_LEN < tail_start:  # a large footer: read all of it
        tail_start = magic_start - MARKER_LEN
        tail = os.pread(fd, end - tail_start, tail_start)
    at = magic_start - tail_start
    if tail[at : at + 8] != FOOTER_MAGIC or tail[at - MARKER_LEN : at] != marker:
        return None
    return tail[at + 8 : at + 8 + footer_len], magic_start, marker


def _marker_after(fd: int, offset: int, length: int, limit: int, marker: bytes) -> bool:
    """Each embedded table is followed (after padding to 8 bytes) by the section marker."""
    after = (offset + length + 7) // 8 * 8
    if offset < HEAD_LEN or length <= 0 or after + MARKER_LEN > limit:
        return False
    return os.pread(fd, MARKER_LEN, after) == marker


def _embedded_tables(footer: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each embedded file the footer flatbuffer lists."""
    root = _at(_U32, footer, 0)
    vector = _field(footer, root, _FOOTER_CONTENTS)
    if vector is None:
        return []
    vector += _at(_U32, footer, vector)
    out = []
    for i in range(_at(_U32, footer, vector)):
        slot = vector + 4 + 4 * i
        table = slot + _at(_U32, footer, slot)
        offset = _field(footer, table, _EMBEDDED_OFFSET)
        length = _field(footer, table, _EMBEDDED_LENGTH)
        out.append(
            (
                0 if offset is None else _at(_I64, footer, offset),
                0 if length is None else _at(_I64, footer, length),
            )
        )
    return out


def _string(footer: bytes, index: int) -> bytes:
    """String field `index` of the footer's root table (b"" when absent)."""
    root = _at(_U32, footer, 0)
    at = _field(footer, root, index)
    if at is None:
        return b""
    at += _at(_U32, footer, at)
    length = _at(_U32, footer, at)
    if at + 4 + length > len(footer):
        raise _Malformed(at)
    return footer[at + 4 : at + 4 + length]


def _field(buf: bytes, table: int, index: int) -> int | None:
    """Where field `index` of the flatbuffer table at `table` sits, None when absent."""
    vtable = table - _at(_I32, buf, table)
    slot = 4 + 2 * index
    if slot + 2 > _at(_U16, buf, vtable):
        return None
    rel = _at(_U16, buf, vtable + slot)
    return table + rel if rel else None


_U16, _U32, _I32, _I64 = (struct.Struct(f) for f in ("<H", "<I", "<i", "<q"))


def _at(kind: struct.Struct, buf: bytes, pos: int) -> int:
    """One value at `pos`; struct itself refuses reads past the end, and negative offsets
    (which struct would count from the end) are refused here."""
    if pos < 0:
        raise _Malformed(pos)
    return kind.unpack_from(buf, pos)[0]
