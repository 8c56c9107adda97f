"""Merging a finished batch into OUTPUT: plan, check, journal, apply, and quarantine.

A DONE report's outputs are planned into the OUTPUT layout, checked whole (a truncated
BAM or gzip is never merged), journaled in a manifest in the job's output folder, then
renamed into place, and the job ends in one ledger transaction. A merge that hits a disk
error is journaled in the ledger too (the job turns MERGING) and retried every
MERGE_RETRY_S; merges finish in job order, so summary appends never overtake each
other. A crash between journal and the job's end is finished at the next start
(`bcmanager.recovery`, from the manifest or the ledger's journal, through `Merger.merge`).

Every method runs under the manager's lock: it reads and writes the ledger, the yields
and the set of unfinished merges, which claims and views read under that lock too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from bcmanager import failpoints, scheduler
from bcmanager.generations import Generation
from bcmanager.layout import Layout
from bcmanager.ledger import FileRow, JobRow, Ledger
from bcmanager.output.layouts import OutputLayout, output_layout
from bcmanager.output.whole import merge_problem
from bcmanager.output.yields import Yield, added
from bcmanager.reports import Happening
from bcmanager.scanner import run_of
from bcmanager.states import JobState

log = logging.getLogger("bcmanager.manager")

MERGE_RETRY_S = 5.0


# A claimed file's run folder is read ahead once its job is this old: a batch merged
# sooner (a test, a tiny batch) reads it at its merge, and no thread wakes per claim.
READ_AHEAD_S = 1.0


class RunFolders:
    """The OUTPUT run folder of claimed pod5 files outside MinKNOW's run folders (a flat
    INPUT), read from each file's run table by a thread of its own a moment after the
    claim: minutes before a real batch is merged, and never under the manager's lock or
    on a request's way (an original engine's FASTQ names no run, so its merge needs it).
    Not read ahead (a batch done within READ_AHEAD_S, a restart), it is read at the merge.
    """

    def __init__(self, input_dir: Path) -> None:
        self._input = input_dir
        self._known: dict[int, dict[str, str]] = {}  # by job, then path
        self._wanted: set[int] = set()  # jobs not ended yet
        self._todo: deque[tuple[float, int, str]] = deque()  # (claimed, job, path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bcm-run-folders", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None

    def want(self, job_id: int, paths: Iterable[str]) -> None:
        """Read a claimed job's files' run folders soon (files in a MinKNOW run folder
        need none). Costs an append: the thread looks every READ_AHEAD_S."""
        if self._thread is None:
            return
        from bcmanager.output.naming import minknow_run_folder

        now = time.monotonic()
        self._wanted.add(job_id)
        self._todo.extend((now, job_id, p) for p in paths if minknow_run_folder(p) is None)

    def folder(self, job_id: int, path: str) -> str:
        """A job's file's run folder: as read ahead, else read now."""
        known = self._known.get(job_id, {}).get(path)
        return known if known is not None else self.read(path)

    def read(self, path: str) -> str:
        from bcmanager.output.naming import minknow_run_folder
        from bcmanager.output.origin import run_folder_of_pod5

        folder = minknow_run_folder(path)
        if folder is not None:
            return folder
        try:  # its run table alone, not the pod5 library
            return run_folder_of_pod5(self._input / path, path)
        except Exception as exc:  # unreadable pod5: its INPUT folder
            log.warning("%s: cannot read its run information (%s)", path, exc)
            return run_of(path)

    def forget(self, job_id: int) -> None:
        """The job has ended (merged, failed, expired or handed back): what is still to
        be read for it is not read."""
        self._wanted.discard(job_id)
        self._known.pop(job_id, None)

    def _run(self) -> None:
        while not self._stop.wait(READ_AHEAD_S):
            self.read_due(time.monotonic() - READ_AHEAD_S)

    def read_due(self, claimed_by: float) -> int:
        """Read the files of live jobs claimed by `claimed_by` (monotonic); how many."""
        done = 0
        while self._todo and self._todo[0][0] <= claimed_by and not self._stop.is_set():
            _claimed, job_id, path = self._todo.popleft()
            if job_id not in self._wanted:
                continue  # ended before its turn (its merge read it, if it needed it)
            folder = self.read(path)
            if job_id in self._wanted:
                self._known.setdefault(job_id, {})[path] = folder
                done += 1
        return done


def _input(f: FileRow) -> dict:
    """A merged job's input as its manifest records it (a slice: which reads)."""
    item: dict = {"path": f.path, "size": f.size, "reads": f.reads}
    if f.part is not None:
        item["slice"] = f.part.to_dict()
    return item


