"""The dorado-server backend: one basecall server per engine, a supervisor client per batch.

Real subprocesses throughout: the stand-in server and client (tests/fakes), real engines
against a real manager. The server's own log counts its starts.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pysam
import pytest

from bcmanager.basecallers import make_basecaller
from bcmanager.basecallers.dorado_server import DoradoServerBasecaller
from bcmanager.errors import ConfigError
from bcmanager.pod5io import write_pod5
from tests.helpers import free_port, make_run, wait_until

FAKES = Path(__file__).parent / "fakes"
SERVER = FAKES / "dorado_basecall_server"
SUPERVISOR = FAKES / "ont_basecaller_supervisor"
CONFIG = "dna_r10.4.1_e8.2_400bps_hac.cfg"
RUN_FOLDER = "exp/s/20261128_1200_1A_FAX1_abcd1234"
STARTED = re.compile(r"Starting server on port")
PID = re.compile(r"stand-in pid (\d+)")


@pytest.fixture(autouse=True)
def standins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The stand-ins run by this interpreter (it has pod5), with a short start-up; a server
    a failed test left behind is killed afterwards."""
    monkeypatch.setenv("BCM_PYTHON", sys.executable)
    monkeypatch.setenv("BCM_STANDIN_SERVER_STARTUP_S", "0.5")
    monkeypatch.delenv("BCM_STANDIN_SERVER_FILE_S", raising=False)
    yield
    for pid in server_pids(tmp_path / "logs"):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def server_log(logs: Path) -> str:
    return "".join(p.read_text() for p in sorted(logs.glob("basecall_server_log-*.log")))


def server_starts(logs: Path) -> int:
    return len(STARTED.findall(server_log(logs)))


def server_pids(logs: Path) -> list[int]:
    return [int(pid) for pid in PID.findall(server_log(logs))]


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def backend(tmp_path: Path, **kw) -> DoradoServerBasecaller:
    options = {
        "server": str(SERVER),
        "supervisor": str(SUPERVISOR),
        "device": "cuda:0",
        "port": str(tmp_path / "srv.sock"),
        "log_path": tmp_path / "logs",
        "server_timeout_s": 30.0,
        **kw,
    }
    return DoradoServerBasecaller(CONFIG, **options)


def engine_args(tmp_path: Path, *more: str) -> list[str]:
    return [
        "--basecaller",
        "dorado-server",
        "--model",
        CONFIG,
        "--device",
        "cuda:0",
        "--dorado-server",
        str(SERVER),
        "--supervisor",
        str(SUPERVISOR),
        "--server-port",
        str(tmp_path / "srv.sock"),
        "--server-log-path",
        str(tmp_path / "logs"),
        "--num-clients",
        "2",
        "--batch-size",  # at most 2 files a batch, however fast the engine seems
        "2",
        *more,
    ]


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    store = tmp_path / "run"
    ids = write_pod5(store / "a_0.pod5", 12, samples=500, seed=1)
    ids += write_pod5(store / "a_1.pod5", 8, samples=500, seed=2)
    input_dir, output_dir = tmp_path / "ASSIGNED_1_e1", tmp_path / "TMPOUTPUT_1_e1"
    input_dir.mkdir()
    output_dir.mkdir()
    for name in ("a_0.pod5", "a_1.pod5"):
        os.symlink(store / name, input_dir / name)
    return input_dir, output_dir, ids


# -- the backend on its own ----------------------------------------------------------------


def test_the_server_runs_as_the_original_started_it_and_the_client_writes_bam(
    tmp_path: Path, job: tuple[Path, Path, list[str]]
) -> None:
    input_dir, output_dir, ids = job
    b = backend(tmp_path)
    assert b.server_argv() == [
        str(SERVER),
        "--config",
        CONFIG,
        "--log_path",
        str(tmp_path / "logs"),
        "--port",
        str(tmp_path / "srv.sock"),
        "--device",
        "cuda:0",
    ]
    try:
        b.prepare()
        assert b.answers() and server_starts(tmp_path / "logs") == 1
        inv = b.invocation(input_dir, output_dir)
        assert inv.argv == [
            str(SUPERVISOR),
            "--num_clients",
            "5",
            "--input_path",
            str(input_dir),
            "--save_path",
            str(output_dir / "basecalls"),
            "--config",
            CONFIG,
            "--port",
            str(tmp_path / "srv.sock"),
            "--bam_out",
        ]
        done = run(inv.argv)
        assert done.returncode == 0, done.stderr
    finally:
        b.close()
    bams = sorted((output_dir / "basecalls").rglob("*.bam"))
    assert {p.parent.name for p in bams} <= {"pass", "fail"} and bams
    parents = []
    for path in bams:
        with pysam.AlignmentFile(str(path), check_sq=False) as bam:
            assert "runid=" in bam.header.to_dict()["RG"][0]["DS"]
            for read in bam:
                assert read.has_tag("qs") and read.has_tag("fn") and read.has_tag("RG")
                parents.append(read.get_tag("pi") if read.has_tag("pi") else read.query_name)
    assert sorted(set(parents)) == sorted(ids)
    assert not (tmp_path / "srv.sock").exists()


