"""One basecaller run of one batch: the subprocess, its clock and its output.

The basecaller runs in its own process group (stopped as a whole), its stderr appended
to the batch's `basecaller.log`, its stdout to the invocation's file (or the log). For
a backend that writes as it goes (`native_output`), its first output ends its start-up
(its model loaded) and its last output ends its basecalling: what the heartbeats and
the DONE report tell the manager, which sizes batches from them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcmanager.basecallers.abc import Basecaller
from bcmanager.output.split import STAGING_DIR

log = logging.getLogger("bcmanager.engine")

KILL_GRACE_S = 5.0
READY_POLL_S = 0.1  # how often the engine looks for the basecaller's first output
BASECALLER_LOG = "basecaller.log"  # its stderr, in the job's output folder


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


def read_ids_of(job: dict[str, Any]) -> Path | None:
    """A slice's read list (the job's `read_ids`), or None for a batch of whole files."""
    named = job.get("read_ids")
    return Path(named) if named else None


class BasecallerRun:
    """A basecaller run on one batch: `start()`, then `wait()` for its exit code; its
    progress meanwhile, and at its exit `progress_at_exit()`."""

    def __init__(
        self,
        basecaller: Basecaller,
        input_dir: Path,
        output_dir: Path,
        read_ids: Path | None = None,
    ) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.invocation = basecaller.invocation(input_dir, output_dir, read_ids)
        self.output_dir = output_dir
        self.log_path = output_dir / BASECALLER_LOG
        self.watch_output = basecaller.native_output  # writes as it goes: its start-up timed
        self.proc: subprocess.Popen[bytes] | None = None
        self.clock: BatchClock | None = None

    def start(self) -> bool:
        """Start the subprocess; False when it cannot be (said in both logs: the engine
        then reports exit code 127, as a shell would)."""
        inv = self.invocation
        with open(self.log_path, "ab") as log_file:
            stdout = log_file
            if inv.stdout_path is not None:
                inv.stdout_path.parent.mkdir(parents=True, exist_ok=True)
                stdout = open(inv.stdout_path, "wb")  # noqa: SIM115 - closed once Popen has it
            try:
                self.proc = subprocess.Popen(
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
                return False
            finally:
                if stdout is not log_file:
                    stdout.close()
            self.clock = BatchClock(self.output_dir, self.log_path, time.monotonic())
        return True

    def wait(self, should_stop: Callable[[], bool]) -> int:
        """Its exit code, once it has exited: stopped as soon as `should_stop()` says so
        (a lost lease, a stopping engine); its first output noted on the clock."""
        proc, clock = self.proc, self.clock
        if proc is None or clock is None:
            raise RuntimeError("the basecaller was not started")
        while True:
            try:
                return proc.wait(timeout=READY_POLL_S)
            except subprocess.TimeoutExpired:
                if should_stop():
                    terminate(proc)
                if self.watch_output and clock.ready is None and self.output_bytes():
                    clock.ready = time.monotonic()

    def output_bytes(self) -> int:
        return output_bytes(self.output_dir, self.log_path)

    def progress(self, now: float) -> dict[str, float] | None:
        """Its progress so far (`BatchClock.progress`); None before it has written."""
        return self.clock.progress(now) if self.clock is not None else None

    def progress_at_exit(self) -> dict[str, float] | None:
        """Its progress as of its last output (`BatchClock.basecalling_end`): its start-up,
        basecalling time and output bytes; None for a backend that does not write as it
        goes, or one done within one poll."""
        if self.clock is None:
            return None
        return self.clock.progress(self.clock.basecalling_end(time.monotonic()))

    def terminate(self) -> None:
        terminate(self.proc)


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a basecaller, its whole process group: SIGTERM, SIGKILL after KILL_GRACE_S."""
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