class Merger:
    """The manager's merges and quarantine records, and the yields merged so far."""

    def __init__(
        self,
        db: Callable[[], Ledger],
        layout: Layout,
        generation: Callable[[int], Generation],
        tell: Callable[[Happening], None],
    ) -> None:
        self._db = db
        self.layout = layout
        self._generation = generation
        self._tell = tell
        self.run_folders = RunFolders(layout.input)
        self.output: OutputLayout = output_layout("minknow")  # settled by Manager.open()
        # merged jobs' yield: per generation, then per run and barcode
        self.yields: dict[int, dict[tuple[str, str], Yield]] = {}
        self.unmerged: set[int] = set()  # journaled merges a disk error left unfinished
        self.unrecorded: list[FileRow] = []  # quarantines a disk error kept from QUARANTINE
        self._retry_at = 0.0

    def load_yields(self) -> None:
        """The yields of every merge the ledger holds (at start)."""
        self.yields = {}
        for d in self._db().yield_totals():
            self.yields.setdefault(d["gen"], {})[(d["run"], d["barcode"])] = Yield.from_dict(d)

    def merge_done(
        self, job: JobRow, files: list[FileRow], yields: list[dict] | None, now: float
    ) -> str | None:
        """Plan a DONE batch's merge, check its outputs whole, and run it. Returns what
        stops it (then nothing is journaled or renamed), or None.

        The plan's manifest, written into the job's output folder before anything moves,
        is its journal: a crash after it is finished at the next start from the manifest
        (`Recovery`), so a merge costs the ledger one transaction, the job's end. A merge
        that cannot run now (a disk error, an earlier merge unfinished) is journaled in
        the ledger as well (the job turns MERGING: never expired, retried in order)."""
        inputs = [_input(f) for f in files]
        gen = self._generation(job.gen)
        plan = self.layout.plan_merge(
            job.id,
            job.engine,
            inputs,
            self.output,
            lambda: self.run_folder(job.id, files),
            root=gen.output_root,
        )
        problem = merge_problem(
            self.layout.tmp_output_dir(job.id, job.engine), [src for src, _ in plan["outputs"]]
        )
        if problem is not None:
            return problem
        if gen.id or gen.model is not None:
            plan["generation"] = gen.to_dict()
        if yields:
            plan["yields"] = yields
        if self._earlier_unmerged(job.id):
            self.journal_and_merge(job, plan, now)
            return None
        started = time.monotonic()
        try:
            plan = self.layout.write_manifest(plan)
            failpoints.hit("complete.after-journal")
            self.layout.apply_merge(plan)
        except Exception as exc:
            scheduler.begin_merge(self._db(), job, plan, now)
            if not isinstance(exc, OSError):
                raise
            self._merge_failed(job, exc, now)
            return None
        self._merged(job, plan, now, started, files)
        return None

    def run_folder(self, job_id: int, files: list[FileRow]) -> str:
        """The OUTPUT run folder of a batch, for output that does not name its run (FASTQ of
        an original engine). MinKNOW's run folder, or for pod5 outside one the folder of
        their run (`RunFolders`, read after the claim); the OUTPUT root when a flat
        folder's batch mixes runs, since the manager never reads reads to tell them apart."""
        folders = {self.run_folders.folder(job_id, f.path) for f in files}
        if len(folders) > 1:
            log.warning(
                "a batch of %d runs from a flat folder: its FASTQ goes to OUTPUT", len(folders)
            )
            return "."
        return folders.pop()

    def merge(self, job: JobRow, now: float) -> bool:
        """Run (or finish) a journaled merge; on a disk error keep it journaled and retry later.

        Merges run one at a time in job order: a merge waits while an earlier one is
        unfinished, so summary appends never overtake each other."""
        earlier = self._earlier_unmerged(job.id)
        if earlier:
            self.unmerged.add(job.id)
            log.warning("job %d: merge waits for job %d's", job.id, min(earlier))
            return False
        plan = json.loads(job.merge_plan or "{}")
        started = time.monotonic()
        try:
            plan = self.layout.write_manifest(plan)
            self.layout.apply_merge(plan)
        except OSError as exc:
            self._merge_failed(job, exc, now)
            return False
        self._merged(job, plan, now, started)
        return True

    def journal_and_merge(self, job: JobRow, plan: dict, now: float) -> bool:
        """Journal a running job's merge in the ledger (it turns MERGING), then run it."""
        scheduler.begin_merge(self._db(), job, plan, now)
        return self.merge(scheduler.get_job(self._db(), job.id), now)

    def _earlier_unmerged(self, job_id: int) -> list[int]:
        """Unfinished merges of earlier jobs: a merge waits for them (summary appends)."""
        return [j for j in self.unmerged if j < job_id]

    def _merge_failed(self, job: JobRow, exc: OSError, now: float) -> None:
        """A journaled merge hit a disk error: it is retried (`retry_due`)."""
        self.unmerged.add(job.id)
        log.error("job %d: merge failed (%s); it stays journaled and is retried", job.id, exc)
        self._db().record_event(now, "merge-error", str(exc), job_id=job.id)

    def _merged(
        self,
        job: JobRow,
        plan: dict,
        now: float,
        started: float,
        batch: list[FileRow] | None = None,
    ) -> None:
        """The merge is on disk: the job and its files (`batch`, when read already) are
        done, its yield counted once."""
        mine = self.yields.setdefault(job.gen, {})
        changed = added(mine, [Yield.from_dict(y) for y in plan.get("yields", ())])
        totals = [y.to_dict() for y in changed.values()]
        scheduler.finish_merge(self._db(), job, now, totals, batch)
        mine.update(changed)
        self._tell(Happening("merged", now, job.engine, seconds=time.monotonic() - started))
        self.unmerged.discard(job.id)
        log.info("job %d merged: %d output file(s)", job.id, len(plan.get("outputs", [])))

    def retry_due(self, now: float) -> None:
        """Retry what a disk error left undone: quarantine records, then merges in job
        order, stopping at the first that fails again; a full disk is retried every few
        seconds, not at every tick."""
        if not (self.unmerged or self.unrecorded) or now < self._retry_at:
            return
        self._retry_at = now + MERGE_RETRY_S
        pending, self.unrecorded = self.unrecorded, []
        self.record_quarantine(pending)
        for job_id in sorted(self.unmerged):
            job = self._db().get_job(job_id)
            if job is None or job.state is not JobState.MERGING:
                self.unmerged.discard(job_id)
            elif not self.merge(job, now):
                break  # the rest wait for this one

    def record_quarantine(self, files: list[FileRow]) -> None:
        """Write quarantined files into their generation's QUARANTINE record (the ledger
        has them quarantined already). A record the disk refuses (full) is written at a
        later `retry_due`, never lost: `bcm verify` and a rebuilt ledger read it."""
        for f in files:
            fresh = self._db().get_file(f.path, f.gen)
            why = fresh.reason if fresh and fresh.reason else "quarantined"
            try:
                self.layout.record_quarantine(f.path, why, self._generation(f.gen).output_root)
            except OSError as exc:
                log.error("quarantined %s, not yet recorded in QUARANTINE (%s)", f.path, exc)
                self.unrecorded.append(f)
                continue
            log.error("quarantined %s: %s", f.path, why)