def test_the_client_fails_without_a_server(
    tmp_path: Path, job: tuple[Path, Path, list[str]]
) -> None:
    input_dir, output_dir, _ = job
    argv = [str(SUPERVISOR), "--num_clients", "2", "--input_path", str(input_dir)]
    argv += ["--save_path", str(output_dir / "basecalls"), "--config", CONFIG]
    argv += ["--port", str(tmp_path / "nobody.sock"), "--bam_out"]
    done = run(argv)
    assert done.returncode == 1 and "cannot reach the basecall server" in done.stderr


def test_a_tcp_port_starts_the_server_with_use_tcp(
    tmp_path: Path, job: tuple[Path, Path, list[str]]
) -> None:
    input_dir, output_dir, _ = job
    port = str(free_port())
    b = backend(tmp_path, port=port)
    assert b.server_argv()[-3:] == ["--device", "cuda:0", "--use_tcp"]
    try:
        b.prepare()
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
            pass
        done = run(b.invocation(input_dir, output_dir).argv)
        assert done.returncode == 0, done.stderr
    finally:
        b.close()
    assert not b.answers()


def test_a_server_that_never_answers_is_a_config_error_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BCM_STANDIN_SERVER_STARTUP_S", "60")
    b = backend(tmp_path, server_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not answer on .*srv\.sock within 1\.5 s"):
        b.prepare()
    assert time.monotonic() - started < 15
    (pid,) = server_pids(tmp_path / "logs")
    assert not alive(pid), "the server that never answered is still running"
    assert not b.server_alive()


def test_a_server_that_exits_at_start_is_a_config_error_with_its_output(tmp_path: Path) -> None:
    b = backend(tmp_path, device="gpu0")  # the server's own parser refuses it
    with pytest.raises(ConfigError, match=r"exited with status 2 .*invalid device string"):
        b.prepare()


def test_something_already_on_the_port_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "srv.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(str(path))
        squatter.listen()
        with pytest.raises(ConfigError, match="already answers"):
            backend(tmp_path).prepare()
    assert server_starts(tmp_path / "logs") == 0


def test_a_dead_server_is_restarted_before_the_next_batch(
    tmp_path: Path, job: tuple[Path, Path, list[str]]
) -> None:
    input_dir, output_dir, _ = job
    b = backend(tmp_path)
    try:
        b.prepare()
        (first,) = server_pids(tmp_path / "logs")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not b.server_alive(), what="the server to die")
        inv = b.invocation(input_dir, output_dir)  # restarts it
        assert b.starts == 2 and server_starts(tmp_path / "logs") == 2
        done = run(inv.argv)
        assert done.returncode == 0, done.stderr
    finally:
        b.close()
    assert not any(alive(pid) for pid in server_pids(tmp_path / "logs"))


def test_make_basecaller_builds_dorado_server(tmp_path: Path) -> None:
    b = make_basecaller(
        "dorado-server",
        model=CONFIG,
        server=str(SERVER),
        supervisor=str(SUPERVISOR),
        server_port="4242",
        num_clients=3,
    )
    assert isinstance(b, DoradoServerBasecaller) and b.native_output
    assert b.use_tcp and b.num_clients == 3 and b.model == CONFIG
    with pytest.raises(ConfigError, match="--model"):
        make_basecaller("dorado-server", server=str(SERVER), supervisor=str(SUPERVISOR))
    with pytest.raises(ConfigError, match="--kit-name"):
        make_basecaller(
            "dorado-server",
            model=CONFIG,
            server=str(SERVER),
            supervisor=str(SUPERVISOR),
            kit_name="SQK-NBD114-24",
        )
    with pytest.raises(ConfigError, match="basecall server 'no-such-server' not found"):
        make_basecaller("dorado-server", model=CONFIG, server="no-such-server")


# -- real engines against a real manager ---------------------------------------------------


