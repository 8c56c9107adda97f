"""Dorado's basecall server, started once per engine, fed each batch by its supervisor client.

What the original BC-pipelines did with two scripts, managed by the engine:

- `prepare()` starts `dorado_basecall_server --config CONFIG --log_path LOGS --port PORT
  --device DEVICE` (the original's `server.sh`) in its own process group, so the model is
  loaded once per engine and GPU, and waits until the server answers.
- Each batch runs `ont_basecaller_supervisor --num_clients N --input_path INPUT
  --save_path OUTPUT/basecalls --config CONFIG --port PORT --bam_out` (the original's
  `supervisor.sh`, plus `--bam_out`) as the job's subprocess; its exit code is the batch's
  outcome, as for every backend.
- `close()` stops the server: SIGTERM to its process group, SIGKILL after a grace period.

Output: `--bam_out` makes the client write unaligned BAM (`pass/` and `fail/` under
`--save_path`), which keeps Dorado's per-read tags (`RG`, `qs`, `ch`, `st`, `fn`, ...); the
server's FASTQ headers carry Guppy-style `key=value` fields instead, which the filing step
cannot read a run from. The BAM lies under `OUTPUT/basecalls/`, so the engine files it into
the manager's layout (`native_output`); the client's `sequencing_summary.txt` and logs
there are not read files and are dropped with the folder.

Readiness: the server answers when its port accepts a connection (a unix socket path,
or with a numeric port `127.0.0.1:PORT` and the server's `--use_tcp`). `prepare()` polls
that every 0.1 s until `server_timeout_s`; a server that exits first, or never answers,
is a ConfigError naming the port and the log (the server is stopped in the latter case).
Something else already answering on the port is a ConfigError too: two engines must not
share one server they each think they own.

Restarts: before each batch `invocation()` checks that the server process is alive and
its port answers; a dead (or silent) server is stopped and started again, paying the
start-up once more. A server that dies during a batch makes the client fail (non-zero
exit), so the engine reports the batch FAILED and the manager hands its files out
again; nothing is lost. If the restart itself fails, the error is logged and the client
runs anyway and fails, so that batch too is retried, and the next batch tries again.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.basecallers.script import require_executable
from bcmanager.errors import ConfigError
from bcmanager.records import NATIVE_DIR

log = logging.getLogger("bcmanager.basecallers.dorado_server")

DEFAULT_SERVER = "dorado_basecall_server"
DEFAULT_SUPERVISOR = "ont_basecaller_supervisor"
DEFAULT_NUM_CLIENTS = 5  # as the original's supervisor.sh
DEFAULT_SERVER_TIMEOUT_S = 600.0  # model load and GPU benchmarking can take minutes
STOP_GRACE_S = 10.0
POLL_S = 0.1
SERVER_OUT = "server.out"  # the server's stdout and stderr, in its log folder
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 104-108 bytes
PR_SET_PDEATHSIG = 1  # prctl(2)


def default_runtime_dir() -> Path:
    """Where the server's socket and logs go unless given: one folder per engine process."""
    return Path(tempfile.gettempdir()) / f"bcm-dorado-server-{os.getpid()}"


