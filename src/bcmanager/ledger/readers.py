"""Ledger-file work done on connections other than the `Ledger`'s own: the queries that
`runstats.LedgerReader` (read-only) shares with the ledger, and the background WAL
checkpoint."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from bcmanager.ledger.rows import JOB_COLS
from bcmanager.states import LIVE_JOB_STATES, FileState

_LIVE = ", ".join(f"'{state.value}'" for state in sorted(LIVE_JOB_STATES))
LIVE_JOBS_SQL = f"SELECT {JOB_COLS} FROM jobs WHERE state IN ({_LIVE}) ORDER BY id"


def run_table(query: Callable[[str], list]) -> list[dict[str, object]]:
    """Each run with its end and its live generation's files by state, from `query`
    (SQL -> rows), so that a read-only connection can ask it as well as the ledger's own."""
    out: dict[str, dict[str, object]] = {}
    for name, first_seen, ended, summary in query(
        "SELECT name, first_seen, ended, summary FROM runs ORDER BY first_seen, name"
    ):
        out[name] = {
            "run": name,
            "first_seen": first_seen,
            "ended": ended,
            "summary": summary,
            "files": {s.value: 0 for s in FileState},
        }
    for run, state, n in query(
        "SELECT run, state, count(*) FROM files WHERE gen = 0 GROUP BY run, state"
    ):
        if run in out:
            out[run]["files"][state] = n  # type: ignore[index]
    return list(out.values())


def checkpoint(path: Path | str) -> tuple[int, int]:
    """Copy the write-ahead log into the ledger file, on a connection of its own, without
    blocking writers (SQLite's PASSIVE checkpoint); (frames in the log, frames copied).

    With the ledger's `checkpoint_elsewhere`, this is the only checkpoint: SQLite's own
    runs in the committing call and fsyncs the file, which on a busy disk is a stall of
    whatever thread committed (the event loop, for a claim)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        _busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames), int(copied)
    finally:
        db.close()
