"""The manager service: the core (ledger, scheduler, layout) plus a lock, a clock and threads.

Every protocol call (legacy or v1) ends up in one of `claim`, `keepalive`,
`complete`; the background threads call `scan` and `tick`. Each holds the lock for
the ledger work and its filesystem step, so the ledger is always written first
and the disk follows; a crash between the two is mended by `_reconcile` at the
next start.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from bcmanager import failpoints, scheduler, stepwise
from bcmanager.backfill import LiveDemand, may_backfill
from bcmanager.checkpointer import Checkpointer
from bcmanager.config import Settings
from bcmanager.errors import LeaseLost, NotFound
from bcmanager.generations import Generation, implicit
from bcmanager.janitor import Janitor
from bcmanager.layout import Layout, remove_tree
from bcmanager.ledger import FileRow, JobRow, Ledger, NewFile, job_row
from bcmanager.output.layouts import OutputLayout, output_layout
from bcmanager.output.whole import merge_problem
from bcmanager.output.yields import Yield, added
from bcmanager.recovery import Recovery
from bcmanager.runstats import LedgerReader
from bcmanager.scanner import Discovery, ScanResult, run_of
from bcmanager.scheduler import Assignment, Fleet, Policy, Speed, speed_from_progress
from bcmanager.states import FileState, JobState
from bcmanager.stepwise import Steps, blocking, mapped

log = logging.getLogger("bcmanager.manager")

SCAN_CHUNK = 2000
PENDING_CHECK_S = 0.25
RUNS_CACHE_S = 5.0
RESCAN_COST_FACTOR = 30
MERGE_RETRY_S = 5.0
SMOOTHING = 0.5  # weight of what was known in an engine's speed against the latest batch
FLEET_REFRESH_S = 1.0  # how stale the fleet's summed speeds may be for batch sizing
# ... and per engine: re-summing costs about 2 us an engine on the event loop, so a large
# fleet is re-summed less often (5,000 engines: every 5 s, a 10 ms pass), at most 0.2 % of
# a core; claims patch the cached fleet in between (`_fleet_claimed`).
FLEET_REFRESH_S_PER_ENGINE = 0.001


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    RELEASED = "released"


@dataclass(frozen=True)
class Completion:
    job: JobRow
    late: bool = False
    repeated: bool = False


@dataclass(frozen=True)
class Happening:
    """A moment the metrics count; the ledger keeps the durable story, this feeds rates."""

    kind: str  # done | merged | failed | expired | late
    at: float
    engine: str
    files: int = 0
    bytes: int = 0
    reads: int | None = None  # None: not known for every file of the batch
    samples: int | None = None
    seconds: float = 0.0  # done: claim to report; merged: how long the merge took
    quarantined: int = 0


@dataclass(frozen=True)
class Timing:
    """An engine's account of one batch: its basecaller's start-up, then basecalling."""

    startup_s: float
    basecall_s: float
    output_bytes: int | None = None  # what the basecaller wrote (not said by every engine)
    filing_s: float | None = None  # filing its output, after basecalling (DONE reports)


@dataclass
class EngineSeen:
    engine: str
    last_seen: float
    job_id: int | None = None
    jobs_done: int = 0
    files_done: int = 0
    speed: Speed = field(default_factory=Speed)  # smoothed, from finished batches
    job_bytes: int = 0  # of the batch it holds
    job_claimed: float = 0.0
    rate_sums: tuple[float, float] = (0.0, 0.0)  # bytes and basecalling s, older halved
    gen: int = 0  # the generation whose model `speed` and `rate_sums` are of
    learnt: dict[int, tuple[Speed, tuple[float, float]]] = field(default_factory=dict)
    progress: tuple[float, Timing] | None = None  # (when heard, what) on the batch it holds
    measured_job: int | None = None  # its last batch learnt from at its basecaller's end
    filing_sums: tuple[float, float] = (0.0, 0.0)  # bytes filed and seconds, older halved

    def use_generation(self, gen: int) -> None:
        """Make `speed` the one learnt for `gen`'s model: models differ several-fold in
        speed (fast, hac, sup), so one generation's rate says little of another's. A
        generation not seen yet starts with the start-up known (loading a model and
        starting the GPU cost about the same) and no rate."""
        if gen == self.gen:
            return
        self.learnt[self.gen] = (self.speed, self.rate_sums)
        fresh = (Speed(self.speed.startup_s), (0.0, 0.0))
        self.speed, self.rate_sums = self.learnt.get(gen, fresh)
        self.gen = gen

    def busy_for(self, now: float) -> float:
        """How much longer the batch it holds is predicted to take (0 without one)."""
        if self.job_id is None or not self.speed.bytes_per_s:
            return 0.0
        return max(0.0, self.job_claimed + self.speed.batch_s(self.job_bytes) - now)

    def fleet_speed(self, now: float, output_per_byte: float | None = None) -> Speed:
        """Its speed as the tail rule sees it `now`: with what it holds. Not measured yet,
        from its progress on that batch where it said (`speed_from_progress`)."""
        speed = self.speed
        if self.job_id is None:
            return speed  # holds nothing: as measured (learnt speeds have no busy part)
        held = not speed.bytes_per_s
        if held and self.progress is not None:
            at, p = self.progress
            guessed = speed_from_progress(
                self.job_bytes,
                p.startup_s,
                p.basecall_s,
                p.output_bytes or 0,
                output_per_byte,
                now - at,
            )
            if guessed is not None:
                return guessed
        # built directly: `dataclasses.replace` was two thirds of a 5,000-engine refresh
        return Speed(
            startup_s=speed.startup_s,
            bytes_per_s=speed.bytes_per_s,
            busy_s=self.busy_for(now),
            held_bytes=self.job_bytes if held else 0.0,
            held_s=now - self.job_claimed if held else 0.0,
            filing_s_per_byte=speed.filing_s_per_byte,
        )

    def record_batch(self, size_bytes: int, seconds: float, timing: Timing | None) -> None:
        """Learn the engine's speed from a finished batch (`seconds`: claim to report): its
        rate from its own report of basecalling time, else (an engine that does not say)
        from claim to report; its start-up is the rest of claim to report (the basecaller's
        start to its first output, and spawning and reporting), so that start-up plus bytes
        over rate predicts claim to report of another batch. The rate weighs each batch by its
        basecalling time: a long batch measures it better than a short first one."""
        basecall = max(min(timing.basecall_s if timing else seconds, seconds), 1e-3)
        startup = seconds - basecall
        done, spent = self.rate_sums
        self.rate_sums = (SMOOTHING * done + size_bytes, SMOOTHING * spent + basecall)
        rate = self.rate_sums[0] / self.rate_sums[1]
        if self.speed.bytes_per_s is not None:
            startup = SMOOTHING * self.speed.startup_s + (1 - SMOOTHING) * startup
        self.speed = Speed(startup, rate, filing_s_per_byte=self.speed.filing_s_per_byte)

    def record_filing(self, size_bytes: int, filing_s: float) -> None:
        """Learn how long the engine takes to file a batch's output, per pod5 byte."""
        done, spent = self.filing_sums
        self.filing_sums = (SMOOTHING * done + size_bytes, SMOOTHING * spent + filing_s)
        if self.filing_sums[0] > 0:
            per_byte = self.filing_sums[1] / self.filing_sums[0]
            self.speed = replace(self.speed, filing_s_per_byte=per_byte)


