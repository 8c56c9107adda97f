"""Security of a real manager process: tokens, legacy auth modes, binding, paths, bounds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bcmanager.pod5io import write_pod5
from tests.helpers import free_port, make_run, wait_for_files

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BAD_ENGINE_IDS = [
    "a/b",
    "../../etc",
    "..",
    "a..b",
    "x\x00y",
    "gpü",
    "dgx 001",
    "a\\b",
    "x" * 65,
    "",
]


def tree(*roots: Path) -> set[str]:
    """Every path under the roots (ledger files aside), to prove nothing was created."""
    out = set()
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                if ".bcmanager" not in path:
                    out.add(path)
    return out


# -- tokens -----------------------------------------------------------------------------


def _mutating_calls(job: dict) -> list[tuple[str, dict]]:
    return [
        ("/v1/claim", {"engine_id": "intruder", "max_files": 1}),
        (f"/v1/jobs/{job['job_id']}/heartbeat", {"token": job["token"]}),
        (f"/v1/jobs/{job['job_id']}/complete", {"token": job["token"], "outcome": "failed"}),
    ]


@pytest.mark.parametrize("via", ["token-file", "env"])
def test_with_a_token_every_mutating_v1_call_needs_the_bearer(
    run_dirs, start_manager, tmp_path, via
) -> None:
    inp, out = run_dirs
    make_run(inp, 3)
    (tmp_path / "token").write_text(TOKEN + "\n")
    if via == "token-file":
        m = start_manager(inp, out, "--token-file", str(tmp_path / "token"))
    else:
        m = start_manager(inp, out, env={"BCM_TOKEN": TOKEN})
    wait_for_files(m, 3, timeout=20)
    job = m.post("/v1/claim", {"engine_id": "e1", "max_files": 1}, headers=BEARER).json()["job"]
    before = m.status()
    for path, body in _mutating_calls(job):
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": TOKEN},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            r = m.post(path, body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert "token" in r.json()["error"]
    after = m.status()
    assert (after["files"], after["jobs"]) == (before["files"], before["jobs"])
    for path, body in _mutating_calls(job):
        assert m.post(path, body, headers=BEARER).status_code == 200, path
    assert m.get("/v1/status").status_code == 200  # reading needs no token


@pytest.mark.parametrize(
    ("mode", "without", "with_token"),
    [("open", 200, 200), ("token", 401, 200), ("off", 401, 401)],
)
def test_legacy_auth_modes_behave_as_named(
    run_dirs, start_manager, tmp_path, mode, without, with_token
) -> None:
    inp, out = run_dirs
    make_run(inp, 4)
    (tmp_path / "token").write_text(TOKEN)
    m = start_manager(inp, out, "--token-file", str(tmp_path / "token"), "--legacy-auth", mode)
    wait_for_files(m, 4, timeout=20)
    first = m.get("/assignwork", engineid="old", batchsize=1)
    assert first.status_code == without
    second = m.get("/assignwork", engineid="old", batchsize=1, token=TOKEN)
    assert second.status_code == with_token
    if with_token == 200:
        job_id = second.json()["jobid"]
        for path, state in (("/keepalive", "PROCESSING"), ("/completed", "FAILED")):
            assert m.get(path, job_id=job_id, job_state=state).status_code == without
            wrong = m.get(path, job_id=job_id, job_state=state, token="no")
            assert wrong.status_code == (200 if mode == "open" else 401)
            assert m.get(path, job_id=job_id, job_state=state, token=TOKEN).status_code == 200
    expected_jobs = (without == 200) + (with_token == 200)
    assert sum(m.status()["jobs"].values()) == expected_jobs
    assert m.get("/heartbeat").status_code == 200  # read-only, as the original


def test_legacy_auth_token_without_a_token_is_refused_at_start(run_dirs, tmp_path) -> None:
    inp, out = run_dirs
    r = _run_manager(inp, out, "--legacy-auth", "token", env_token=None)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "token" in r.stderr


# -- binding ----------------------------------------------------------------------------


def _listening(port: int) -> set[str]:
    """Local addresses listening on `port` (IPv4, from /proc/net/tcp)."""
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_the_manager_binds_loopback_by_default(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    m = start_manager(inp, out)
    assert _listening(m.port) == {"127.0.0.1"}
    assert "without a token" not in m.log.read_text()


def test_binding_wider_without_a_token_warns(run_dirs, start_manager, tmp_path) -> None:
    inp, out = run_dirs
    m = start_manager(inp, out, "--host", "0.0.0.0")
    assert _listening(m.port) == {"0.0.0.0"}
    log = m.log.read_text()
    assert "WARNING" in log and "bound to 0.0.0.0 without a token" in log


def test_binding_wider_with_a_token_does_not_warn(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    m = start_manager(inp, out, "--host", "0.0.0.0", env={"BCM_TOKEN": TOKEN})
    assert "without a token" not in m.log.read_text()


# -- paths ------------------------------------------------------------------------------


def test_symlinks_under_input_pointing_outside_are_never_handed_out(
    run_dirs, start_manager, tmp_path
) -> None:
    inp, out = run_dirs
    outside = tmp_path / "outside"
    write_pod5(outside / "secret.pod5", 2, 400, seed=99)
    write_pod5(outside / "dir" / "deep.pod5", 2, 400, seed=98)
    os.symlink(outside / "secret.pod5", inp / "link.pod5")
    os.symlink(outside / "dir", inp / "linked_dir")
    os.symlink(inp / "real0000.pod5", inp / "twice.pod5")  # inside, but a second name
    make_run(inp, 2, prefix="real")
    m = start_manager(inp, out)
    wait_for_files(m, 2, timeout=20)
    time.sleep(1.0)  # a few more rescans: the links must stay unknown
    job = m.post("/v1/claim", {"engine_id": "e1", "max_files": 100}).json()["job"]
    handed = sorted(f["path"] for f in job["files"])
    assert handed == ["real0000.pod5", "real0001.pod5"]
    assert m.status()["files_total"] == 2
    legacy = m.get("/assignwork", engineid="old", batchsize=100).json()
    assert legacy["batch"] == []


# -- bounds -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_manager(tmp_path_factory) -> Iterator:  # type: ignore[no-untyped-def]
    """A manager with files queued and --max-batch 5, shared by the bounds tests."""
    from tests.conftest import ManagerProcess

    base = tmp_path_factory.mktemp("bounds")
    inp, out = base / "in", base / "out"
    inp.mkdir()
    make_run(inp, 3)
    args = ["--rescan", "0.2", "--max-batch", "5", "--batch-size", "2"]
    m = ManagerProcess(inp, out, free_port(), base / "log", args, {}).wait_ready()
    wait_for_files(m, 3, timeout=20)
    yield m
    m.kill9()


@pytest.mark.parametrize("engine_id", BAD_ENGINE_IDS)
def test_bad_engine_ids_get_a_4xx_and_create_nothing(quiet_manager, engine_id) -> None:
    m = quiet_manager
    before = tree(m.input, m.output)
    legacy = httpx.get(
        f"{m.url}/assignwork", params={"engineid": engine_id, "batchsize": 1}, timeout=10
    )
    v1 = m.post("/v1/claim", {"engine_id": engine_id, "max_files": 1})
    for r in (legacy, v1):
        assert 400 <= r.status_code < 500 and r.json()["error"], r.text
    assert tree(m.input, m.output) == before
    assert m.status()["files"]["queued"] == 3


def test_batch_sizes_are_bounded(quiet_manager) -> None:
    m = quiet_manager
    assert m.get("/assignwork", engineid="e1", batchsize=6).status_code in (400, 422)
    assert m.post("/v1/claim", {"engine_id": "e1", "max_files": 6}).status_code in (400, 422)
    schema = m.get("/openapi.json").json()
    params = schema["paths"]["/assignwork"]["get"]["parameters"]
    assert next(p for p in params if p["name"] == "batchsize")["schema"]["maximum"] == 5
    assert m.status()["files"]["queued"] == 3


@pytest.mark.parametrize("path", ["/v1/claim", "/v1/jobs/1/heartbeat", "/v1/jobs/1/complete"])
def test_request_bodies_are_bounded(quiet_manager, path) -> None:
    m = quiet_manager
    big = b'{"token": "' + b"x" * 70_000 + b'"}'
    r = httpx.post(m.url + path, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()


def test_a_body_without_a_length_is_refused(quiet_manager) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"engine_id": "e1", '
        yield b'"pad": "' + b"x" * 100_000 + b'"}'

    r = httpx.post(
        quiet_manager.url + "/v1/claim",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 411 and "error" in r.json()
    assert quiet_manager.status()["files"]["queued"] == 3


def test_a_non_ascii_lease_token_is_a_409_not_a_500(quiet_manager) -> None:
    r = quiet_manager.post("/v1/jobs/1/heartbeat", {"token": "tökén"})
    assert r.status_code in (404, 409)


# -- helpers ----------------------------------------------------------------------------


def _run_manager(
    inp: Path, out: Path, *args: str, env_token: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BCM_TOKEN"}
    if env_token is not None:
        env["BCM_TOKEN"] = env_token
    cmd = [sys.executable, "-m", "bcmanager.cli", "manager", "--input", str(inp)]
    cmd += ["--output", str(out), "--port", str(free_port()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
