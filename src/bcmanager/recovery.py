"""Recovery at start: bring the ledger and the disk into line after a crash at any instant.

Three concerns, each run once under the manager's lock before it serves:

- the ledger belongs to this INPUT and OUTPUT (`check_owner`);
- a lost ledger is rebuilt from the layout alone: merge manifests, job folders and the
  quarantine list (`rebuild_from_layout`);
- whatever a crash left half done is finished or undone (`reconcile`): merges journaled
  but not applied, merges on disk that a ledger behind the disk lacks (power loss),
  job folders of jobs that are no longer running, late outputs, the quarantine list.

Pure core: the ledger, the layout and two callbacks of the manager (apply a journaled
merge, record quarantined files); no threads, no HTTP, `now` passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bcmanager import failpoints, scheduler
from bcmanager.errors import ConfigError, CorruptState
from bcmanager.layout import Layout, plan_generation
from bcmanager.ledger import FileRow, JobRow, Ledger, NewFile
from bcmanager.scheduler import Policy
from bcmanager.states import FileState, JobState

log = logging.getLogger("bcmanager.recovery")


@dataclass
class Recovery:
    db: Ledger
    layout: Layout
    policy: Policy
    merge: Callable[[JobRow, float], bool]  # run (or finish) a journaled merge
    journal_and_merge: Callable[[JobRow, dict, float], bool]  # journal one in the ledger, run it
    record_quarantine: Callable[[list[FileRow]], None]
    # create a running job's folders (a slice's read list too); None: links only
    prepare_job: Callable[[JobRow, list[FileRow]], None] | None = None

    def check_owner(self) -> None:
        """A ledger remembers its INPUT and OUTPUT; another pair is a configuration error."""
        for key, path in (("input", self.layout.input), ("output", self.layout.output)):
            recorded = self.db.get_meta(key)
            if recorded is None:
                self.db.set_meta(key, str(path))
            elif recorded != str(path):
                raise ConfigError(
                    f"ledger {self.db.path} belongs to {key} {recorded}, not {path};"
                    " pass --db for a separate ledger"
                )

    def settle_output_layout(self, requested: str | None) -> str:
        """The OUTPUT's layout: what its ledger or its results say, else `requested`, else
        minknow. Asking for the other layout than an OUTPUT holds is a ConfigError: one
        folder never mixes two."""
        held = self.db.get_meta("output_layout") or self.layout.output_layout_on_disk()
        if held is not None and requested is not None and requested != held:
            raise ConfigError(
                f"OUTPUT {self.layout.output} holds the {held} layout, not {requested}:"
                f" use --output-layout {held}, or another OUTPUT"
            )
        chosen = held or requested or "minknow"
        if self.db.get_meta("output_layout") != chosen:
            self.db.set_meta("output_layout", chosen)
        return chosen

    def rebuild_from_layout(self, now: float, find_files: Callable[[], Iterable[NewFile]]) -> bool:
        """The ledger was lost: rebuild it from manifests, job folders and the quarantine list.

        `find_files` lists INPUT's complete pod5 files. False when OUTPUT holds no run."""
        snap = self.layout.read_snapshot()
        if not (snap.finished or snap.merging or snap.running or snap.failures) and not (
            snap.quarantined or snap.max_job_id
        ):
            return False
        log.warning("no ledger but a run's folders in OUTPUT: rebuilding state from the layout")
        self.db.reserve_job_ids(snap.max_job_id)
        self.db.add_files(find_files(), now)
        for plan in snap.finished + snap.merging:
            self._adopt_merge(plan, now)
            failpoints.hit("rebuild.after-a-merge")
        for job_id, engine, paths in snap.running:
            self._recreate_job(job_id, engine, paths, now)
        for path, failures in snap.failures.items():
            row = self.db.get_file(path)
            if row is not None and row.state is FileState.QUEUED:
                self.db.set_attempts(row.id, failures)
        for path, why in snap.quarantined.items():
            row = self.db.get_file(path)
            if row is not None and row.state is FileState.QUEUED:
                self.db.set_file_state(
                    [row.id], FileState.QUEUED, FileState.QUARANTINED, now, reason=why
                )
            elif row is not None and row.state is FileState.ASSIGNED:  # sliced, some merged
                self.db.set_file_state(
                    [row.id], FileState.ASSIGNED, FileState.QUARANTINED, now, reason=why
                )
                self.db.quarantine_queued_slices(row.id, why, now)
        self.db.record_event(now, "manager", "ledger rebuilt from the layout")
        return True

    def reconcile(self, now: float) -> None:
        """Bring the disk in line with the ledger after a crash at any instant."""
        self._adopt_merges_the_ledger_lacks(
            {j.id for j in self.db.jobs_in([JobState.ASSIGNED])}, now
        )
        for job in self.db.jobs_in([JobState.MERGING]):
            self.merge(job, now)
        live = {job.id: job for job in self.db.jobs_in([JobState.ASSIGNED])}
        for job in live.values():
            self._prepare(job, self.db.batch_of_job(job.id))
        for kind, job_id, engine, _path in self.layout.job_dirs_on_input():
            if kind != "ASSIGNED" or job_id in live:
                continue
            job = self.db.get_job(job_id)
            if job is not None and job.state is JobState.FAILED:
                self.layout.set_aside_failed(job_id, engine)
            else:
                self.layout.drop_assignment(job_id, engine)
        for job in self.db.jobs_in([JobState.LATE]):
            self.layout.set_aside_late_output(job.id, job.engine)
        roots = {g.id: g.output_root for g in self.db.generations()}
        lists = {gen: self.layout.read_quarantine_list(root) for gen, root in roots.items()}
        missing = [
            f
            for f in self.db.files_in_state(FileState.QUARANTINED, 1_000_000)
            if f.path not in lists.get(f.gen, {})
        ]
        self.record_quarantine(missing)

    def _prepare(self, job: JobRow, files: list[FileRow]) -> None:
        if self.prepare_job is not None:
            self.prepare_job(job, files)
        else:
            self.layout.prepare_job(job.id, job.engine, [f.path for f in files])

    def _adopt_merge(self, plan: dict, now: float) -> None:
        """Take into the ledger a merge the disk shows (its manifest), finishing it if needed."""
        job = self.db.get_job(plan["job_id"])
        pieces = [item for item in plan["inputs"] if "slice" in item]
        if job is None and pieces:
            job = self._recreate_slice_job(plan, pieces[0], now)
        elif job is None:
            job = self._recreate_job(
                plan["job_id"], plan["engine"], plan_paths(plan), now, plan_generation(plan)
            )
        if job is not None and job.state is JobState.ASSIGNED:
            self.journal_and_merge(job, plan, now)

    def _adopt_merges_the_ledger_lacks(self, live: set[int], now: float) -> None:
        """After a power loss the ledger (synchronous=NORMAL) may lag the disk by its last
        commits: merges finished or journaled on disk whose job the ledger still calls
        running, or does not know, are taken from their manifests so no file is
        basecalled twice. The ledger is a prefix of history, so only running jobs and
        ids above the largest known can be at risk; new ids start above all on disk."""
        newest = self.db.max_job_id()
        seen = newest
        for kind, job_id, _engine, path in self.layout.job_dirs():
            seen = max(seen, job_id)
            if kind in ("LOGOUTPUT", "TMPOUTPUT") and (job_id in live or job_id > newest):
                plan = self.layout.read_manifest(path)
                if plan is not None:
                    log.warning("job %d: merged on disk but not in the ledger; adopting", job_id)
                    self._adopt_merge(plan, now)
        self.db.reserve_job_ids(seen)

    def _recreate_job(
        self, job_id: int, engine: str, paths: list[str], now: float, gen: int = 0
    ) -> JobRow | None:
        """A job the disk shows, with its files queued in the ledger. A job folder on INPUT
        does not say its generation: such jobs are taken as the live generation's (a
        backfill batch running when the ledger was lost is basecalled again)."""
        rows = [r for r in self.db.files_by_paths(paths, gen) if r.state is FileState.QUEUED]
        if not rows:
            return None
        self.db.create_job(
            engine,
            scheduler.new_token(),
            "rebuilt",
            self.policy.lease_s,
            len(rows),
            now,
            job_id=job_id,
            gen=gen,
        )
        self.db.set_file_state(
            [r.id for r in rows], FileState.QUEUED, FileState.ASSIGNED, now, job_id=job_id
        )
        return self.db.get_job(job_id)

    def _recreate_slice_job(self, plan: dict, item: dict, now: float) -> JobRow | None:
        """A merged slice the disk shows: its file sliced (the reads no merge holds stay
        queued), this slice its job's. None when the ledger cannot take it (its reads
        in another slice already: a manifest twice, say)."""
        gen = plan_generation(plan)
        file = self.db.get_file(item["path"], gen)
        part = item["slice"]
        first, count, of = int(part["first"]), int(part["count"]), int(part["of"])
        if file is None or file.state not in (FileState.QUEUED, FileState.ASSIGNED):
            return None
        if file.state is FileState.ASSIGNED and not self.db.slices_of_file(file.id):
            return None  # out whole in a job the disk shows running: not sliced
        try:
            with self.db.transaction():
                if file.state is FileState.QUEUED:
                    self.db.start_slicing(file, of, now)
                self.db.create_job(
                    plan["engine"],
                    scheduler.new_token(),
                    "rebuilt",
                    self.policy.lease_s,
                    1,
                    now,
                    job_id=plan["job_id"],
                    gen=gen,
                )
                self.db.take_slice(file, first, count, plan["job_id"], now)
        except CorruptState as exc:
            log.error("job %d: its slice cannot be adopted (%s)", plan["job_id"], exc)
            return None
        return self.db.get_job(plan["job_id"])


def plan_paths(plan: dict) -> list[str]:
    """The INPUT paths a merge plan covers."""
    return [item["path"] for item in plan["inputs"]]
