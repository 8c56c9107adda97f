"""Shared fixtures: real pod5 runs, real manager processes on free ports, cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port


class ManagerProcess:
    """A real `bcm manager` subprocess."""

    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        port: int,
        log: Path,
        args: list[str],
        env: dict[str, str],
    ) -> None:
        self.input, self.output, self.port, self.log = input_dir, output_dir, port, log
        self.url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "manager",
            "--input",
            str(input_dir),
            "--output",
            str(output_dir),
            "--port",
            str(port),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env={**os.environ, **env}
        )

    def wait_ready(self, timeout: float = 20) -> ManagerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"manager exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"manager not ready:\n{self.log.read_text()}")

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, timeout=30)

    def post(self, path: str, json: object = None, **kw: object) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=json, timeout=30, **kw)

    def status(self) -> dict:
        return self.get("/v1/status").json()

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def run_dirs(tmp_path: Path) -> tuple[Path, Path]:
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    return inp, out


@pytest.fixture
def start_manager(tmp_path: Path) -> Iterator:
    """start_manager(input, output, *flags, port=None, env=None) -> ready ManagerProcess."""
    started: list[ManagerProcess] = []

    def start(
        input_dir: Path,
        output_dir: Path,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> ManagerProcess:
        m = ManagerProcess(
            input_dir,
            output_dir,
            port or free_port(),
            tmp_path / "manager.log",
            ["--rescan", "0.2", *args],
            env or {},
        )
        started.append(m)
        return m.wait_ready() if wait else m

    yield start
    for m in started:
        m.kill9()


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator:
    """start_engine(manager_url, engine_id, *flags) -> a real `bcm engine` Popen (log in .log)."""
    started: list[subprocess.Popen] = []

    def start(url: str, engine_id: str, *args: str) -> subprocess.Popen:
        log = tmp_path / f"engine-{engine_id}.log"
        cmd = [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "engine",
            "--manager",
            url,
            "--engine-id",
            engine_id,
            *args,
        ]
        proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-hogs",
        type=int,
        default=0,
        metavar="N",
        help="keep N busy processes running for the whole session: the tests run on a "
        "machine whose cores are taken, as a sequencing centre's manager node often is "
        "(a race that needs CPU pressure shows; see scripts/under-load.sh)",
    )


@pytest.fixture(scope="session", autouse=True)
def cpu_hogs(request: pytest.FixtureRequest) -> Iterator[int]:
    """`--cpu-hogs N`: N processes spinning on a core each until the session ends."""
    n = max(0, int(request.config.getoption("--cpu-hogs")))
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]
    try:
        yield n
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
