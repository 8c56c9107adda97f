"""The ledger: bcmanager's durable truth, one SQLite file in WAL mode.

It records every input file (path relative to INPUT, size, state, attempts, job),
every job (engine, state, lease, fencing token, merge plan) and an append-only
event log. Two functions change states, `Ledger.set_file_state` and
`Ledger.set_job_state`; each checks the transition against `bcmanager.states` and
writes an event in the same transaction. Time is always passed in (`now`), never
read here.

Modules:
- `store`: `Ledger`, its transactions and every change (with its event).
- `queries`: `LedgerQueries`, the Ledger's reads (files, jobs, runs, yields, events).
- `counts`: `Tally`, the in-memory file counts and running leases, undone on rollback.
- `rows`: row types (`NewFile`, `FileRow`, `JobRow`, `Event`) and converters (`job_row`).
- `slices`: `SliceLedger`, the slices of large files handed out in parts.
- `schema`: the tables, their version, the migration from schema 1, connection setup.
- `readers`: what other connections share: `run_table`, `LIVE_JOBS_SQL`, `checkpoint`.
"""

from bcmanager.ledger.counts import Tally
from bcmanager.ledger.queries import LedgerQueries
from bcmanager.ledger.readers import LIVE_JOBS_SQL, checkpoint, run_table
from bcmanager.ledger.rows import Event, FileRow, JobRow, NewFile, Part, file_row, job_row
from bcmanager.ledger.schema import SCHEMA_VERSION
from bcmanager.ledger.slices import SliceRow
from bcmanager.ledger.store import Ledger

__all__ = [
    "LIVE_JOBS_SQL",
    "SCHEMA_VERSION",
    "Event",
    "FileRow",
    "JobRow",
    "Ledger",
    "LedgerQueries",
    "NewFile",
    "Part",
    "SliceRow",
    "Tally",
    "checkpoint",
    "file_row",
    "job_row",
    "run_table",
]
