"""The engine's loop: claim a batch, basecall it, file it, report it, claim again.

Loop: long-poll claim -> run the basecaller as a subprocess while a thread sends
heartbeats -> claim again at once. A batch whose basecaller succeeded is filed into
the output layout and reported DONE in the background while the next batch's
basecaller starts, so the GPU never waits on filing (one batch filed at a time,
reports in job order); a failed one is reported at once. An idle engine is answered
the moment work exists, so no GPU waits on a sleep.

- Told it is late (409), it stops the basecaller and drops the batch (its output
  is set aside by the manager, never merged).
- The manager going away (restart, network) is survived: calls are retried with
  backoff (`client`), and a finished batch is reported once the manager is back.
- `stop()` (SIGTERM) stops the basecaller and hands the batch back at once, so no
  lease has to run out before another engine gets the files.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bcmanager.basecallers.abc import Basecaller
from bcmanager.engine.client import (
    JobLost,
    JobUnknown,
    LeaseLost,
    ManagerClient,
    ManagerGone,
    ManagerRefused,
    ManagerUnreachable,
)
from bcmanager.engine.filing import file_output, filing_args, model_min_qscore
from bcmanager.engine.run import BasecallerRun, read_ids_of, terminate
from bcmanager.errors import ConfigError
from bcmanager.output.filing import stream_filing
from bcmanager.output.stream import StreamFiling

log = logging.getLogger("bcmanager.engine")


@dataclass(frozen=True)
class EngineConfig:
    manager_url: str
    engine_id: str
    batch_size: int | None = None  # None: the manager's default
    until_empty: bool = False
    wait_s: float = 30.0  # long-poll of one claim
    token: str | None = None
    min_qscore: float | None = None  # pass/fail threshold; None: MinKNOW's for the model


@dataclass
class Batch:
    """A claimed job on this engine, from claim to report: a heartbeat thread keeps its
    lease the whole time, filing included (a large BAM takes a while to split)."""

    job: dict[str, Any]
    started: float
    late: threading.Event = field(default_factory=threading.Event)
    reported: threading.Event = field(default_factory=threading.Event)
    run: BasecallerRun | None = None  # its basecaller, once started
    final: dict[str, float] | None = None  # its progress when the basecaller exited
    basecalled: bool = False  # the basecaller finished it (exit 0): being filed
    beat: threading.Thread | None = None
    filing: StreamFiling | None = None  # its stdout filed as it is written

    @property
    def job_id(self) -> int:
        return int(self.job["job_id"])

    def progress(self, now: float) -> dict[str, Any] | None:
        """What the heartbeats say of it: as it grows (with the reads filed so far out of
        the batch's, where its stream is filed as it comes), then as it was at the
        basecaller's exit (while filing rewrites the output folder)."""
        if self.final is not None:
            return self.final
        sofar = self.run.progress(now) if self.run is not None else None
        total = self.reads_total()
        if sofar is None or self.filing is None or not total:
            return sofar
        done, filed_at = self.filing.filed
        reads: dict[str, Any] = {"done": done, "total": total}
        if filed_at is not None:  # when, in basecalling seconds: counts grow in steps
            reads["at_s"] = min(
                sofar["basecall_s"], max(0.0, sofar["basecall_s"] - (now - filed_at))
            )
        return {**sofar, "reads": reads}

    def reads_total(self) -> int | None:
        """The reads the batch holds: a slice's count, the files' where the claim said,
        else what its filing read of them (None until then)."""
        files = self.job["files"]
        if any(f.get("slice") for f in files):
            return sum(int(f["slice"]["count"]) for f in files if f.get("slice"))
        if files and all(f.get("reads") is not None for f in files):
            return sum(int(f["reads"]) for f in files)
        return self.filing.reads_in if self.filing is not None else None

    def end(self) -> None:
        """Reported (or given up): its heartbeats stop, and a stream filing not finished
        is abandoned."""
        self.reported.set()
        if self.filing is not None:
            self.filing.abandon()
        if self.beat is not None and self.beat is not threading.current_thread():
            self.beat.join()


@dataclass
class JobResult:
    job_id: int
    outcome: str  # done | failed | released | dropped
    seconds: float
    files: int


class Engine:
    """Claims batches from a manager and keeps one basecaller busy (the module's docstring)."""

    def __init__(
        self, config: EngineConfig, basecaller: Basecaller, client: httpx.Client | None = None
    ) -> None:
        self.config = config
        self.basecaller = basecaller
        self.stopping = threading.Event()
        self.manager = ManagerClient(config.manager_url, config.token, self.stopping, client)
        self.results: list[JobResult] = []
        self._proc: subprocess.Popen[bytes] | None = None  # the basecaller running now
        self._delivery: threading.Thread | None = None  # filing and reporting a batch
        self._delivery_error: BaseException | None = None
        self.idle = True  # waiting on a claim, no batch in hand
        self._recipes: dict[tuple, Basecaller] = {}  # generations' basecallers, prepared

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (or, with until_empty, until a claim finds nothing). Exit code."""
        log.info(
            "engine %s -> %s, basecaller %s",
            self.config.engine_id,
            self.config.manager_url,
            self.basecaller.describe(),
        )
        try:
            self.basecaller.prepare()
        except ConfigError as exc:
            log.error("cannot start the basecaller: %s", exc)
            self.basecaller.close()
            return 2
        except BaseException:  # e.g. SIGTERM while a server starts: stop what was started
            self.basecaller.close()
            raise
        try:
            return self._work()
        finally:
            for other in self._recipes.values():
                other.close()
            self.basecaller.close()

    def _work(self) -> int:
        try:
            while not self.stopping.is_set():
                self.idle = True
                job, more_expected = self.claim()
                self.idle = job is None
                self._check_delivery()
                if job is not None and self.stopping.is_set():
                    self._report(job, "released", "engine stopping")
                    break
                if job is None:
                    if self.config.until_empty and not more_expected:
                        if self._await_delivery():  # its report may hand files back
                            continue
                        log.info(
                            "nothing queued, settling, being scanned or unconfirmed; exiting (--until-empty)"
                        )
                        return 0
                    continue
                self.run_job(job)
            self._await_delivery()
        except ManagerGone:
            pass
        except ManagerRefused as exc:
            log.error("the manager refused this engine: %s", exc)
            return 2
        finally:  # a batch being filed is reported before the engine goes, even on SIGTERM
            self._await_delivery(raise_errors=False)
        log.info("engine %s stopped after %d job(s)", self.config.engine_id, len(self.results))
        return 0

    def stop(self) -> None:
        """Stop soon: the running basecaller is stopped and its batch handed back."""
        self.stopping.set()
        terminate(self._proc)

    def claim(self) -> tuple[dict[str, Any] | None, bool]:
        """A job (or None after the long poll) and whether the manager expects more work."""
        return self.manager.claim(
            self.config.engine_id,
            self.config.wait_s,
            until_empty=self.config.until_empty,
            max_files=self.config.batch_size,
            any_model=self.basecaller.switches_models,
            slices=self.basecaller.slices,
        )

    def basecaller_for(self, job: dict[str, Any]) -> Basecaller:
        """The basecaller for a job's generation: the engine's own for the implicit one
        (no model named), else the same backend with the generation's recipe (aligned to
        the generation's reference where it names one, else to the engine's own), prepared
        (e.g. its model downloaded) the first time it is needed."""
        gen = job.get("generation") or {}
        model = gen.get("model")
        if model is None:
            return self.basecaller
        options = gen.get("options") or {}
        reference = options.get("reference")
        key = (model, options.get("kit_name"), tuple(options.get("modified_bases", ())), reference)
        if key not in self._recipes:
            other = self.basecaller.with_recipe(*key[:3])
            if reference:
                other = other.with_reference(reference)
            other.prepare()
            self._recipes[key] = other
            log.info("generation %s: %s", gen.get("name"), other.describe())
        return self._recipes[key]

    def run_job(self, job: dict[str, Any]) -> None:
        """Basecall one batch. A failed one is reported now; a successful one is handed to
        a delivery thread (filing, then the report) and the engine claims its next batch."""
        batch = Batch(job, time.monotonic())
        log.info("job %d: %d file(s)", batch.job_id, len(job["files"]))
        try:
            basecaller = self.basecaller_for(job)
        except ConfigError as exc:
            log.error(
                "job %d: cannot run generation %s: %s", batch.job_id, job.get("generation"), exc
            )
            self._report(job, "failed", f"cannot run this generation here: {exc}"[:1000])
            self._ended(batch, "failed")
            return
        batch.beat = threading.Thread(
            target=self._heartbeat_loop,
            args=(batch,),
            name=f"heartbeat-{batch.job_id}",
            daemon=True,
        )
        batch.beat.start()
        try:
            returncode = self._basecall(basecaller, batch)
        except BaseException:
            batch.end()
            raise
        # stopping: the basecaller was told to stop, and its exit code is not to be trusted
        if returncode == 0 and not batch.late.is_set() and not self.stopping.is_set():
            batch.basecalled = True
            self._say_basecalled(batch)
        if batch.late.is_set():
            log.warning("job %d: lease lost; basecaller stopped, batch dropped", batch.job_id)
            self._report(job, "failed", "lease lost")
            self._ended(batch, "dropped")
        elif not batch.basecalled and self.stopping.is_set():
            self._report(job, "released", "engine stopping")
            log.info("job %d handed back (engine stopping)", batch.job_id)
            self._ended(batch, "released")
        elif not batch.basecalled:
            self._report(job, "failed", f"basecaller exit code {returncode}")
            self._ended(batch, "failed")
        else:
            try:
                self._await_delivery()  # one batch filed at a time: reports stay in job order
            except BaseException:  # the last report was refused: the engine stops
                batch.end()
                raise
            self._delivery = threading.Thread(
                target=self._deliver, args=(batch, basecaller), name=f"deliver-{batch.job_id}"
            )
            self._delivery.start()

    def _ended(self, batch: Batch, outcome: str) -> None:
        batch.end()
        seconds = time.monotonic() - batch.started
        self.results.append(JobResult(batch.job_id, outcome, seconds, len(batch.job["files"])))

    def _basecall(self, basecaller: Basecaller, batch: Batch) -> int:
        """Run the basecaller (`run.BasecallerRun`), its stream filed as it is written;
        its exit code. For a backend that writes as it goes, the batch's `final` progress:
        its start-up (to its first output), basecalling time and output bytes."""
        job = batch.job
        run = BasecallerRun(
            basecaller, Path(job["input_dir"]), Path(job["output_dir"]), read_ids_of(job)
        )
        if not run.start():
            return 127
        self._proc = run.proc
        batch.run = run
        stdout_path = run.invocation.stdout_path
        if basecaller.native_output and stdout_path is not None:
            # filed while it is written (None: a layout filed at the end)
            args = filing_args(job, basecaller, self.min_qscore(basecaller.model))
            batch.filing = stream_filing(stdout_path, **args)
        returncode = run.wait(lambda: batch.late.is_set() or self.stopping.is_set())
        if batch.filing is not None:
            batch.filing.basecaller_exited()
        batch.final = run.progress_at_exit()
        return returncode

    # -- delivery: filing (`filing`) and reporting a basecalled batch, in a thread --------

    def _deliver(self, batch: Batch, basecaller: Basecaller) -> None:
        """File the basecaller's output and report DONE (with its yield and timing, filing
        included); its outcome in `results`: done, failed (filing failed) or dropped (the
        lease ran out)."""
        outcome = "failed"
        try:
            job = batch.job
            started = time.monotonic()
            min_qscore = self.min_qscore(basecaller.model)
            filed = file_output(job, basecaller, batch.filing, min_qscore)
            if isinstance(filed, str):
                self._report(job, "failed", filed)
                return
            yields = [y.to_dict() for y in filed.yields] if filed is not None else None
            timing = None
            if batch.final is not None:
                timing = {**batch.final, "filing_s": time.monotonic() - started}
            if self._report(job, "done", None, yields, timing) == 409:
                log.warning("job %d: lease lost before the report; batch dropped", batch.job_id)
                outcome = "dropped"
            else:
                outcome = "done"
        except BaseException as exc:  # handed to the engine's loop (e.g. ManagerRefused)
            self._delivery_error = exc
        finally:
            self._ended(batch, outcome)

    def _await_delivery(self, raise_errors: bool = True) -> bool:
        """Wait until the batch being delivered is reported; whether one was."""
        delivery = self._delivery
        if delivery is None:
            return False
        delivery.join()
        self._delivery = None
        if raise_errors:
            self._check_delivery()
        return True

    def _check_delivery(self) -> None:
        """Raise in the engine's loop what stopped a delivery (the manager refused it)."""
        error, self._delivery_error = self._delivery_error, None
        if error is not None:
            raise error

    def min_qscore(self, model: str | None = None) -> float:
        """The pass threshold: --min-qscore, else MinKNOW's for the model (the engine's
        own by default; fast 8, hac 9, sup 10; 9 when the model's name does not tell)."""
        if self.config.min_qscore is not None:
            return self.config.min_qscore
        return model_min_qscore(model or self.basecaller.model or "hac")

    # -- talking to the manager (`client`) ----------------------------------------------

    def _heartbeat(self, batch: Batch) -> None:
        """One heartbeat for a batch: its progress, and whether it is basecalled."""
        self.manager.heartbeat(
            batch.job_id,
            batch.job["token"],
            batch.progress(time.monotonic()),
            basecalled=batch.basecalled,
        )

    def _say_basecalled(self, batch: Batch) -> None:
        """Tell the manager, before claiming the next batch, that the basecaller has
        finished this one and how long it took: the next batch is sized from it, not from
        what the manager knew before (the report comes after filing)."""
        try:
            self._heartbeat(batch)
        except ManagerUnreachable as exc:  # the report will say it all the same
            log.warning("job %d: cannot say it is basecalled (%s)", batch.job_id, exc)
        except JobLost:
            batch.late.set()

    def _heartbeat_loop(self, batch: Batch) -> None:
        job_id = batch.job_id
        interval = max(0.05, float(batch.job["heartbeat_s"]))
        wait = 0.0  # the first at once: it tells the manager this engine has the job
        while not batch.reported.wait(wait):
            wait = interval
            try:
                self._heartbeat(batch)
            except ManagerUnreachable as exc:
                log.warning("job %d: heartbeat failed (%s); will try again", job_id, exc)
            except JobLost:
                batch.late.set()
                if batch.run is not None:  # else its basecaller is not started: it sees `late`
                    batch.run.terminate()
                return

    def _report(
        self,
        job: dict[str, Any],
        outcome: str,
        reason: str | None,
        yields: list[dict[str, Any]] | None = None,
        timing: dict[str, float] | None = None,
    ) -> int | None:
        """Report a job's end; a late (409) or forgotten (404) job is not an engine error.

        Returns the manager's status code, None when it could not be reached."""
        job_id = job["job_id"]
        try:
            self.manager.complete(job_id, job["token"], outcome, reason, yields, timing)
        except LeaseLost as exc:  # e.g. frozen past the lease: the batch was requeued
            log.warning("job %d: lease lost: %s", job_id, exc.error)
            return exc.status_code
        except JobUnknown as exc:
            log.warning("job %d: manager says %s", job_id, exc.error)
            return exc.status_code
        except ManagerGone:
            log.error("job %d: could not report %s; the lease will expire", job_id, outcome)
            return None
        return 200
