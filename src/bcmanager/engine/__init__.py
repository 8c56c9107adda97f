"""The engine: claims batches over the v1 API and keeps one basecaller busy.

- `loop`: the `Engine`: the claim loop, heartbeats, the delivery thread (a basecalled
  batch filed and reported while the next one basecalls), `stop()` on SIGTERM.
- `client`: `ManagerClient`, every HTTP call to the manager (claim, heartbeat,
  complete), retried with backoff; 409/404/4xx answers raised as its own exceptions.
- `run`: one basecaller run of one batch (`BasecallerRun`): the subprocess, its clock
  (`BatchClock`), its output (`output_bytes`, `last_output_age`).
- `filing`: the glue to `bcmanager.output`: a basecalled batch filed and checked.
"""

from bcmanager.engine.client import (
    MAX_BACKOFF_S,
    JobLost,
    JobUnknown,
    LeaseLost,
    ManagerClient,
    ManagerError,
    ManagerGone,
    ManagerRefused,
    ManagerUnreachable,
)
from bcmanager.engine.filing import DEFAULT_MIN_QSCORE
from bcmanager.engine.loop import Batch, Engine, EngineConfig, JobResult
from bcmanager.engine.run import (
    BASECALLER_LOG,
    KILL_GRACE_S,
    READY_POLL_S,
    BasecallerRun,
    BatchClock,
    last_output_age,
    output_bytes,
)

__all__ = [
    "BASECALLER_LOG",
    "DEFAULT_MIN_QSCORE",
    "KILL_GRACE_S",
    "MAX_BACKOFF_S",
    "READY_POLL_S",
    "BasecallerRun",
    "Batch",
    "BatchClock",
    "Engine",
    "EngineConfig",
    "JobLost",
    "JobResult",
    "JobUnknown",
    "LeaseLost",
    "ManagerClient",
    "ManagerError",
    "ManagerGone",
    "ManagerRefused",
    "ManagerUnreachable",
    "last_output_age",
    "output_bytes",
]
