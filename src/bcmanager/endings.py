"""How a job ends: merged (DONE), retried or quarantined (FAILED), handed back, expired,
or reported after its lease ran out (late). Each ending changes the ledger, the job's
folders and what the roster knows of its engine, and tells the metrics.

Runs under the manager's lock (`Manager.complete`, `Manager.tick`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bcmanager import scheduler
from bcmanager.backfill import LiveDemand
from bcmanager.layout import Layout
from bcmanager.ledger import FileRow, JobRow, Ledger
from bcmanager.merging import Merger
from bcmanager.reports import Happening, Outcome, Timing, batch_done
from bcmanager.roster import EngineSeen, Roster
from bcmanager.scheduler import Policy
from bcmanager.states import JobState

log = logging.getLogger("bcmanager.manager")


class Endings:
    """The ends of jobs, for one manager."""

    def __init__(
        self,
        db: Callable[[], Ledger],
        layout: Layout,
        policy: Policy,
        merger: Merger,
        roster: Roster,
        live: LiveDemand,
        tell: Callable[[Happening], None],
        disk_to_blame: Callable[[str, float], bool] = lambda reason, now: False,
    ) -> None:
        self._db = db
        self.layout = layout
        self.policy = policy
        self.merger = merger
        self.roster = roster
        self.live = live
        self._tell = tell
        self.disk_to_blame = disk_to_blame

    def finish(
        self,
        job: JobRow,
        outcome: Outcome,
        reason: str | None,
        now: float,
        engine: EngineSeen | None,
        yields: list[dict] | None = None,
        timing: Timing | None = None,
    ) -> JobState:
        """An engine's report on a job it holds; the job's state after it: done (merged),
        merging (its merge waits), failed or released (its files went back to the queue,
        so waiting claims are to be woken)."""
        try:
            return self._finish(job, outcome, reason, now, engine, yields, timing)
        finally:
            self.merger.run_folders.forget(job.id)

    def _finish(
        self,
        job: JobRow,
        outcome: Outcome,
        reason: str | None,
        now: float,
        engine: EngineSeen | None,
        yields: list[dict] | None,
        timing: Timing | None,
    ) -> JobState:
        if outcome is not Outcome.DONE and self.layout.begun_merge(job.id, job.engine):
            log.warning("job %d: %s after its merge began; the merge is finished", job.id, outcome)
            outcome = Outcome.DONE  # some outputs may be in OUTPUT: never basecalled again
        if outcome is Outcome.DONE:  # checked before anything is journaled or moved
            files = self._db().batch_of_job(job.id)
            problem = self.merger.merge_done(job, files, yields, now)
            if problem is None:
                self._done(job, files, engine, timing, now)
                return JobState.MERGING if job.id in self.merger.unmerged else JobState.DONE
            outcome, reason = Outcome.FAILED, f"not merged: {problem}"
        if outcome is Outcome.FAILED:
            why = reason or "engine reported FAILED"
            counted = not self.disk_to_blame(why, now)
            poisoned = scheduler.fail(self._db(), job, why, now, self.policy, counted)
            self._tell(Happening("failed", now, job.engine, job.n_files, quarantined=len(poisoned)))
            self.layout.set_aside_failed(job.id, job.engine)
            self.merger.record_quarantine(poisoned)
            log.warning(
                "job %d failed on %s: %s%s",
                job.id,
                job.engine,
                why,
                "" if counted else " (OUTPUT was full: no attempt counted)",
            )
            return JobState.FAILED
        scheduler.release(self._db(), job, now)
        self.layout.drop_assignment(job.id, job.engine)
        log.info("job %d handed back by %s", job.id, job.engine)
        return JobState.RELEASED

    def _done(
        self,
        job: JobRow,
        files: list[FileRow],
        engine: EngineSeen | None,
        timing: Timing | None,
        now: float,
    ) -> None:
        """A merged batch: tell the metrics, and learn from it (unless learnt already at its
        basecaller's end)."""
        self._tell(batch_done(job, files, now))
        if job.gen == 0:
            self.live.batch_done(now - job.created)
        size = scheduler.signal_bytes(files)
        if engine is None or engine.measured_job != job.id:
            self.roster.learn_batch(engine, job, size, timing, now)
        if engine is not None:
            engine.jobs_done += 1
            engine.files_done += len(files)
            if timing is not None and timing.filing_s is not None and engine.gen == job.gen:
                engine.record_filing(size, timing.filing_s)

    def late(self, job: JobRow, now: float) -> None:
        """A report on a job whose lease ran out: its output is kept aside, never merged."""
        where = self.layout.set_aside_late_output(job.id, job.engine)
        scheduler.mark_late(self._db(), job, now)
        self._tell(Happening("late", now, job.engine))
        log.warning("job %d: late report from %s; output kept in %s", job.id, job.engine, where)

    def expire(self, now: float, forget: Callable[[JobRow], object]) -> int:
        """Expire overdue leases: their files go back to the queue (or to quarantine);
        `forget` tells the manager the engine no longer holds the job. How many expired.
        A job whose merge began (its manifest is written) is finished instead."""
        self._finish_begun_merges(now, forget)
        expired = scheduler.expire_overdue(self._db(), now, self.policy)
        for job, poisoned in expired:
            self._tell(
                Happening("expired", now, job.engine, job.n_files, quarantined=len(poisoned))
            )
            self.layout.drop_assignment(job.id, job.engine)
            forget(job)
            self.merger.run_folders.forget(job.id)
            self.merger.record_quarantine(poisoned)
            log.warning("job %d on %s: lease expired, files requeued", job.id, job.engine)
        return len(expired)

    def _finish_begun_merges(self, now: float, forget: Callable[[JobRow], object]) -> None:
        """Overdue jobs whose merge is journaled in its manifest alone: a report whose merge
        failed and could not be journaled in the ledger either (a full disk under both),
        whose engine gave up. Some outputs may be in OUTPUT already, so the files must not
        be basecalled again: the merge is journaled in the ledger and finished."""
        for job in self._db().overdue_jobs(now):
            plan = self.layout.begun_merge(job.id, job.engine)
            if plan is None:
                continue
            log.warning("job %d: its lease ran out during its merge; finishing it", job.id)
            forget(job)
            self.merger.run_folders.forget(job.id)
            self.merger.journal_and_merge(job, plan, now)