def fleet_refresh_s(engines: int) -> float:
    """How long the fleet's summed speeds serve batch sizing before they are summed again."""
    return max(FLEET_REFRESH_S, engines * FLEET_REFRESH_S_PER_ENGINE)


@dataclass
class StartupReport:
    ledger_path: str
    rebuilt: bool
    recovered_merges: int
    running_jobs: int
    counts: dict[str, int] = field(default_factory=dict)


class Manager:
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
        )
        self.lock = threading.RLock()
        self.ledger: Ledger | None = None
        self.last_activity = clock()
        self.engines: dict[str, EngineSeen] = {}
        self.scan_done = threading.Event()
        self.last_scan: dict[str, float | int] = {}
        self._listeners: list[Callable[[bool], None]] = []
        self._unmerged: set[int] = set()
        # Jobs whose engine has not yet said it has them (a heartbeat or a report): the
        # answer to a claim can be lost (the manager killed after committing it, an
        # engine's request timed out), and then their files come back when the lease
        # runs out. Until-empty engines are told to wait for them (`work_expected`).
        self._unconfirmed: set[int] = set()
        self._merge_retry_at = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._discovery: Discovery | None = None
        self._reader: LedgerReader | None = None
        self._views: LedgerReader | None = None
        self._hearers: list[Callable[[Happening], None]] = []
        self._runs_cache: tuple[float, list[dict[str, object]]] | None = None
        self._scan_wake = threading.Event()
        self._pending_wake = threading.Event()
        self._observer: Any = None
        self.output: OutputLayout = output_layout("minknow")  # settled by open()
        # merged jobs' yield: per generation, then per run and barcode
        self.yields: dict[int, dict[tuple[str, str], Yield]] = {}
        self.generations: dict[int, Generation] = {}  # by id, settled by open()
        # live arrivals and batch time: the engines kept out of backfill (bcmanager.backfill)
        self.live = LiveDemand(window_s=settings.live_window_s)
        self._fleet_cache: tuple[float, Fleet] | None = None
        self._output_sums: dict[int, tuple[float, float]] = {}  # output, pod5 bytes by gen
        self._looking_lock = threading.Lock()
        self._janitor: Janitor | None = None
        self._checkpointer: Checkpointer | None = None
        self._looking_now = 0

    # -- life cycle -------------------------------------------------------------------

    @property
    def db(self) -> Ledger:
        assert self.ledger is not None, "Manager.open() first"
        return self.ledger

    def open(self, scan_now: bool = False) -> StartupReport:
        """Open (or rebuild) the ledger and mend whatever a crash left half done."""
        self.layout.output.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.settings.ledger_path)
        self._views = LedgerReader(self.ledger.path)
        self._discovery = Discovery(
            self.layout.input, self._known_in, settle_s=self.settings.settle_s, clock=self.clock
        )
        recovery = Recovery(self.db, self.layout, self.policy, self._merge, self._record_quarantine)
        now = self.clock()
        with self.lock:
            recovery.check_owner()
            self.output = output_layout(recovery.settle_output_layout(self.settings.output_layout))
            self.layout.ensure_output_dirs(self.output)
            self._settle_generations(now)
            rebuilt = self.ledger.created and recovery.rebuild_from_layout(
                now, lambda: self._discovery.scan().new if self._discovery else []
            )
            if rebuilt:
                self.scan_done.set()
            self.yields = {}
            for d in self.db.yield_totals():
                self.yields.setdefault(d["gen"], {})[(d["run"], d["barcode"])] = Yield.from_dict(d)
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
        self.layout.remove_job_dir = self._janitor.remove
        self._threads = [
            threading.Thread(target=self._scan_loop, name="bcm-scan", daemon=True),
            threading.Thread(target=self._pending_loop, name="bcm-pending", daemon=True),
            threading.Thread(target=self._tick_loop, name="bcm-tick", daemon=True),
        ]
        for t in self._threads:
            t.start()
        if self.settings.watch:
            # Watching a tree walks all of it (a million-file folder takes seconds): not on
            # the way to serving the first request.
            threading.Thread(target=self._start_watching, name="bcm-watch", daemon=True).start()

    def _start_watching(self) -> None:
        from bcmanager.watch import start_watching

        observer = start_watching(self.layout.input, self.hint, self.rescan_soon)
        if self._stop.is_set() and observer is not None:
            observer.stop()
        else:
            self._observer = observer

    def close(self) -> None:
        self._stop.set()
        self._scan_wake.set()
        self._pending_wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        for t in self._threads:
            t.join(timeout=10)
        if self._janitor is not None:
            self.layout.remove_job_dir = remove_tree
            self._janitor.close()
            self._janitor = None
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        with self.lock:
            for reader in (self._reader, self._views):
                if reader is not None:
                    reader.close()
            self._reader = self._views = None
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
            return self.db.queued_count(None if any_model else [0])

    # -- generations ------------------------------------------------------------------

    def _settle_generations(self, now: float) -> None:
        """The ledger's generations, plus those on disk (a rebuilt ledger) and those the
        settings name; an OUTPUT that has files but never had a generation keeps the
        implicit one first (its reads are at OUTPUT's root)."""
        known = self.db.generations()
        wanted = list(self.settings.generations)
        if not known:
            on_disk = self.layout.generations_on_disk()
            has_files = sum(self.db.file_counts(0).values()) > 0  # a ledger of schema 1
            had_implicit = has_files or bool(on_disk and on_disk[0].id > 0)
            if had_implicit or not (on_disk or wanted):
                self.db.add_generation(implicit(), now)
            wanted = on_disk + wanted
        for gen in wanted:
            self._add_generation(gen, now)
        self.generations = {g.id: g for g in self.db.generations()}

    def _add_generation(self, gen: Generation, now: float) -> Generation:
        added = self.db.add_generation(gen, now)
        if added.output_root:
            self.layout.write_generation_spec(added)
        self.generations[added.id] = added
        return added

    def add_generation(self, gen: Generation) -> tuple[Generation, bool]:
        """Add a backfill generation to the running manager: every known file is queued
        for it. Returns it and whether it is new (adding the same one again changes
        nothing); the same name with another recipe is a Conflict."""
        with self.lock:
            existed = any(g.name == gen.name for g in self.generations.values())
            added = self._add_generation(gen, self.clock())
        if not existed:
            log.info("generation %s added", added.describe())
            self._notify(everyone=True)
        return added, not existed

    def generations_view(self) -> list[dict[str, object]]:
        """Every generation, the live one first, with its files by state."""
        with self.lock:
            return [
                {**gen.to_dict(), "files": {s.value: n for s, n in self.db.file_counts(i).items()}}
                for i, gen in sorted(self.generations.items())
            ]

    def generation(self, gen_id: int) -> Generation:
        try:
            return self.generations[gen_id]
        except KeyError:
            raise NotFound(f"no generation {gen_id}") from None

    # -- discovery --------------------------------------------------------------------

    def _known_in(self, folder: str) -> set[str]:
        if self._reader is None:
            self._reader = LedgerReader(self.db.path)
        return self._reader.known_names_in(folder)  # no manager lock: its own connection

    def scan(self) -> int:
        """Look for new complete pod5 files once; returns how many were added.

        Files go to the ledger in chunks as the walk finds them, so engines get work
        within a second of a large copy landing, not once the whole tree is walked."""
        assert self._discovery is not None
        started = time.monotonic()
        added, result = self._discover(self._discovery.scan)
        self.last_scan = {
            "at": self.clock(),
            "seconds": round(time.monotonic() - started, 3),
            "added": added,
            "incomplete": len(result.incomplete),
            "folders_listed": result.folders_listed,
        }
        if not self.scan_done.is_set():
            self.scan_done.set()
            self._notify(everyone=True)  # claims held until the first scan may answer empty
        return added

    def check_pending(self) -> int:
        """Look only at files still being written and at inotify hints (cheap, frequent)."""
        assert self._discovery is not None
        added, _ = self._discover(self._discovery.check_pending)
        if not added and not self._discovery.pending_count:
            self._notify(everyone=True)  # nothing settles any more: held claims may answer
        return added

    def _discover(
        self, look: Callable[[Callable[[list[NewFile]], object]], ScanResult]
    ) -> tuple[int, ScanResult]:
        """Run one look (a scan or a pending check) that hands found files over in chunks,
        queue what it found, and say how many were added."""
        early = 0

        def queue_now(files: list[NewFile]) -> None:
            nonlocal early
            early += self._queue(files)

        with self._looking():
            result = look(queue_now)
            return self._take(result) + early, result

    @contextmanager
    def _looking(self) -> Iterator[None]:
        """Files found while this is open may not be in the ledger yet: work is expected."""
        with self._looking_lock:
            self._looking_now += 1
        try:
            yield
        finally:
            with self._looking_lock:
                self._looking_now -= 1

    def work_expected(self, any_model: bool = True, unconfirmed_count: bool = True) -> bool:
        """Whether an engine that found nothing to claim should hold on rather than go home:
        files are queued (for a generation it can basecall), settling or being looked at,
        the first scan since start has not finished, or a job's engine has not confirmed
        it yet (its files come back if the answer to its claim was lost). Call it after a
        claim that found nothing, so that no file can slip between the two.
        `unconfirmed_count` False: unconfirmed jobs do not count (for original engines,
        which confirm at their first keepalive, a lease away)."""
        if not self.scan_done.is_set() or self._looking_now:
            return True
        if unconfirmed_count and self._unconfirmed:
            return True
        if self._discovery is not None and self._discovery.pending_count:
            return True
        return self.queued(any_model) > 0

    def hint(self, rel: str, closed: bool = False) -> None:
        """An inotify event named `rel` (a pod5 path relative to INPUT)."""
        assert self._discovery is not None
        self._discovery.hint(rel, closed)
        self._pending_wake.set()

    def rescan_soon(self, rel_dir: str | None = None) -> None:
        """A folder appeared or a run summary was written: scan again now."""
        assert self._discovery is not None
        if rel_dir is not None:
            self._discovery.forget(rel_dir)
        self._scan_wake.set()

    def _take(self, result: ScanResult) -> int:
        """Queue what a scan found and record runs that ended."""
        added = self._queue(result.new)
        for run, summary in result.ended_runs:
            with self.lock:
                if self.db.end_run(run, summary, self.clock()):
                    log.info("run %s ended (%s)", run, summary)
        return added

    def _queue(self, files: list[NewFile]) -> int:
        """Add found files to the ledger, a chunk per lock hold, and wake waiting engines."""
        added = 0
        for i in range(0, len(files), SCAN_CHUNK):
            with self.lock:
                now = self.clock()
                new = self.db.add_files(files[i : i + SCAN_CHUNK], now)
                self.live.arrived(now, new)
                added += new
        if added:
            log.info("%d new file(s) queued", added)
            self._notify()
        return added

    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.scan()
            except Exception:
                log.exception("scan failed; will try again")
            self._scan_wake.wait(rescan_pause(self.settings.rescan_s, time.monotonic() - started))
            self._scan_wake.clear()

    def _pending_loop(self) -> None:
        while not self._stop.is_set():
            self._pending_wake.wait(PENDING_CHECK_S)
            self._pending_wake.clear()
            try:
                if self._discovery is not None and self._discovery.pending_count:
                    self.check_pending()
            except Exception:
                log.exception("pending check failed; will try again")

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
    ) -> Assignment | None:
        """A batch for `engine`, or None. An engine that runs only its own model (every
        original engine) gets the live generation's files only. With `prepare` False the
        caller creates the job's folders (`prepare_folders`) before answering the engine:
        the API does it off its event loop and outside the lock."""
        with self.lock:
            now = self.clock()
            self._seen(engine, now)
            backfill = any_model and self._may_backfill(engine, now)
            self.engines[engine].use_generation(self.db.next_generation(None if backfill else [0]))
            assignment = scheduler.claim(
                self.db,
                engine,
                requested,
                now,
                self.policy,
                api,
                speed=self.engines[engine].speed,
                fleet=self._fleet(now),
                gens=None if backfill else [0],
            )
            if assignment is None:
                return None
            job = assignment.job
            failpoints.hit("claim.after-commit")
            if prepare:
                self.prepare_folders(assignment)
            self.last_activity = now
            self._unconfirmed.add(job.id)
            seen = self.engines[engine]
            seen.job_id, seen.job_claimed, seen.progress = job.id, now, None
            seen.job_bytes = sum(f.size for f in assignment.files)
            self._fleet_claimed(seen, now)
        log.debug("job %d: %d file(s) to %s", job.id, len(assignment.files), engine)
        return assignment

    def prepare_folders(self, assignment: Assignment) -> None:
        """Create a claimed job's INPUT folder of symlinks and its empty output folder.

        Safe without the lock: the job is in the ledger already, its folders are its own,
        and a crash before they exist is mended at start (`Recovery.reconcile`)."""
        job = assignment.job
        self.layout.prepare_job(job.id, job.engine, [f.path for f in assignment.files])

    def _may_backfill(self, engine: str, now: float) -> bool:
        """Whether `engine` may take backfill work now: only while the engines left idle
        cover the live reserve (`bcmanager.backfill`)."""
        if len(self.generations) < 2:
            return True
        reserve = self.live.reserve(now)
        if reserve == 0:
            return True
        horizon = max(60.0, 2 * self.settings.lease_s)
        idle = sum(
            1
            for e in self.engines.values()
            if e.engine != engine and e.job_id is None and now - e.last_seen <= horizon
        )
        return may_backfill(idle, reserve)

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
            self._seen(job.engine, now)
            self.last_activity = now
            expires = scheduler.renew(self.db, job, now)
            self._unconfirmed.discard(job.id)
            seen = self.engines[job.engine]
            if seen.job_id == job.id and basecalled:
                self._basecalled(seen, job, progress, now)
            elif seen.job_id == job.id and progress is not None:
                seen.progress = (now, progress)
            return replace(job, lease_expires=expires)

    def _basecalled(self, seen: EngineSeen, job: JobRow, timing: Timing | None, now: float) -> None:
        """The engine's basecaller has finished `job`; the engine files its output while it
        claims its next batch. Its speed is learnt now, from the basecaller's account, not
        at the report after filing: the next batch it claims, a moment later, is sized from
        it. Its GPU holds no batch until then."""
        if timing is not None:
            self._learn_batch(seen, job, seen.job_bytes, timing, now)
            seen.measured_job = job.id
        seen.job_id, seen.progress = None, None

    def _learn_batch(
        self, engine: EngineSeen | None, job: JobRow, size: int, timing: Timing | None, now: float
    ) -> None:
        """Learn from a batch once (at its basecaller's end, else at its report): the output
        a pod5 byte makes with its model, and its engine's speed."""
        if timing is not None and timing.output_bytes:
            self._learn_output(job.gen, timing.output_bytes, size)
        if engine is not None:
            engine.use_generation(job.gen)
            engine.record_batch(size, now - job.created, timing)

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
            self._seen(job.engine, now)
            self.last_activity = now
            if job.state is JobState.ASSIGNED:
                self._finish(job, outcome, reason, now, yields, timing)
                return Completion(scheduler.get_job(self.db, job_id))
            if job.state is JobState.EXPIRED:
                where = self.layout.set_aside_late_output(job.id, job.engine)
                scheduler.mark_late(self.db, job, now)
                self._tell(Happening("late", now, job.engine))
                log.warning(
                    "job %d: late report from %s; output kept in %s", job.id, job.engine, where
                )
                return Completion(scheduler.get_job(self.db, job_id), late=True)
            late = job.state is JobState.LATE
            return Completion(job, late=late, repeated=True)

    def _forget_job(self, job: JobRow) -> EngineSeen | None:
        """The engine no longer holds `job` (it ended or its lease expired): nor its progress."""
        self._unconfirmed.discard(job.id)
        engine = self.engines.get(job.engine)
        if engine is not None and engine.job_id == job.id:
            engine.job_id, engine.progress = None, None
        return engine

    def _finish(
        self,
        job: JobRow,
        outcome: Outcome,
        reason: str | None,
        now: float,
        yields: list[dict] | None = None,
        timing: Timing | None = None,
    ) -> None:
        engine = self._forget_job(job)
        if outcome is Outcome.DONE:  # checked before anything is journaled or moved
            files = self.db.files_of_job(job.id)
            inputs = [{"path": f.path, "size": f.size, "reads": f.reads} for f in files]
            gen = self.generation(job.gen)
            plan = self.layout.plan_merge(
                job.id,
                job.engine,
                inputs,
                self.output,
                lambda: self._run_folder(files),
                root=gen.output_root,
            )
            problem = merge_problem(
                self.layout.tmp_output_dir(job.id, job.engine), [src for src, _ in plan["outputs"]]
            )
            if problem is not None:  # nothing renamed; its folder kept in FAILEDOUTPUT_*
                outcome, reason = Outcome.FAILED, f"not merged: {problem}"
        if outcome is Outcome.DONE:
            if gen.id or gen.model is not None:
                plan["generation"] = gen.to_dict()
            if yields:
                plan["yields"] = yields
            scheduler.begin_merge(self.db, job, plan, now)
            failpoints.hit("complete.after-journal")
            self._merge(scheduler.get_job(self.db, job.id), now)
            self._tell(batch_done(job, files, now))
            if job.gen == 0:
                self.live.batch_done(now - job.created)
            size = sum(f.size for f in files)
            if engine is None or engine.measured_job != job.id:  # else learnt in `_basecalled`
                self._learn_batch(engine, job, size, timing, now)
            if engine is not None:
                engine.jobs_done += 1
                engine.files_done += len(files)
                if timing is not None and timing.filing_s is not None and engine.gen == job.gen:
                    engine.record_filing(size, timing.filing_s)
        elif outcome is Outcome.FAILED:
            why = reason or "engine reported FAILED"
            poisoned = scheduler.fail(self.db, job, why, now, self.policy)
            self._tell(Happening("failed", now, job.engine, job.n_files, quarantined=len(poisoned)))
            self.layout.set_aside_failed(job.id, job.engine)
            self._record_quarantine(poisoned)
            log.warning("job %d failed on %s: %s", job.id, job.engine, why)
            self._notify()
        else:
            scheduler.release(self.db, job, now)
            self.layout.drop_assignment(job.id, job.engine)
            log.info("job %d handed back by %s", job.id, job.engine)
            self._notify()

    def _run_folder(self, files: list[FileRow]) -> str:
        """The OUTPUT run folder of a batch, for output that does not name its run (FASTQ of
        an original engine). MinKNOW's run folder, or for pod5 outside one the folder of
        their run (from the pod5 itself); the OUTPUT root when a flat folder's batch mixes
        runs, since the manager never reads reads to tell them apart."""
        from bcmanager.output.naming import minknow_run_folder
        from bcmanager.output.origin import run_folder_of_pod5

        folders = set()
        for f in files:
            folder = minknow_run_folder(f.path)
            if folder is None:
                try:  # its run table alone, not the pod5 library: this runs under the lock
                    folder = run_folder_of_pod5(self.layout.input / f.path, f.path)
                except Exception as exc:  # unreadable pod5: its INPUT folder
                    log.warning("%s: cannot read its run information (%s)", f.path, exc)
                    folder = run_of(f.path)
            folders.add(folder)
        if len(folders) > 1:
            log.warning(
                "a batch of %d runs from a flat folder: its FASTQ goes to OUTPUT", len(folders)
            )
            return "."
        return folders.pop()

    def _merge(self, job: JobRow, now: float) -> bool:
        """Run (or finish) a journaled merge; on a disk error keep it journaled and retry later.

        Merges run one at a time in job order: a merge waits while an earlier one is
        unfinished, so summary appends never overtake each other."""
        earlier = [j for j in self._unmerged if j < job.id]
        if earlier:
            self._unmerged.add(job.id)
            log.warning("job %d: merge waits for job %d's", job.id, min(earlier))
            return False
        plan = json.loads(job.merge_plan or "{}")
        started = time.monotonic()
        try:
            plan = self.layout.write_manifest(plan)
            self.layout.apply_merge(plan)
        except OSError as exc:
            self._unmerged.add(job.id)
            log.error("job %d: merge failed (%s); it stays journaled and is retried", job.id, exc)
            self.db.record_event(now, "merge-error", str(exc), job_id=job.id)
            return False
        mine = self.yields.setdefault(job.gen, {})
        changed = added(mine, [Yield.from_dict(y) for y in plan.get("yields", ())])
        scheduler.finish_merge(self.db, job, now, [y.to_dict() for y in changed.values()])
        mine.update(changed)
        self._tell(Happening("merged", now, job.engine, seconds=time.monotonic() - started))
        self._unmerged.discard(job.id)
        log.info("job %d merged: %d output file(s)", job.id, len(plan.get("outputs", [])))
        return True

    def tick(self) -> None:
        """Expire overdue leases and retry merges that hit a disk error."""
        with self.lock:
            now = self.clock()
            expired = scheduler.expire_overdue(self.db, now, self.policy)
            for job, poisoned in expired:
                self._tell(
                    Happening("expired", now, job.engine, job.n_files, quarantined=len(poisoned))
                )
                self.layout.drop_assignment(job.id, job.engine)
                self._forget_job(job)
                self._record_quarantine(poisoned)
                log.warning("job %d on %s: lease expired, files requeued", job.id, job.engine)
            retry_merges = self._unmerged and now >= self._merge_retry_at
            if retry_merges:  # a full disk is retried every few seconds, not every tick
                self._merge_retry_at = now + MERGE_RETRY_S
            for job_id in sorted(self._unmerged) if retry_merges else ():
                job = self.db.get_job(job_id)
                if job is None or job.state is not JobState.MERGING:
                    self._unmerged.discard(job_id)
                elif not self._merge(job, now):
                    break  # the rest wait for this one
        if expired or self.queued():  # also a safety net for a wake whose claim went away
            self._notify()

    def _record_quarantine(self, files: list[FileRow]) -> None:
        for f in files:
            fresh = self.db.get_file(f.path, f.gen)
            why = fresh.reason if fresh and fresh.reason else "quarantined"
            self.layout.record_quarantine(f.path, why, self.generation(f.gen).output_root)
            log.error("quarantined %s: %s", f.path, why)

    def _learn_output(self, gen: int, output_bytes: int, input_bytes: int) -> None:
        """How many bytes of output a pod5 byte makes with a generation's model: engines'
        progress (output so far) becomes pod5 bytes basecalled by it. The first batch of a
        generation makes the fleet be seen anew, so engines still at their first batch are
        sized from their progress at once."""
        out, inp = self._output_sums.get(gen, (0.0, 0.0))
        self._output_sums[gen] = (out + output_bytes, inp + input_bytes)
        if not inp:
            self._fleet_cache = None

    def _output_per_byte(self, gen: int) -> float | None:
        out, inp = self._output_sums.get(gen, (0.0, 0.0))
        return out / inp if inp else None

    def _fleet(self, now: float) -> Fleet:
        """The engines seen lately, each with how long the batch it holds is still predicted
        to take; rebuilt at most every `fleet_refresh_s` (a pass over 5,000 engines per
        claim would be the manager's limit)."""
        stale_after = fleet_refresh_s(len(self.engines))
        if self._fleet_cache is None or now - self._fleet_cache[0] >= stale_after:
            horizon = max(60.0, 2 * self.settings.lease_s)
            speeds = {
                e.engine: e.fleet_speed(now, self._output_per_byte(e.gen))
                for e in self.engines.values()
                if now - e.last_seen <= horizon
            }
            self._fleet_cache = (now, Fleet.of(speeds, now))
        return self._fleet_cache[1]

    def _fleet_claimed(self, seen: EngineSeen, now: float) -> None:
        """The cached fleet with an engine's new batch in it, so that claims within the
        same second share the tail with it as it is (not as idle)."""
        if self._fleet_cache is not None:
            at, fleet = self._fleet_cache
            speed = seen.fleet_speed(now, self._output_per_byte(seen.gen))
            self._fleet_cache = (at, fleet.with_engine(seen.engine, speed, now))

    def _seen(self, engine: str, now: float) -> None:
        seen = self.engines.get(engine)
        if seen is None:
            self.engines[engine] = EngineSeen(engine, now)
            if self._fleet_cache is not None:  # counted at once: first batches split by it
                at, fleet = self._fleet_cache
                self._fleet_cache = (at, replace(fleet, size=fleet.size + 1))
        else:
            seen.last_seen = now

    # -- views ------------------------------------------------------------------------

    def _runs_cached(self, now: float) -> list[dict[str, object]]:
        """Per-run counts group a million rows: computed at most every few seconds, on a
        read-only connection, without the manager's lock."""
        if self._runs_cache is None or now - self._runs_cache[0] >= RUNS_CACHE_S:
            self._runs_cache = (now, self._status_reader().run_table())
        return self._runs_cache[1]

    def _status_reader(self) -> LedgerReader:
        """A read-only connection for views: their queries hold up no claim (WAL readers
        see the last commit and block no writer)."""
        assert self._views is not None, "Manager.open() first"
        return self._views

    def _running_jobs(self, leases: dict[int, float]) -> Steps[list[dict[str, object]]]:
        """Views of the jobs assigned or merging, read without the lock, their leases as
        now renewed."""
        rows = yield from blocking(self._status_reader().live_job_rows)
        return (
            yield from mapped(
                rows,
                lambda r: job_view(job_row(r), leases.get(r[0])),
            )
        )

    def run_state(self) -> str:
        """'done' once every run has ended and every file is basecalled or quarantined."""
        with self.lock:
            counts = self.db.file_counts()
            busy = counts[FileState.QUEUED] or counts[FileState.ASSIGNED] or self._unmerged
            runs, still_open = self.db.runs_open()
        pending = self._discovery.pending_count if self._discovery else 0
        if busy or pending:
            return "basecalling" if busy else "waiting"
        return "done" if runs and not still_open else "waiting"

    def heartbeat_view(self) -> dict[str, object]:
        idle = self.clock() - self.last_activity
        return {
            "status": "true" if idle >= self.settings.idle_shutdown_s else "false",
            "inactivity_interval": idle,
        }

    def status(self) -> dict[str, object]:
        return stepwise.run(self.status_steps())

    def status_steps(self) -> Steps[dict[str, object]]:
        """`status`, a step at a time (`bcmanager.stepwise`): thousands of engines and
        running jobs are viewed a few hundred per step."""
        with self.lock:
            now = self.clock()
            files = {s.value: n for s, n in self.db.file_counts().items()}
            jobs = {s.value: n for s, n in self.db.job_counts().items()}
            leases = self.db.lease_expiries()
            quarantined = self.db.files_in_state(FileState.QUARANTINED, 100)
            events = [e.as_dict() for e in self.db.last_events(20)]
            generations = self.generations_view()
            yields = [  # merges change these: read them under the lock
                {**totals[key].view(), "generation": self.generations[gen].name}
                for gen, totals in sorted(self.yields.items())
                for key in sorted(totals)
            ]
        # the heavy reads (thousands of running jobs, per-run counts) outside the lock
        running = yield from self._running_jobs(leases)
        runs = yield from blocking(lambda: self._runs_cached(now))
        total = sum(files.values())
        engines = sorted(self.engines.values(), key=lambda e: e.engine)
        yield None
        engine_views = yield from mapped(engines, lambda e: engine_view(e, now))
        return {
            "state": self.run_state(),
            "pending": self._discovery.pending_count if self._discovery else 0,
            "runs": runs,
            "input": str(self.layout.input),
            "output": str(self.layout.output),
            "ledger": str(self.db.path),
            "now": now,
            "files": files,
            "files_total": total,
            "finished": total > 0 and files["queued"] == 0 and files["assigned"] == 0,
            "jobs": jobs,
            "running_jobs": running,
            "engines": engine_views,
            "quarantined": [{"path": f.path, "reason": f.reason} for f in quarantined],
            "output_layout": self.output.name,
            "yields": yields,
            "generations": generations,
            "scan": dict(self.last_scan),
            # inotify is set up in the background after start; False: rescans only (yet)
            "watching": self._observer is not None,
            "events": events,
        }

    def job_detail(self, job_id: int) -> dict[str, object]:
        with self.lock:
            job = scheduler.get_job(self.db, job_id)
            files = [f.path for f in self.db.files_of_job(job_id)]
        view = job_view(job)
        view["files"] = (
            files if job.state in (JobState.ASSIGNED, JobState.MERGING, JobState.DONE) else []
        )
        return view


