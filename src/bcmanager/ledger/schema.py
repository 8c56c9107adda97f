"""The ledger file's format: its tables, their version, the migration from older
versions, and how a connection to it is set up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model TEXT,
    options TEXT NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    job_id INTEGER,
    reads INTEGER,
    samples INTEGER,
    reason TEXT,
    run TEXT,
    mtime REAL,
    discovered_at REAL NOT NULL,
    done_at REAL,
    gen INTEGER NOT NULL DEFAULT 0,
    UNIQUE (path, gen)
);
CREATE INDEX IF NOT EXISTS files_by_state ON files(state, gen, id);
CREATE INDEX IF NOT EXISTS files_by_job ON files(job_id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    engine TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT NOT NULL,
    api TEXT NOT NULL,
    lease_s REAL NOT NULL,
    lease_expires REAL NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    ended REAL,
    n_files INTEGER NOT NULL,
    reason TEXT,
    merge_plan TEXT,
    gen INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, lease_expires);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    ended REAL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS yields (
    gen INTEGER NOT NULL DEFAULT 0,
    run TEXT NOT NULL,
    barcode TEXT NOT NULL,
    totals TEXT NOT NULL,
    PRIMARY KEY (gen, run, barcode)
);
CREATE TABLE IF NOT EXISTS slices (
    file_id INTEGER NOT NULL,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL,
    job_id INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    PRIMARY KEY (file_id, first)
);
CREATE INDEX IF NOT EXISTS slices_by_state ON slices(state);
CREATE TABLE IF NOT EXISTS read_sizes (path TEXT PRIMARY KEY, samples BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS slices_by_job ON slices(job_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    entity TEXT NOT NULL,
    job_id INTEGER,
    from_state TEXT,
    to_state TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    detail TEXT
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """The ledger's own connection: autocommit (transactions are explicit), WAL."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives any process crash (kill -9); only power loss
    # can drop the last commits, which the layout-based rebuild then covers.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


# A new ledger is unsettled until a start has looked at OUTPUT for a run it must be
# rebuilt from (and, if there is one, rebuilt it to the end): a start that dies midway
# (a full disk, kill -9) leaves the mark, and the next start rebuilds again, resuming.
UNSETTLED = "unsettled"


def create_or_migrate(db: sqlite3.Connection) -> None:
    """Bring the file to the current schema (creating what is missing); inside the
    caller's transaction. A ledger with no schema yet is created unsettled."""
    new = (
        not _columns(db, "meta")
        or not db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone()
    )
    migrate(db)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    if new:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')", (UNSETTLED,))


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _create_statement(table: str) -> str:
    return SCHEMA[SCHEMA.index(f"CREATE TABLE IF NOT EXISTS {table}") :].split(";")[0]


def migrate(db: sqlite3.Connection) -> None:
    """Bring a ledger of schema 1 (one state per file, before generations) to schema 2:
    every file row and job becomes the live generation's (id 0)."""
    files = _columns(db, "files")
    if not files or "gen" in files:
        return
    db.execute("ALTER TABLE files RENAME TO files_v1")
    db.execute("DROP INDEX IF EXISTS files_by_state")
    db.execute("DROP INDEX IF EXISTS files_by_job")
    db.execute(_create_statement("files"))
    cols = "id, path, size, state, attempts, job_id, reads, samples, reason, run, mtime,"
    cols += " discovered_at, done_at"
    db.execute(f"INSERT INTO files({cols}, gen) SELECT {cols}, 0 FROM files_v1")
    db.execute("DROP TABLE files_v1")
    db.execute("ALTER TABLE jobs ADD COLUMN gen INTEGER NOT NULL DEFAULT 0")
    if _columns(db, "yields"):
        db.execute("ALTER TABLE yields RENAME TO yields_v1")
        db.execute(_create_statement("yields"))
        db.execute("INSERT INTO yields(gen, run, barcode, totals) SELECT 0, * FROM yields_v1")
        db.execute("DROP TABLE yields_v1")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
