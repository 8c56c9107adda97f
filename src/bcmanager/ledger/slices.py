"""The ledger's slices: parts of a large file handed out on their own (`bcmanager.slicing`
has the rules). A file being sliced is `assigned` in the files table for as long as any
of its slices is queued or out; its slices table rows say which reads went where.

Every read of a sliced file is in exactly one slice row at any time: a file starts as
one queued slice of all its reads, and a claim splits a queued slice in two (the part
handed out, the rest still queued). So what is left of a file is its queued slices, and
a rebuilt ledger queues whatever reads no merged slice holds.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from bcmanager.errors import CorruptState
from bcmanager.ledger.rows import FILE_COLS, FileRow, Part, cumulative_samples, file_row
from bcmanager.states import FILE_TRANSITIONS, FileState

if TYPE_CHECKING:
    from bcmanager.ledger.counts import Tally

_F_COLS = ", ".join(f"f.{c}" for c in FILE_COLS.split(", "))
_SLICE_ROWS = (
    f"SELECT {_F_COLS}, s.first, s.count, s.state, s.job_id, s.attempts, s.reason"
    " FROM slices s JOIN files f ON f.id = s.file_id"
)


@dataclass(frozen=True, slots=True)
class SliceRow:
    file_id: int
    first: int
    count: int
    state: FileState
    job_id: int | None
    attempts: int
    reason: str | None

    @property
    def end(self) -> int:
        return self.first + self.count


def _as_file_row(row: tuple, cum: np.ndarray | None) -> FileRow:
    """A slice as the FileRow a job's batch holds: the file's with the slice's reads,
    state, job, attempts and share of the file's bytes (its reads' share of the file's
    samples where `cum` has them, else of its reads)."""
    whole = file_row(row[:10])
    first, count, state, job_id, attempts, reason = row[10:]
    of = whole.reads or count
    if cum is not None and len(cum) != of + 1:
        cum = None  # sizes of another count of reads: not this file's any more
    share = count / of if cum is None else (cum[first + count] - cum[first]) / max(1, cum[of])
    return replace(
        whole,
        size=round(whole.size * share),
        state=FileState(state),
        attempts=attempts,
        job_id=job_id,
        reads=count,
        reason=reason,
        part=Part(first, count, of, cum),
    )


READ_SIZES_KEPT = 16  # files whose read sizes stay in memory (slices go out file by file)


def _in_gens(gens: Iterable[int] | None) -> tuple[str, list[int]]:
    if gens is None:
        return "", []
    ids = [int(g) for g in gens]
    return f" AND f.gen IN ({','.join('?' * len(ids))})", ids


class SliceLedger:
    """The slices half of `Ledger`: its queries and its changes, each with its event."""

    _db: sqlite3.Connection
    _tally: Tally

    # provided by Ledger
    transaction: Callable[[], AbstractContextManager[None]]
    _event: Callable[..., None]
    set_file_state: Callable[..., None]
    files_of_job: Callable[[int], list[FileRow]]
    _read_sizes: OrderedDict[str, np.ndarray | None]

    def _slice_rows(self, rows: Iterable[tuple]) -> list[FileRow]:
        return [_as_file_row(r, self.read_sizes(r[1])) for r in rows]

    def read_sizes(self, path: str) -> np.ndarray | None:
        """Samples before each read of a file and after its last, where the ledger has
        its reads' sizes (learnt when it was found); None where it has not."""
        cache = self._read_sizes
        if path in cache:
            cache.move_to_end(path)
            return cache[path]
        row = self._db.execute("SELECT samples FROM read_sizes WHERE path = ?", (path,)).fetchone()
        cum = cumulative_samples(row[0]) if row else None
        cache[path] = cum
        while len(cache) > READ_SIZES_KEPT:
            cache.popitem(last=False)
        return cum

    # -- queries ----------------------------------------------------------------------

    def has_queued_slices(self) -> bool:
        """Whether any slice waits (one index probe: asked at every claim)."""
        row = self._db.execute(
            "SELECT 1 FROM slices WHERE state = ? LIMIT 1", (FileState.QUEUED.value,)
        ).fetchone()
        return row is not None

    def queued_slice_count(self, gens: Iterable[int] | None = None) -> int:
        """How many slices `queued_slices` would list, without reading them."""
        where, args = _in_gens(gens)
        row = self._db.execute(
            "SELECT count(*) FROM slices s JOIN files f ON f.id = s.file_id"
            f" WHERE s.state = ? AND f.state = ?{where}",
            (FileState.QUEUED.value, FileState.ASSIGNED.value, *args),
        ).fetchone()
        return int(row[0])

    def queued_slices(self, gens: Iterable[int] | None = None) -> list[FileRow]:
        """The queued slices of files still being sliced, oldest file first (generation,
        then discovery order), then in read order."""
        where, args = _in_gens(gens)
        rows = self._db.execute(
            f"{_SLICE_ROWS} WHERE s.state = ? AND f.state = ?{where} ORDER BY f.gen, f.id, s.first",
            (FileState.QUEUED.value, FileState.ASSIGNED.value, *args),
        )
        return self._slice_rows(rows)

    def batch_of_job(self, job_id: int) -> list[FileRow]:
        """What a job holds: its whole files, or its slice (`FileRow.part`)."""
        return self.files_of_job(job_id) + self.slices_of_job(job_id)

    def slices_of_job(self, job_id: int) -> list[FileRow]:
        rows = self._db.execute(
            f"{_SLICE_ROWS} WHERE s.job_id = ? ORDER BY f.id, s.first", (job_id,)
        )
        return self._slice_rows(rows)

    def slices_of_file(self, file_id: int) -> list[SliceRow]:
        rows = self._db.execute(
            "SELECT file_id, first, count, state, job_id, attempts, reason FROM slices"
            " WHERE file_id = ? ORDER BY first",
            (file_id,),
        )
        return [SliceRow(f, a, n, FileState(s), j, t, r) for f, a, n, s, j, t, r in rows]

    def sliced_files(self, states: Iterable[FileState] | None = None) -> Iterator[FileRow]:
        """Files with slices (in the states given), each once."""
        where, args = "", []
        if states is not None:
            values = [s.value for s in states]
            where, args = f" WHERE f.state IN ({','.join('?' * len(values))})", values
        rows = self._db.execute(
            f"SELECT {_F_COLS} FROM files f WHERE f.id IN (SELECT file_id FROM slices){where}"
            " ORDER BY f.id",
            args,
        )
        for r in rows:
            yield file_row(r)

    def slicing_progress(self, limit: int = 50) -> list[dict[str, object]]:
        """The files being sliced (a slice of theirs queued or out), oldest first, each
        with its reads merged, out with engines and queued (and its slices so far)."""
        ids = self._db.execute(
            "SELECT DISTINCT file_id FROM slices WHERE state IN (?, ?) ORDER BY file_id LIMIT ?",
            (FileState.QUEUED.value, FileState.ASSIGNED.value, limit),
        ).fetchall()
        out: list[dict[str, object]] = []
        for (file_id,) in ids:
            row = self._db.execute(
                "SELECT f.path, f.gen, f.reads, f.state, count(*),"
                " coalesce(sum(CASE s.state WHEN 'done' THEN s.count END), 0),"
                " coalesce(sum(CASE s.state WHEN 'assigned' THEN s.count END), 0),"
                " coalesce(sum(CASE s.state WHEN 'queued' THEN s.count END), 0)"
                " FROM slices s JOIN files f ON f.id = s.file_id WHERE s.file_id = ?",
                (file_id,),
            ).fetchone()
            path, gen, reads, state, n, done, running, queued = row
            if state != FileState.ASSIGNED.value:
                continue  # quarantined: its queued slices are not handed out
            out.append(
                {
                    "path": path,
                    "gen": gen,
                    "reads": reads,
                    "slices": n,
                    "reads_done": done,
                    "reads_out": running,
                    "reads_queued": queued,
                }
            )
        return out

    # -- changes ----------------------------------------------------------------------

    def add_slice(
        self,
        file_id: int,
        first: int,
        count: int,
        state: FileState,
        now: float,
        job_id: int | None = None,
    ) -> None:
        """A slice row as it is (a file starts as one queued slice; a rebuild adds the
        slices the layout shows)."""
        if count <= 0 or first < 0:
            raise CorruptState(f"file {file_id}: a slice of {count} reads from {first}")
        with self.transaction():
            self._db.execute(
                "INSERT INTO slices(file_id, first, count, state, job_id) VALUES (?, ?, ?, ?, ?)",
                (file_id, first, count, state.value, job_id),
            )
            self._event(now, "slice", job_id, None, state, count, f"file {file_id} from {first}")

    def start_slicing(self, file: FileRow, reads: int, now: float) -> None:
        """A queued file is handed out in slices from now on: it turns assigned, and all
        its reads are one queued slice."""
        if file.state is not FileState.QUEUED or reads <= 0:
            raise CorruptState(f"{file.path}: a {file.state} file of {reads} reads")
        with self.transaction():
            self._db.execute("UPDATE files SET reads = ? WHERE id = ?", (reads, file.id))
            self.set_file_state(
                [file.id], FileState.QUEUED, FileState.ASSIGNED, now, reason="sliced"
            )
            self.add_slice(file.id, 0, reads, FileState.QUEUED, now)

    def take_slice(self, file: FileRow, first: int, count: int, job_id: int, now: float) -> FileRow:
        """Hand out reads `first` to `first + count - 1` of a sliced file to `job_id`: they
        must lie in one queued slice, which is cut into the part handed out and what is
        left of it before and after (still queued). Returns the slice handed out."""
        end = first + count
        with self.transaction():
            row = self._db.execute(
                "SELECT first, count, attempts FROM slices WHERE file_id = ? AND state = ?"
                " AND first <= ? AND first + count >= ? ORDER BY first DESC LIMIT 1",
                (file.id, FileState.QUEUED.value, first, end),
            ).fetchone()
            if row is None or count <= 0:
                raise CorruptState(f"{file.path}: reads {first}-{end - 1} are not all queued")
            q_first, q_count, attempts = row
            self._db.execute(
                "DELETE FROM slices WHERE file_id = ? AND first = ?", (file.id, q_first)
            )
            rows = [(first, count, FileState.ASSIGNED.value, job_id)]
            if q_first < first:
                rows.append((q_first, first - q_first, FileState.QUEUED.value, None))
            if end < q_first + q_count:
                rows.append((end, q_first + q_count - end, FileState.QUEUED.value, None))
            self._db.executemany(  # the reads' failures so far stay theirs
                "INSERT INTO slices(file_id, first, count, state, job_id, attempts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(file.id, *r, attempts) for r in rows],
            )
            detail = f"{file.path} reads {first}-{end - 1}"
            self._event(now, "slice", job_id, FileState.QUEUED, FileState.ASSIGNED, count, detail)
        return next(p for p in self.slices_of_job(job_id) if p.part and p.part.first == first)

    def set_slice_state(
        self,
        piece: FileRow,
        from_state: FileState,
        to_state: FileState,
        now: float,
        *,
        reason: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        """The one function that changes a slice's state; writes its event."""
        if to_state not in FILE_TRANSITIONS[from_state]:
            raise CorruptState(f"slice transition {from_state} -> {to_state} is not allowed")
        part = piece.part
        assert part is not None
        with self.transaction():
            cur = self._db.execute(
                "UPDATE slices SET state = ?, reason = ?, attempts = attempts + ?"
                " WHERE file_id = ? AND first = ? AND state = ?",
                (to_state.value, reason, int(count_attempt), piece.id, part.first, from_state),
            )
            if cur.rowcount != 1:
                raise CorruptState(
                    f"{piece.path}: the slice from read {part.first} was not {from_state}"
                )
            self._event(now, "slice", piece.job_id, from_state, to_state, part.count, reason)

    def quarantine_queued_slices(self, file_id: int, reason: str, now: float) -> None:
        """Its file was quarantined: its slices still queued are not handed out."""
        with self.transaction():
            cur = self._db.execute(
                "UPDATE slices SET state = ?, reason = ? WHERE file_id = ? AND state = ?",
                (FileState.QUARANTINED.value, reason, file_id, FileState.QUEUED.value),
            )
            if cur.rowcount:
                self._event(
                    now,
                    "slice",
                    None,
                    FileState.QUEUED,
                    FileState.QUARANTINED,
                    cur.rowcount,
                    reason,
                )
