"""The engine: claims batches over the v1 API and keeps one basecaller busy.

Loop: long-poll claim -> run the basecaller as a subprocess while a thread sends
heartbeats -> claim again at once. A batch whose basecaller succeeded is filed into
the output layout and reported DONE in the background while the next batch's
basecaller starts, so the GPU never waits on filing (one batch filed at a time,
reports in job order); a failed one is reported at once. An idle engine is answered
the moment work exists, so no GPU waits on a sleep.

- Told it is late (409), it stops the basecaller and drops the batch (its output
  is set aside by the manager, never merged).
- The manager going away (restart, network) is survived: calls are retried with
  backoff, and a finished batch is reported once the manager is back.
- `stop()` (SIGTERM) stops the basecaller and hands the batch back at once, so no
  lease has to run out before another engine gets the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bcmanager.basecallers.abc import Basecaller
from bcmanager.errors import ConfigError
from bcmanager.output.check import check_batch, filtered_list_name, write_filtered_lists
from bcmanager.output.filing import (
    Filed,
    file_native_output,
    finish_stream_filing,
    run_folder_of,
    stream_filing,
)
from bcmanager.output.split import STAGING_DIR
from bcmanager.output.stream import StreamFiling

log = logging.getLogger("bcmanager.engine")

MAX_BACKOFF_S = 2.0  # a GPU waits at most this long once the manager is back
KILL_GRACE_S = 5.0
READY_POLL_S = 0.1  # how often the engine looks for the basecaller's first output
BASECALLER_LOG = "basecaller.log"  # its stderr, in the job's output folder
DEFAULT_MIN_QSCORE = 9.0  # MinKNOW's hac threshold, for models whose speed is not named


class ManagerGone(Exception):
    """The manager could not be reached, and the engine is stopping anyway."""


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
class BatchClock:
    """The running basecaller's times (monotonic): its start, its first output (its model
    loaded: start-up over). The heartbeats report progress from it; None until a backend
    that writes as it goes has written."""

    output_dir: Path
    log_path: Path
    started: float
    ready: float | None = None

    def progress(self, now: float) -> dict[str, float] | None:
        """Start-up, basecalling so far and the bytes written so far, which grow with the
        reads basecalled (the manager turns them into the batch's pod5 bytes done)."""
        if self.ready is None:
            return None
        return {
            "startup_s": self.ready - self.started,
            "basecall_s": max(0.0, now - self.ready),
            "output_bytes": output_bytes(self.output_dir, self.log_path),
        }

    def basecalling_end(self, now: float) -> float:
        """When the exited basecaller wrote its last read (monotonic), not when it exited:
        what it does after (closing files, freeing the GPU, its summary) is a fixed cost
        of every batch, and counted as basecalling it would make a short first batch's
        rate seem slower than the GPU is (by 1 % in a 16 s batch here)."""
        age = last_output_age(self.output_dir, self.log_path)
        if self.ready is None or age is None or now - age <= self.ready:
            return now
        return now - age


@dataclass
class Batch:
    """A claimed job on this engine, from claim to report: a heartbeat thread keeps its
    lease the whole time, filing included (a large BAM takes a while to split)."""

    job: dict[str, Any]
    started: float
    late: threading.Event = field(default_factory=threading.Event)
    reported: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None
    clock: BatchClock | None = None
    final: dict[str, float] | None = None  # its progress when the basecaller exited
    basecalled: bool = False  # the basecaller finished it (exit 0): being filed
    beat: threading.Thread | None = None
    filing: StreamFiling | None = None  # its stdout filed as it is written

    @property
    def job_id(self) -> int:
        return int(self.job["job_id"])

    def progress(self, now: float) -> dict[str, float] | None:
        """What the heartbeats say of it: as it grows, then as it was at the basecaller's
        exit (while filing rewrites the output folder)."""
        if self.final is not None:
            return self.final
        return self.clock.progress(now) if self.clock is not None else None

    def heartbeat(self, now: float) -> dict[str, Any]:
        """A heartbeat's body: the token, its progress, whether it is basecalled."""
        body: dict[str, Any] = {"token": self.job["token"]}
        progress = self.progress(now)
        if progress is not None:
            body["progress"] = progress
        if self.basecalled:
            body["basecalled"] = True
        return body

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
    def __init__(
        self, config: EngineConfig, basecaller: Basecaller, client: httpx.Client | None = None
    ) -> None:
        self.config = config
        self.basecaller = basecaller
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self.client = client or httpx.Client(
            base_url=config.manager_url.rstrip("/"), headers=headers, timeout=10.0
        )
        self.stopping = threading.Event()
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
        self._terminate()

    def claim(self) -> tuple[dict[str, Any] | None, bool]:
        """A job (or None after the long poll) and whether the manager expects more work."""
        wait = self.config.wait_s
        body: dict[str, Any] = {"engine_id": self.config.engine_id, "wait_s": wait}
        if self.config.until_empty:
            body["until_empty"] = True
        if self.config.batch_size:
            body["max_files"] = self.config.batch_size
        if self.basecaller.switches_models:
            body["models"] = "any"
        answer = self._call("POST", "/v1/claim", body, timeout=wait + 10).json()
        return answer["job"], bool(answer.get("more_expected", False))

    def basecaller_for(self, job: dict[str, Any]) -> Basecaller:
        """The basecaller for a job's generation: the engine's own for the implicit one
        (no model named), else the same backend with the generation's recipe, prepared
        (e.g. its model downloaded) the first time it is needed."""
        gen = job.get("generation") or {}
        model = gen.get("model")
        if model is None:
            return self.basecaller
        options = gen.get("options") or {}
        key = (model, options.get("kit_name"), tuple(options.get("modified_bases", ())))
        if key not in self._recipes:
            other = self.basecaller.with_recipe(*key)
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

    def _deliver(self, batch: Batch, basecaller: Basecaller) -> None:
        """File the basecaller's output and report DONE (with its yield and timing, filing
        included); its outcome in `results`: done, failed (filing failed) or dropped (the
        lease ran out)."""
        outcome = "failed"
        try:
            job = batch.job
            started = time.monotonic()
            filed = self._file_output(batch, basecaller)
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

    def _file_output(self, batch: Batch, basecaller: Basecaller) -> Filed | str | None:
        """File a native basecaller's reads into the manager's layout (the rest of its
        stream, when filed as it was written): what was filed, None for a basecaller that
        writes the layout's own FASTQ, or why filing failed."""
        if not basecaller.native_output:
            return None
        job = batch.job
        try:
            filed = self._finish_stream(batch)
            if filed is None:
                filed = file_native_output(**self._filing(basecaller, job))
        except Exception as exc:  # a bad BAM, a read of no pod5 of the job, a full disk
            log.error("job %d: cannot file the basecaller's output: %s", job["job_id"], exc)
            return f"filing the output failed: {exc}"[:1000]
        log.info("job %d: %d read(s) into %d file(s)", job["job_id"], filed.reads, len(filed.files))
        problem = self._check_batch(job, basecaller, filed)
        return filed if problem is None else problem

    def _check_batch(self, job: dict[str, Any], basecaller: Basecaller, filed: Filed) -> str | None:
        """Every read of the batch's pod5 files in its filed outputs exactly once, every
        output whole (`output.check`); why not, or None. Reads the basecaller says it
        filtered are listed beside their run's outputs."""
        started = time.monotonic()
        input_dir, output_dir = Path(job["input_dir"]), Path(job["output_dir"])
        pod5_files = {f["name"]: input_dir / f["name"] for f in job["files"]}
        try:
            said = basecaller.filtered_reads(
                (output_dir / BASECALLER_LOG).read_text(encoding="utf-8", errors="replace")
            )
        except OSError:
            said = 0
        check = check_batch(
            pod5_files, [output_dir / rel for rel in filed.files], filtered_by_basecaller=said
        )
        problem = check.problem()
        if problem is not None:
            log.error("job %d: the batch check failed: %s", job["job_id"], problem)
            return f"batch check: {problem}"[:1000]
        if check.filtered:
            folders = {
                f["name"]: run_folder_of(
                    input_dir / f["name"], f["path"], job.get("output_layout", "legacy")
                )
                for f in job["files"]
                if f["name"] in check.missing
            }
            write_filtered_lists(output_dir, check.missing, folders, job["job_id"])
            log.warning(
                "job %d: %d read(s) filtered by the basecaller (it says %d), listed in %s",
                job["job_id"],
                check.n_missing,
                said,
                filtered_list_name(job["job_id"]),
            )
        log.info(
            "job %d: checked %d read(s) in %d output(s) in %.2f s",
            job["job_id"],
            check.reads,
            len(filed.files),
            time.monotonic() - started,
        )
        return None

    def _finish_stream(self, batch: Batch) -> Filed | None:
        """The batch's stream filed to its end; None when it was not followed, or when
        following failed (the basecaller's whole output is then filed from its file,
        which is complete: a stream's trouble never loses a batch)."""
        if batch.filing is None:
            return None
        try:
            filed = finish_stream_filing(batch.filing, Path(batch.job["output_dir"]))
            log.info(
                "job %d: %s of %d read(s) filed while the basecaller ran",
                batch.job_id,
                batch.filing.reads_at_exit,
                filed.reads,
            )
            return filed
        except Exception as exc:
            log.warning(
                "job %d: filing the basecaller's stream failed (%s); filing its file",
                batch.job_id,
                exc,
            )
            return None

    def min_qscore(self, model: str | None = None) -> float:
        """The pass threshold: --min-qscore, else MinKNOW's for the model (the engine's
        own by default; fast 8, hac 9, sup 10; 9 when the model's name does not tell)."""
        if self.config.min_qscore is not None:
            return self.config.min_qscore
        from bcmanager.output.split import default_min_qscore

        try:
            return default_min_qscore(model or self.basecaller.model or "hac")
        except ValueError:
            return DEFAULT_MIN_QSCORE

    # -- the basecaller subprocess ----------------------------------------------------

    def _basecall(self, basecaller: Basecaller, batch: Batch) -> int:
        """Run the basecaller; its exit code. For a backend that writes as it goes, the
        batch's `final` progress: its start-up (to its first output), basecalling time and
        output bytes."""
        input_dir, output_dir = Path(batch.job["input_dir"]), Path(batch.job["output_dir"])
        output_dir.mkdir(parents=True, exist_ok=True)
        inv = basecaller.invocation(input_dir, output_dir)
        log_path = output_dir / BASECALLER_LOG
        with open(log_path, "ab") as log_file:
            stdout = log_file
            if inv.stdout_path is not None:
                inv.stdout_path.parent.mkdir(parents=True, exist_ok=True)
                stdout = open(inv.stdout_path, "wb")  # noqa: SIM115 - closed once Popen has it
            try:
                self._proc = subprocess.Popen(
                    inv.argv,
                    stdout=stdout,
                    stderr=log_file,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **inv.env},
                    start_new_session=True,
                )
            except OSError as exc:
                log.error("cannot start the basecaller %s: %s", inv.argv[0], exc)
                log_file.write(f"cannot start {inv.argv}: {exc}\n".encode())
                return 127
            finally:
                if stdout is not log_file:
                    stdout.close()
            proc = batch.proc = self._proc
            clock = batch.clock = BatchClock(output_dir, log_path, time.monotonic())
            if basecaller.native_output and inv.stdout_path is not None:
                # filed while it is written (None: a layout filed at the end)
                batch.filing = stream_filing(inv.stdout_path, **self._filing(basecaller, batch.job))
            watch_output = basecaller.native_output
            while True:
                try:
                    returncode = proc.wait(timeout=READY_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if batch.late.is_set() or self.stopping.is_set():
                        self._terminate(proc)
                    if watch_output and clock.ready is None and output_bytes(output_dir, log_path):
                        clock.ready = time.monotonic()
        if batch.filing is not None:
            batch.filing.basecaller_exited()
        # not a backend that writes as it goes, or done within one poll: no timing
        batch.final = clock.progress(clock.basecalling_end(time.monotonic()))
        return returncode

    def _filing(self, basecaller: Basecaller, job: dict[str, Any]) -> dict[str, Any]:
        """What filing a job's output needs to know (`output.filing`'s arguments)."""
        return {
            "output_dir": Path(job["output_dir"]),
            "input_dir": Path(job["input_dir"]),
            "files": job["files"],
            "layout": job.get("output_layout", "legacy"),
            "job_id": job["job_id"],
            "min_qscore": self.min_qscore(basecaller.model),
            "barcoding": basecaller.barcoding,
        }

    def _terminate(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Stop a basecaller (by default the one running now), its whole process group."""
        proc = proc or self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass

    # -- talking to the manager -------------------------------------------------------

    def _say_basecalled(self, batch: Batch) -> None:
        """Tell the manager, before claiming the next batch, that the basecaller has
        finished this one and how long it took: the next batch is sized from it, not from
        what the manager knew before (the report comes after filing)."""
        try:
            r = self.client.post(
                f"/v1/jobs/{batch.job_id}/heartbeat", json=batch.heartbeat(time.monotonic())
            )
        except httpx.TransportError as exc:  # the report will say it all the same
            log.warning("job %d: cannot say it is basecalled (%s)", batch.job_id, exc)
            return
        if r.status_code in (404, 409):
            batch.late.set()

    def _heartbeat_loop(self, batch: Batch) -> None:
        job_id = batch.job_id
        interval = max(0.05, float(batch.job["heartbeat_s"]))
        wait = 0.0  # the first at once: it tells the manager this engine has the job
        while not batch.reported.wait(wait):
            wait = interval
            body = batch.heartbeat(time.monotonic())
            try:
                r = self.client.post(f"/v1/jobs/{job_id}/heartbeat", json=body)
            except httpx.TransportError as exc:
                log.warning("job %d: heartbeat failed (%s); will try again", job_id, exc)
                continue
            if r.status_code in (404, 409):
                batch.late.set()
                if batch.proc is not None:  # else its basecaller is not started: it sees `late`
                    self._terminate(batch.proc)
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
        body: dict[str, Any] = {"token": job["token"], "outcome": outcome}
        if reason:
            body["reason"] = reason
        if yields:
            body["yields"] = yields
        if timing:
            body["timing"] = timing
        path = f"/v1/jobs/{job['job_id']}/complete"
        try:
            r = self._call("POST", path, body, ok=(200, 404, 409), retry_while_stopping=True)
            if r.status_code == 409:  # e.g. frozen past the lease: the batch was requeued
                log.warning("job %d: lease lost: %s", job["job_id"], r.json().get("error"))
            elif r.status_code != 200:
                log.warning("job %d: manager says %s", job["job_id"], r.json().get("error"))
            return r.status_code
        except ManagerGone:
            log.error("job %d: could not report %s; the lease will expire", job["job_id"], outcome)
            return None

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        timeout: float = 10.0,
        ok: tuple[int, ...] = (200,),
        retry_while_stopping: bool = False,
    ) -> httpx.Response:
        """One request, retried with backoff while the manager is unreachable or failing."""
        delay = 0.2
        attempts = 0
        while True:
            try:
                r = self.client.request(method, path, json=body, timeout=timeout)
                if r.status_code in ok:
                    return r
                if 400 <= r.status_code < 500:
                    raise ManagerRefused(f"{method} {path}: {r.status_code} {r.text}")
                problem = f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            attempts += 1
            if self.stopping.is_set() and (not retry_while_stopping or attempts > 3):
                raise ManagerGone(problem)
            log.warning("manager unreachable (%s); retrying in %.1f s", problem, delay)
            time.sleep(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)


def output_bytes(output_dir: Path, log_path: Path) -> int:
    """What the basecaller has written but its log, hidden files too (a backend writing as
    it goes, to stdout or to files): more than none means its model is loaded and it is
    basecalling."""
    return sum(st.st_size for st in _output_stats(output_dir, log_path))


def last_output_age(output_dir: Path, log_path: Path) -> float | None:
    """Seconds since the basecaller last wrote output (its last read), None before any."""
    newest = max((st.st_mtime for st in _output_stats(output_dir, log_path)), default=None)
    return None if newest is None else max(0.0, time.time() - newest)


def _output_stats(output_dir: Path, log_path: Path) -> Iterator[os.stat_result]:
    """The basecaller's files: not its log, nor the reads being filed from its stream."""
    for folder, dirs, names in os.walk(output_dir):
        if folder == str(output_dir) and STAGING_DIR in dirs:
            dirs.remove(STAGING_DIR)
        for name in names:
            path = os.path.join(folder, name)
            if path != str(log_path):
                with contextlib.suppress(OSError):
                    yield os.stat(path)


class ManagerRefused(Exception):
    """The manager answered a 4xx: a configuration problem (token, engine id, batch size)."""