class DoradoServerBasecaller(Basecaller):
    """One `dorado_basecall_server` per engine, one supervisor client per batch."""

    name = "dorado-server"
    native_output = True

    def __init__(
        self,
        config: str,
        *,
        server: str = DEFAULT_SERVER,
        supervisor: str = DEFAULT_SUPERVISOR,
        device: str = "cuda:all",
        port: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        num_clients: int = DEFAULT_NUM_CLIENTS,
        server_timeout_s: float = DEFAULT_SERVER_TIMEOUT_S,
    ) -> None:
        if not config:
            raise ConfigError(
                "the dorado-server basecaller needs a model config"
                " (--model, e.g. dna_r10.4.1_e8.2_400bps_5khz_hac.cfg)"
            )
        if not device:
            raise ConfigError("the dorado-server basecaller needs a device (e.g. cuda:all, cuda:0)")
        if num_clients < 1:
            raise ConfigError(f"--num-clients must be 1 or more, not {num_clients}")
        if not server_timeout_s > 0:
            raise ConfigError(f"--server-timeout must be more than 0, not {server_timeout_s}")
        self.server = require_executable(server, "basecall server", hint="--dorado-server PATH")
        self.supervisor = require_executable(
            supervisor, "basecall supervisor", hint="--supervisor PATH"
        )
        self.model = config
        self.device = device
        runtime = default_runtime_dir()
        self.port = str(port) if port else str(runtime / "socket")
        self.use_tcp = self.port.isdigit()
        if not self.use_tcp:
            self.port = self.port.removeprefix("ipc://")
            if len(os.fsencode(self.port)) > _MAX_SOCKET_PATH:
                raise ConfigError(
                    f"socket path {self.port!r} is too long for a unix socket;"
                    " give a shorter --server-port"
                )
        self.log_path = Path(log_path) if log_path else runtime / "logs"
        self.num_clients = num_clients
        self.server_timeout_s = server_timeout_s
        self.starts = 0  # how often the server was started (1 + restarts)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- the server --------------------------------------------------------------------

    def server_argv(self) -> list[str]:
        argv = [self.server, "--config", self.model, "--log_path", str(self.log_path)]
        argv += ["--port", self.port, "--device", self.device]
        return [*argv, "--use_tcp"] if self.use_tcp else argv

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether something accepts a connection on the server's port."""
        if self.use_tcp:
            family, address = socket.AF_INET, ("127.0.0.1", int(self.port))
        else:
            family, address = socket.AF_UNIX, self.port  # type: ignore[assignment]
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect(address)
            return True
        except OSError:
            return False

    def prepare(self) -> None:
        """Start the server and wait until it answers (ConfigError if it does not)."""
        if self.server_alive() and self.answers():
            return  # already started
        self._stop()
        self._start()

    def _start(self) -> None:
        if self.answers():
            raise ConfigError(
                f"something already answers on port {self.port} (another basecall server?);"
                " stop it or give this engine its own --server-port"
            )
        if not self.use_tcp:
            socket_path = Path(self.port)
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            socket_path.unlink(missing_ok=True)  # a stale socket of a server that died
        self.log_path.mkdir(parents=True, exist_ok=True)
        out_path = self.log_path / SERVER_OUT
        argv = self.server_argv()
        self.starts += 1
        log.info("starting the basecall server (start %d): %s", self.starts, " ".join(argv))
        started = time.monotonic()
        with open(out_path, "ab") as out:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),  # only a prctl and a check: fork-safe
                )
            except OSError as exc:
                raise ConfigError(f"cannot start {self.server}: {exc}") from exc
        try:
            self._wait_until_answering(started, out_path)
        except BaseException:  # a timeout, or the engine told to stop while we wait
            self._stop()
            raise
        log.info(
            "basecall server pid %d answers on %s after %.1f s",
            self._proc.pid,
            self.port,
            time.monotonic() - started,
        )

    def _wait_until_answering(self, started: float, out_path: Path) -> None:
        assert self._proc is not None
        deadline = started + self.server_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ConfigError(
                    f"{Path(self.server).name} exited with status {code} before answering"
                    f" on {self.port}: {_tail(out_path)} (logs in {self.log_path})"
                )
            if self.answers(timeout=POLL_S):
                return
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"{Path(self.server).name} did not answer on {self.port} within"
                    f" {self.server_timeout_s:g} s (--server-timeout); logs in {self.log_path}"
                )
            time.sleep(POLL_S)

    def server_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ensure_server(self) -> None:
        """Restart a server that died (or stopped answering) since the last batch."""
        if self.server_alive() and self.answers():
            return
        if self._proc is not None and self._proc.poll() is not None:
            log.warning(
                "the basecall server (pid %d) exited with status %s; restarting it",
                self._proc.pid,
                self._proc.returncode,
            )
        else:
            log.warning("the basecall server does not answer on %s; restarting it", self.port)
        self._stop()
        try:
            self._start()
        except ConfigError as exc:  # the batch's client fails without a server: retried
            log.error("cannot restart the basecall server: %s", exc)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            log.info("stopping the basecall server (pid %d)", proc.pid)
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("the basecall server ignored SIGTERM; killing it")
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # anything it left in its group
        if not self.use_tcp:
            Path(self.port).unlink(missing_ok=True)

    def close(self) -> None:
        self._stop()

    # -- one batch ---------------------------------------------------------------------

    def invocation(
        self, input_dir: Path, output_dir: Path, read_ids: Path | None = None
    ) -> Invocation:
        self.whole_files_only(read_ids)  # the supervisor takes no read list
        self._ensure_server()
        native = output_dir / NATIVE_DIR
        native.mkdir(parents=True, exist_ok=True)
        argv = [self.supervisor, "--num_clients", str(self.num_clients)]
        argv += ["--input_path", str(input_dir), "--save_path", str(native)]
        argv += ["--config", self.model, "--port", self.port, "--bam_out"]
        return Invocation(argv=argv)

    def describe(self) -> str:
        return (
            f"dorado-server ({self.server}, client {self.supervisor}) config {self.model}"
            f" on {self.device}, port {self.port}"
        )


def die_with_parent() -> Callable[[], None] | None:
    """For Popen's preexec_fn: the server gets SIGTERM when the engine that started it dies,
    even by SIGKILL (Linux's PR_SET_PDEATHSIG), so no orphaned server keeps its GPU and its
    port from the engine's replacement. None where the platform has no such thing."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def in_child() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the engine died before the prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return " | ".join(text[-lines:]) or "no output"
