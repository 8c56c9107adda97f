"""The manager's state as the API shows it: `/v1/status`, a job, an engine, `/heartbeat`.

Counts are read under the manager's lock; the heavy reads (thousands of running jobs,
per-run counts over a million rows) go through a read-only ledger connection without
it, a step at a time (`bcmanager.stepwise`), so a status view holds up no claim.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from bcmanager import scheduler
from bcmanager.generations import Generation
from bcmanager.ledger import JobRow, job_row
from bcmanager.reports import Timing
from bcmanager.roster import EngineSeen
from bcmanager.runstats import LedgerReader
from bcmanager.states import FileState, JobState
from bcmanager.stepwise import Steps, blocking, mapped

if TYPE_CHECKING:
    from bcmanager.manager import Manager

RUNS_CACHE_S = 5.0


class StatusViews:
    """Views of one manager, with the read-only connection and the per-run cache they use."""

    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.reader: LedgerReader | None = None  # opened with the ledger
        self._runs_cache: tuple[float, list[dict[str, object]]] | None = None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _status_reader(self) -> LedgerReader:
        """A read-only connection for views: their queries hold up no claim (WAL readers
        see the last commit and block no writer)."""
        assert self.reader is not None, "Manager.open() first"
        return self.reader

    def _runs_cached(self, now: float) -> list[dict[str, object]]:
        """Per-run counts group a million rows: computed at most every few seconds, on a
        read-only connection, without the manager's lock."""
        if self._runs_cache is None or now - self._runs_cache[0] >= RUNS_CACHE_S:
            self._runs_cache = (now, self._status_reader().run_table())
        return self._runs_cache[1]

    def _running_jobs(self, leases: dict[int, float]) -> Steps[list[dict[str, object]]]:
        """Views of the jobs assigned or merging, read without the lock, their leases as
        now renewed."""
        rows = yield from blocking(self._status_reader().live_job_rows)
        return (yield from mapped(rows, lambda r: job_view(job_row(r), leases.get(r[0]))))

    def run_state(self) -> str:
        """'done' once every run has ended and every file is basecalled or quarantined."""
        m = self.m
        with m.lock:
            counts = m.db.file_counts()
            busy = counts[FileState.QUEUED] or counts[FileState.ASSIGNED] or m.merger.unmerged
            runs, still_open = m.db.runs_open()
        if busy or m.intake.pending_count:
            return "basecalling" if busy else "waiting"
        return "done" if runs and not still_open else "waiting"

    def heartbeat(self) -> dict[str, object]:
        idle = self.m.clock() - self.m.last_activity
        return {
            "status": "true" if idle >= self.m.settings.idle_shutdown_s else "false",
            "inactivity_interval": idle,
        }

    def status_steps(self) -> Steps[dict[str, object]]:
        """`/v1/status`, a step at a time: thousands of engines and running jobs are viewed
        a few hundred per step."""
        m = self.m
        with m.lock:
            now = m.clock()
            files = {s.value: n for s, n in m.db.file_counts().items()}
            jobs = {s.value: n for s, n in m.db.job_counts().items()}
            leases = m.db.lease_expiries()
            quarantined = m.db.files_in_state(FileState.QUARANTINED, 100)
            sliced = m.db.slicing_progress()
            events = [e.as_dict() for e in m.db.last_events(20)]
            generations = m.generations_view()
            yields = [  # merges change these: read them under the lock
                {**totals[key].view(), "generation": m.generations[gen].name}
                for gen, totals in sorted(m.merger.yields.items())
                for key in sorted(totals)
            ]
        running = yield from self._running_jobs(leases)
        runs = yield from blocking(lambda: self._runs_cached(now))
        total = sum(files.values())
        engines = sorted(m.roster.engines.values(), key=lambda e: e.engine)
        yield None
        engine_views = yield from mapped(engines, lambda e: engine_view(e, now))
        return {
            "state": self.run_state(),
            "pending": m.intake.pending_count,
            "runs": runs,
            "input": str(m.layout.input),
            "output": str(m.layout.output),
            "ledger": str(m.db.path),
            "now": now,
            "files": files,
            "files_total": total,
            "finished": total > 0 and files["queued"] == 0 and files["assigned"] == 0,
            "jobs": jobs,
            "running_jobs": running,
            "engines": engine_views,
            # the engines the run is to have, where told (--expect-engines, PUT /v1/fleet)
            "expected_engines": m.roster.expected,
            "quarantined": [{"path": f.path, "reason": f.reason} for f in quarantined],
            # large files going out in slices: their reads merged, out and queued
            "sliced": [sliced_view(s, m.generations) for s in sliced],
            "output_layout": m.merger.output.name,
            "yields": yields,
            "generations": generations,
            "scan": dict(m.intake.last_scan),
            # inotify is set up in the background after start; False: rescans only (yet)
            "watching": m.watching,
            # OUTPUT short of its minimum free space: no batch is handed out (bcmanager.space)
            "output_space": m.space.view().as_dict(),
            "events": events,
        }

    def job_detail(self, job_id: int) -> dict[str, object]:
        with self.m.lock:
            job = scheduler.get_job(self.m.db, job_id)
            rows = self.m.db.batch_of_job(job_id)
        view = job_view(job)
        held = job.state in (JobState.ASSIGNED, JobState.MERGING, JobState.DONE)
        view["files"] = [f.path for f in rows] if held else []
        slices = [{"path": f.path, **f.part.to_dict()} for f in rows if f.part is not None]
        if slices and held:
            view["slices"] = slices  # the reads of a large file this job holds
        return view


def sliced_view(progress: dict[str, object], gens: Mapping[int, Generation]) -> dict[str, object]:
    """A file going out in slices, its generation by name."""
    view = dict(progress)
    gen = view.pop("gen")
    view["generation"] = gens[gen].name if isinstance(gen, int) and gen in gens else str(gen)
    return view


def progress_view(progress: tuple[float, Timing] | None, now: float) -> dict[str, object] | None:
    """An engine's last word on the batch it holds (v1 heartbeats), None before any."""
    if progress is None:
        return None
    at, p = progress
    return {
        "startup_s": round(p.startup_s, 3),
        "basecall_s": round(p.basecall_s, 3),
        "output_bytes": p.output_bytes,
        "reads_done": p.reads_done,
        "reads_total": p.reads_total,
        "reads_at_s": None if p.reads_at_s is None else round(p.reads_at_s, 3),
        "age_s": round(now - at, 3),
    }


def engine_view(e: EngineSeen, now: float) -> dict[str, object]:
    """An engine as `/v1/status` shows it."""
    return {
        "engine": e.engine,
        "last_seen_s": round(now - e.last_seen, 3),
        "job_id": e.job_id,
        "jobs_done": e.jobs_done,
        "files_done": e.files_done,
        "startup_s": round(e.speed.startup_s, 3),
        "bytes_per_s": e.speed.bytes_per_s,
        "filing_s_per_gb": round(e.speed.filing_s_per_byte * 1e9, 3)
        if e.speed.filing_s_per_byte
        else None,
        "progress": progress_view(e.progress, now),
    }


def job_view(job: JobRow, lease_expires: float | None = None) -> dict[str, object]:
    """A job as the API shows it (`lease_expires`: the lease as now renewed, if known)."""
    return {
        "job_id": job.id,
        "engine": job.engine,
        "state": job.state.value,
        "api": job.api,
        "n_files": job.n_files,
        "lease_s": job.lease_s,
        "lease_expires": job.lease_expires if lease_expires is None else lease_expires,
        "created": job.created,
        "ended": job.ended,
        "reason": job.reason,
        "gen": job.gen,
    }
