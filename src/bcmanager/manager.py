"""The manager service: the core (ledger, scheduler, layout) plus a lock, a clock and threads.

Every protocol call (legacy or v1) ends up in one of `claim`, `keepalive`,
`complete`; the background threads scan INPUT (`bcmanager.intake`) and `tick`. Each
holds the lock for the ledger work and its filesystem step, so the ledger is always
written first and the disk follows; a crash between the two is mended at the next start
(`bcmanager.recovery`: `Recovery.reconcile`).

What the manager does for those calls lives beside it, each unit owning its state:
`Intake` (new files into the ledger), `Roster` (engines, their speeds, the fleet
model), `Merger` (merges, yields, quarantine records) and `StatusViews` (what the
API shows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bcmanager import failpoints, scheduler
from bcmanager.backfill import LiveDemand, may_backfill
from bcmanager.checkpointer import Checkpointer
from bcmanager.config import Settings
from bcmanager.endings import Endings
from bcmanager.errors import LeaseLost
from bcmanager.generations import Generation
from bcmanager.intake import Intake
from bcmanager.janitor import Janitor
from bcmanager.layout import Layout, remove_tree
from bcmanager.ledger import FileRow, JobRow, Ledger
from bcmanager.lineup import Lineup
from bcmanager.merging import Merger
from bcmanager.output.layouts import OutputLayout, output_layout
from bcmanager.readlists import ReadLists
from bcmanager.recovery import Recovery
from bcmanager.reports import Completion, Happening, Outcome, Timing
from bcmanager.roster import EngineSeen, Roster
from bcmanager.runstats import LedgerReader
from bcmanager.scheduler import Assignment, Policy, Speed
from bcmanager.space import MIB, OutputSpace
from bcmanager.speedbook import SpeedBook, model_key
from bcmanager.states import JobState
from bcmanager.stepwise import Steps, run
from bcmanager.views import StatusViews

log = logging.getLogger("bcmanager.manager")


@dataclass
class StartupReport:
    ledger_path: str
    rebuilt: bool
    recovered_merges: int
    running_jobs: int
    counts: dict[str, int] = field(default_factory=dict)


class Manager:
    """One run's manager: the lock every protocol call and background look holds, the
    life cycle of its threads, and the protocol itself (claim, keepalive, complete)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.layout = Layout(settings.input, settings.output)
        self.policy = Policy(
            lease_s=settings.lease_s,
            default_batch=settings.batch_size,
            max_batch=settings.max_batch,
            max_attempts=settings.max_attempts,
            target_batch_s=settings.target_batch_s,
            slice_above=settings.slice_above_mib * MIB,
        )
        self.lock = threading.RLock()
        self.ledger: Ledger | None = None
        self.last_activity = clock()
        self._listeners: list[Callable[[bool], None]] = []
        self._hearers: list[Callable[[Happening], None]] = []
        # Jobs whose engine has not yet said it has them (a heartbeat or a report): the
        # answer to a claim can be lost (the manager killed after committing it, an
        # engine's request timed out), and then their files come back when the lease
        # runs out. Until-empty engines are told to wait for them (`work_expected`).
        self._unconfirmed: set[int] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observer: Any = None
        self.lineup = Lineup(lambda: self.db, self.layout)  # the generations, settled by open()
        # live arrivals and batch time: the engines kept out of backfill (bcmanager.backfill)
        self.live = LiveDemand(window_s=settings.live_window_s)
        self.intake = Intake(
            self.lock, lambda: self.db, clock, self.live, self._notify, self.policy.slice_above
        )
        self.read_lists = ReadLists(self.layout.input)  # the reads of slices (bcmanager.slicing)
        self.book = SpeedBook(settings.speed_book_path)  # read by open()
        self.roster = Roster(
            horizon_s=max(60.0, 2 * settings.lease_s),
            remembered=self._remembered,
            learnt=self._learnt,
        )
        self.roster.expect(settings.expect_engines)
        self.merger = Merger(lambda: self.db, self.layout, self.generation, self._tell)
        self.space = OutputSpace(settings.output, int(settings.min_free_mib * MIB))
        self.endings = Endings(
            lambda: self.db,
            self.layout,
            self.policy,
            self.merger,
            self.roster,
            self.live,
            self._tell,
            self.space.excuses,
        )
        self.views = StatusViews(self)
        self._janitor: Janitor | None = None
        self._checkpointer: Checkpointer | None = None

    # -- life cycle -------------------------------------------------------------------

    @property
    def db(self) -> Ledger:
        assert self.ledger is not None, "Manager.open() first"
        return self.ledger

    @property
    def output(self) -> OutputLayout:
        """OUTPUT's layout, settled by `open` (a new OUTPUT takes the settings')."""
        return self.merger.output

    @property
    def watching(self) -> bool:
        """Whether inotify is set up (in the background after start; else rescans only)."""
        return self._observer is not None

    def open(self, scan_now: bool = False) -> StartupReport:
        """Open (or rebuild) the ledger and mend whatever a crash left half done."""
        self.layout.output.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.settings.ledger_path)
        self.book = SpeedBook.load(self.settings.speed_book_path, self.clock())
        if self.book.entries:
            log.info("speed book %s: %d engine(s) known", self.book.path, len(self.book.entries))
        self.views.reader = LedgerReader(self.ledger.path)
        self.intake.open(self.layout.input, self.settings.settle_s)
        merger = self.merger
        recovery = Recovery(
            self.db,
            self.layout,
            self.policy,
            merger.merge,
            merger.journal_and_merge,
            merger.record_quarantine,
            self.prepare_job,
        )
        now = self.clock()
        with self.lock:
            recovery.check_owner()
            merger.output = output_layout(
                recovery.settle_output_layout(self.settings.output_layout)
            )
            self.layout.ensure_output_dirs(self.output)
            self.lineup.settle(self.settings.generations, now)
            discovery = self.intake.discovery
            # a rebuild that died midway (a full disk) is done again: a partial ledger
            # taken as whole would queue the files of every merge it had not adopted yet
            rebuilt = self.ledger.unsettled and recovery.rebuild_from_layout(
                now, lambda: self.intake.counted(discovery.scan().new) if discovery else []
            )
            self.ledger.settle()
            if rebuilt:
                self.intake.scan_done.set()
            merger.load_yields()
            merging = len(self.db.jobs_in([JobState.MERGING]))
            recovery.reconcile(now)
            running = scheduler.renew_all(self.db, now)
            self._unconfirmed = {j.id for j in self.db.jobs_in([JobState.ASSIGNED])}
            self.db.record_event(now, "manager", "started" + (" (rebuilt)" if rebuilt else ""))
        if scan_now and not rebuilt:
            self.scan()
        counts = {s.value: n for s, n in self.db.file_counts().items()}
        return StartupReport(str(self.db.path), rebuilt, merging, running, counts)

    def start_background(self) -> None:
        """Start the scanning, lease-expiry, folder-removing and checkpointing threads."""
        self.db.checkpoint_elsewhere()
        self._checkpointer = Checkpointer(self.db.path)
        self._janitor = Janitor(remove_tree)
        self.merger.run_folders.start()
        self.layout.remove_job_dir = self._janitor.remove
        loops: list[tuple[str, Callable[[], None]]] = [
            ("bcm-scan", lambda: self.intake.scan_loop(self._stop, self.settings.rescan_s)),
            ("bcm-pending", lambda: self.intake.pending_loop(self._stop)),
            ("bcm-tick", self._tick_loop),
        ]
        self._threads = [threading.Thread(target=f, name=n, daemon=True) for n, f in loops]
        for t in self._threads:
            t.start()
        if self.settings.watch:
            # Watching a tree walks all of it (a million-file folder takes seconds): not on
            # the way to serving the first request.
            threading.Thread(target=self._start_watching, name="bcm-watch", daemon=True).start()

    def _start_watching(self) -> None:
        from bcmanager.watch import start_watching

        observer = start_watching(self.layout.input, self.intake.hint, self.intake.rescan_soon)
        if self._stop.is_set() and observer is not None:
            observer.stop()
        else:
            self._observer = observer

    def close(self) -> None:
        self._stop.set()
        self.intake.scan_wake.set()
        self.intake.pending_wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        for t in self._threads:
            t.join(timeout=10)
        self.save_speeds(force=True)
        if self._janitor is not None:
            self.layout.remove_job_dir = remove_tree
            self._janitor.close()
            self._janitor = None
        self.merger.run_folders.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        with self.lock:
            self.intake.close()
            self.views.close()
            if self.ledger is not None:
                self.ledger.close()
                self.ledger = None

    def add_hearer(self, callback: Callable[[Happening], None]) -> None:
        """`callback` hears of finished batches, merges, failures and expiries (for metrics)."""
        self._hearers.append(callback)

    def _tell(self, happening: Happening) -> None:
        for callback in self._hearers:
            try:
                callback(happening)
            except Exception:
                log.exception("a metrics hearer failed; ignored")

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        """`callback(everyone)` runs (in any thread) whenever files become claimable
        (False: one waiting claim is enough to wake), or whether work is expected at all
        may have changed (True: wake every waiting claim)."""
        self._listeners.append(callback)

    def _notify(self, everyone: bool = False) -> None:
        for callback in self._listeners:
            callback(everyone)

    def queued(self, any_model: bool = True) -> int:
        """Files waiting for an engine (of the live generation only for engines that run
        their own model)."""
        with self.lock:
            slices = self.db.queued_slice_count(None if any_model else [0])
            return self.db.queued_count(None if any_model else [0]) + slices

    # -- generations ------------------------------------------------------------------

    @property
    def generations(self) -> dict[int, Generation]:
        """The generations by id (`bcmanager.lineup`), settled by `open`."""
        return self.lineup.by_id

    def add_generation(self, gen: Generation) -> tuple[Generation, bool]:
        """Add a backfill generation to the running manager: every known file is queued
        for it. Returns it and whether it is new (adding the same one again changes
        nothing); the same name with another recipe is a Conflict."""
        with self.lock:
            existed = self.lineup.has(gen.name)
            added = self.lineup.add(gen, self.clock())
        if not existed:
            log.info("generation %s added", added.describe())
            self._notify(everyone=True)
        return added, not existed

    def generations_view(self) -> list[dict[str, object]]:
        """Every generation, the live one first, with its files by state."""
        with self.lock:
            return self.lineup.view()

    def generation(self, gen_id: int) -> Generation:
        return self.lineup.get(gen_id)

    # -- discovery (`bcmanager.intake`) -----------------------------------------------

    def scan(self) -> int:
        """Look for new complete pod5 files once; returns how many were added."""
        return self.intake.scan()

    def work_expected(self, any_model: bool = True, unconfirmed_count: bool = True) -> bool:
        """Whether an engine that found nothing to claim should hold on rather than go home:
        files are queued (for a generation it can basecall), settling or being looked at,
        the first scan since start has not finished, or a job's engine has not confirmed
        it yet (its files come back if the answer to its claim was lost). Call it after a
        claim that found nothing, so that no file can slip between the two.
        `unconfirmed_count` False: unconfirmed jobs do not count (for original engines,
        which confirm at their first keepalive, a lease away)."""
        if self.intake.expecting():
            return True
        if unconfirmed_count and self._unconfirmed:
            return True
        return self.queued(any_model) > 0

    def _remembered(self, engine: str) -> dict[int, Speed]:
        """An engine's speeds from the speed book, by the generation whose model they are of."""
        known = self.book.recall(engine)
        if not known:
            return {}
        return {
            g.id: known[key] for g in self.lineup.by_id.values() if (key := model_key(g)) in known
        }

    def _learnt(self, seen: EngineSeen, gen: int) -> None:
        self.book.note(seen.engine, model_key(self.generation(gen)), seen.speed, self.clock())

    def save_speeds(self, force: bool = False) -> None:
        """Write the speed book when it changed (at most every SAVE_EVERY_S unless
        `force`); the file is written outside the lock."""
        with self.lock:
            snapshot = self.book.snapshot(self.clock(), force)
        if snapshot is not None:
            self.book.write(snapshot)

    def _tick_loop(self) -> None:
        interval = max(0.05, min(1.0, self.settings.lease_s / 4))
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:
                log.exception("lease check failed; will try again")

    # -- the protocol -----------------------------------------------------------------

    def claim(
        self,
        engine: str,
        requested: int | None,
        api: str,
        any_model: bool = False,
        prepare: bool = True,
        slices: bool = False,
    ) -> Assignment | None:
        """A batch for `engine`, or None. An engine that runs only its own model (every
        original engine) gets the live generation's files only; one that takes `slices`
        may get a slice of a large file (`bcmanager.slicing`). With `prepare` False the
        caller creates the job's folders (`prepare_folders`) before answering the engine:
        the API does it off its event loop and outside the lock."""
        started = time.perf_counter()
        with self.lock:
            now = self.clock()
            seen = self.roster.seen(engine, now)
            if self.space.short:  # OUTPUT is full: the batch would fail (bcmanager.space)
                return None
            backfill = any_model and self._may_backfill(engine, now)
            seen.use_generation(self.db.next_generation(None if backfill else [0]))
            assignment = scheduler.claim(
                self.db,
                engine,
                requested,
                now,
                self.policy,
                api,
                speed=seen.speed,
                fleet=self.roster.fleet(now),
                gens=None if backfill else [0],
                slices=slices,
            )
            if assignment is None:
                return None
            job = assignment.job
            failpoints.hit("claim.after-commit")
            if prepare:
                self.prepare_folders(assignment)
            self.last_activity = now
            self._unconfirmed.add(job.id)
            self.roster.claimed(seen, job.id, scheduler.signal_bytes(assignment.files), now)
            beat = self.roster.heartbeat_s(engine, job.gen, job.lease_s)
            assignment = replace(assignment, heartbeat_s=beat)
            self.merger.run_folders.want(job.id, (f.path for f in assignment.files))
        spent = time.perf_counter() - started  # the lock's wait included, a long poll's not
        self._tell(Happening("claimed", now, engine, len(assignment.files), seconds=spent))
        log.debug("job %d: %d file(s) to %s", job.id, len(assignment.files), engine)
        return assignment

    def prepare_folders(self, assignment: Assignment) -> None:
        """Create a claimed job's INPUT folder of symlinks (and a slice's read list) and
        its empty output folder.

        Safe without the lock: the job is in the ledger already, its folders are its own,
        and a crash before they exist is mended at start (`Recovery.reconcile`)."""
        self.prepare_job(assignment.job, assignment.files)

    def prepare_job(self, job: JobRow, files: list[FileRow]) -> None:
        """A job's folders, for the files (or the slice) it holds."""
        self.layout.prepare_job(job.id, job.engine, [f.path for f in files])
        for piece in files:
            if piece.part is not None:
                self.read_lists.write(piece, self.layout.read_list_path(job.id, job.engine))

    def expect_engines(self, engines: int | None) -> dict[str, Any]:
        """The run is to have `engines` engines (None: not told); what the roster now sees."""
        with self.lock:
            changed = engines != self.roster.expected
            self.roster.expect(engines)
            fleet = self.roster.fleet(self.clock())
        if changed:  # a controller says it at every step
            told = engines or "an unknown number of"
            log.info("expecting %s engine(s); %d seen lately", told, len(fleet))
        return {"expected_engines": engines, "engines": len(fleet), "arriving": fleet.arriving}

    def _may_backfill(self, engine: str, now: float) -> bool:
        """Whether `engine` may take backfill work now: only while the engines left idle
        cover the live reserve (`bcmanager.backfill`)."""
        if len(self.generations) < 2:
            return True
        reserve = self.live.reserve(now)
        if reserve == 0:
            return True
        return may_backfill(self.roster.idle_besides(engine, now), reserve)

    def keepalive(
        self,
        job_id: int,
        token: str | None,
        progress: Timing | None = None,
        basecalled: bool = False,
    ) -> JobRow:
        """Renew a job's lease (and note the engine's progress on it, where it says; with
        `basecalled`, learn from it at once); raises LeaseLost when it has expired (or ended)."""
        with self.lock:
            now = self.clock()
            job = scheduler.get_job(self.db, job_id)
            scheduler.check_token(job, token)
            seen = self.roster.seen(job.engine, now)
            self.last_activity = now
            expires = scheduler.renew(self.db, job, now)
            self._unconfirmed.discard(job.id)
            if seen.job_id == job.id and basecalled:
                self.roster.basecalled(seen, job, progress, now)
            elif seen.job_id == job.id and progress is not None:
                seen.heard(progress, now)
            return replace(job, lease_expires=expires)

    def complete(
        self,
        job_id: int,
        outcome: Outcome,
        token: str | None,
        reason: str | None = None,
        yields: list[dict] | None = None,
        timing: Timing | None = None,
    ) -> Completion:
        """An engine's final report (with the yield of its reads, when it counted them).
        Repeats answer the same and change nothing."""
        with self.lock:
            now = self.clock()
            job = scheduler.get_job(self.db, job_id)
            scheduler.check_token(job, token)
            self.roster.seen(job.engine, now)
            self.last_activity = now
            if job.state is JobState.ASSIGNED:
                engine = self._forget_job(job)
                state = self.endings.finish(job, outcome, reason, now, engine, yields, timing)
                if state in (JobState.FAILED, JobState.RELEASED):  # its files are queued again
                    self._notify()
                return Completion(replace(job, state=state))
            if job.state is JobState.EXPIRED:
                self.endings.late(job, now)
                return Completion(scheduler.get_job(self.db, job_id), late=True)
            late = job.state is JobState.LATE
            return Completion(job, late=late, repeated=True)

    def _forget_job(self, job: JobRow) -> EngineSeen | None:
        """The engine no longer holds `job` (it ended or its lease expired): nor its progress."""
        self._unconfirmed.discard(job.id)
        return self.roster.forget_job(job)

    def tick(self) -> None:
        """Expire overdue leases, retry merges that hit a disk error, look at OUTPUT's free
        space."""
        with self.lock:
            now = self.clock()
            expired = self.endings.expire(now, self._forget_job)
            self.merger.retry_due(now)
        self.space.sample(now)  # outside the lock: a statvfs on a hung NFS mount blocks
        self.save_speeds()
        if expired or self.queued():  # also a safety net for a wake whose claim went away
            self._notify()

    # -- views (`bcmanager.views`) ------------------------------------------------------

    def run_state(self) -> str:
        """'done' once every run has ended and every file is basecalled or quarantined."""
        return self.views.run_state()

    def heartbeat_view(self) -> dict[str, object]:
        return self.views.heartbeat()

    def status(self) -> dict[str, object]:
        return run(self.status_steps())

    def status_steps(self) -> Steps[dict[str, object]]:
        """`status`, a step at a time (`bcmanager.stepwise`)."""
        return self.views.status_steps()

    def job_detail(self, job_id: int) -> dict[str, object]:
        return self.views.job_detail(job_id)


__all__ = ["Completion", "Happening", "LeaseLost", "Manager", "Outcome", "Timing"]