def batch_done(job: JobRow, files: list[FileRow], now: float) -> Happening:
    """A merged batch as the metrics see it; reads/samples None unless known for every file."""
    known = all(f.reads is not None for f in files)
    return Happening(
        "done",
        now,
        job.engine,
        len(files),
        sum(f.size for f in files),
        sum(f.reads or 0 for f in files) if known else None,
        sum(f.samples or 0 for f in files) if all(f.samples is not None for f in files) else None,
        now - job.created,
    )


def rescan_pause(rescan_s: float, last_scan_s: float) -> float:
    """Seconds until the next full rescan: the configured interval, or longer when a scan
    itself is slow (a flat folder of a million files), so rescans never take more than a
    few percent of the manager's time. inotify hints and new folders still wake it early."""
    return max(rescan_s, RESCAN_COST_FACTOR * last_scan_s)


def progress_view(progress: tuple[float, Timing] | None, now: float) -> dict[str, object] | None:
    """An engine's last word on the batch it holds (v1 heartbeats), None before any."""
    if progress is None:
        return None
    at, p = progress
    return {
        "startup_s": round(p.startup_s, 3),
        "basecall_s": round(p.basecall_s, 3),
        "output_bytes": p.output_bytes,
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


__all__ = ["Completion", "Happening", "LeaseLost", "Manager", "Outcome", "Timing"]