def test_one_server_start_serves_every_batch_and_the_reads_are_filed(
    tmp_path: Path, run_dirs, start_manager, start_engine
) -> None:
    from bcmanager.verify import verify_run

    inp, out = run_dirs
    make_run(inp / RUN_FOLDER / "pod5", 6, reads=8, samples=1500)
    m = start_manager(inp, out, "--batch-size", "2")
    # the engine asks for at most 2 files, so that several batches share one server start
    engine = start_engine(
        m.url, "gpu1", "--until-empty", "--batch-size", "2", *engine_args(tmp_path)
    )
    assert engine.wait(timeout=90) == 0, engine.log.read_text()
    status = m.status()
    assert status["jobs"]["done"] >= 3 and status["jobs"]["failed"] == 0
    assert server_starts(tmp_path / "logs") == 1, server_log(tmp_path / "logs")
    report = verify_run(inp, out, workers=0)
    assert report.ok, report.to_dict()
    assert [r.run_folder for r in report.runs] == [RUN_FOLDER]
    filed = [
        p for p in (out / RUN_FOLDER).rglob("*.bam") if {"bam_pass", "bam_fail"} & set(p.parts)
    ]
    assert filed, "no BAM in MinKNOW's tree"
    (pid,) = server_pids(tmp_path / "logs")
    assert not alive(pid), "the server outlived its engine"
    assert not (tmp_path / "srv.sock").exists()


def test_a_server_killed_mid_batch_fails_that_batch_and_a_restart_serves_the_rest(
    tmp_path: Path, run_dirs, start_manager, start_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bcmanager.verify import verify_run

    monkeypatch.setenv("BCM_STANDIN_SERVER_FILE_S", "0.4")
    inp, out = run_dirs
    make_run(inp / RUN_FOLDER / "pod5", 6, reads=6, samples=1500)
    m = start_manager(inp, out, "--batch-size", "2")
    engine = start_engine(m.url, "gpu1", "--until-empty", *engine_args(tmp_path))
    logs = tmp_path / "logs"
    wait_until(lambda: "Client request" in server_log(logs), what="a batch at the server")
    (pid,) = server_pids(logs)
    os.kill(pid, signal.SIGKILL)
    assert engine.wait(timeout=120) == 0, engine.log.read_text()
    status = m.status()
    assert status["jobs"]["failed"] == 1, status["jobs"]
    assert status["files"]["quarantined"] == 0
    assert server_starts(logs) == 2, server_log(logs)
    assert "restarting it" in engine.log.read_text()
    report = verify_run(inp, out, workers=0)
    assert report.ok, report.to_dict()  # every read exactly once
    assert not any(alive(p) for p in server_pids(logs))


def engine_in_a_batch(tmp_path: Path, run_dirs, start_manager, start_engine, monkeypatch):
    """A manager and a dorado-server engine whose server is in the middle of a batch (each
    file takes it 5 s): (manager, engine, the server's log folder, the server's pid)."""
    monkeypatch.setenv("BCM_STANDIN_SERVER_FILE_S", "5")
    inp, out = run_dirs
    make_run(inp / RUN_FOLDER / "pod5", 2, reads=2)
    m = start_manager(inp, out, "--batch-size", "2")
    engine = start_engine(m.url, "gpu1", *engine_args(tmp_path))
    logs = tmp_path / "logs"
    wait_until(lambda: "Client request" in server_log(logs), what="a batch at the server")
    (pid,) = server_pids(logs)
    return m, engine, logs, pid


def test_stopping_the_engine_mid_batch_stops_the_server(
    tmp_path: Path, run_dirs, start_manager, start_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, engine, logs, pid = engine_in_a_batch(
        tmp_path, run_dirs, start_manager, start_engine, monkeypatch
    )
    assert alive(pid)
    engine.send_signal(signal.SIGTERM)
    assert engine.wait(timeout=30) == 0, engine.log.read_text()
    assert not alive(pid), "the server outlived its engine"
    assert "Received signal 15" in server_log(logs)  # stopped by SIGTERM, not killed
    assert not (tmp_path / "srv.sock").exists()
    wait_until(lambda: not m.status()["running_jobs"], what="the batch handed back")


def test_an_engine_killed_with_sigkill_takes_its_server_with_it(
    tmp_path: Path, run_dirs, start_manager, start_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, engine, logs, pid = engine_in_a_batch(
        tmp_path, run_dirs, start_manager, start_engine, monkeypatch
    )
    engine.kill()  # SIGKILL: no chance to stop the server itself
    engine.wait(timeout=10)
    wait_until(lambda: not alive(pid), what="the orphaned server to stop")
    assert "Received signal 15" in server_log(logs)
    again = start_engine(m.url, "gpu1b", *engine_args(tmp_path))  # the same socket path
    wait_until(lambda: len(server_pids(logs)) == 2, what="a new server on the same socket")
    again.terminate()
    again.wait(timeout=30)
