"""The HTTP API of a real manager process on a free port."""

import functools
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from bcmanager import scheduler
from tests.helpers import basecall_dir, make_run, wait_for_files

LEGACY_KEYS = [
    "report_back_period",
    "jobid",
    "job_input_dir",
    "job_output_dir",
    "bc_engine_id",
    "batch_size",
    "batch",
    "report_back_interval",
]


def test_legacy_routes_answer_as_the_original_manager(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 3)
    m = start_manager(inp, out, "--lease", "30", "--output-layout", "legacy")
    wait_for_files(m, 3)
    r = m.get("/assignwork", engineid="dgx001", batchsize=2)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == LEGACY_KEYS
    assert r.text == json.dumps(body)  # the original's json.dumps bytes
    assert body["job_input_dir"] == f"ASSIGNED_{body['jobid']}_dgx001"
    assert body["job_output_dir"] == f"TMPOUTPUT_{body['jobid']}_dgx001"
    assert body["batch"] == ["f0000.pod5", "f0001.pod5"] and body["batch_size"] == 2
    assert body["report_back_interval"] == 30
    assert (
        m.get("/keepalive", job_id=body["jobid"], job_state="PROCESSING").text == '{"late": false}'
    )
    basecall_dir(inp / body["job_input_dir"], out / body["job_output_dir"])
    assert m.get("/completed", job_id=body["jobid"], job_state="DONE").text == '{"ok": true}'
    assert m.get("/completed", job_id=body["jobid"], job_state="DONE").text == '{"ok": true}'
    assert sorted(os.listdir(out / "pass")) == [
        f"job_id_{body['jobid']}_f0000.fastq",
        f"job_id_{body['jobid']}_f0001.fastq",
    ]
    assert (out / f"LOGOUTPUT_{body['jobid']}_dgx001").is_dir()
    rest = m.get("/assignwork", engineid="dgx001", batchsize=0).json()  # 0 = default size
    assert rest["batch"] == ["f0002.pod5"]
    empty = m.get("/assignwork", engineid="dgx001", batchsize=5).json()
    assert (empty["jobid"], empty["batch_size"], empty["batch"]) == ("-1", 0, [])
    hb = m.get("/heartbeat").json()
    assert hb["status"] == "false" and hb["inactivity_interval"] >= 0


def test_failed_jobs_keep_the_original_folder_names(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    wait_for_files(m, 1)
    job = m.get("/assignwork", engineid="e1", batchsize=1).json()
    assert m.get("/completed", job_id=job["jobid"], job_state="FAILED").json() == {"ok": True}
    assert (inp / f"FAILED_{job['jobid']}_e1").is_dir()
    assert (out / f"FAILEDOUTPUT_{job['jobid']}_e1").is_dir()
    assert m.status()["files"]["queued"] == 1  # back in the queue, attempt 1


BAD_REQUESTS = [
    ("GET", "/assignwork", {"batchsize": "1"}, None),
    ("GET", "/assignwork", {"engineid": "", "batchsize": "1"}, None),
    ("GET", "/assignwork", {"engineid": "a/b", "batchsize": "1"}, None),
    ("GET", "/assignwork", {"engineid": "../../etc", "batchsize": "1"}, None),
    ("GET", "/assignwork", {"engineid": "x" * 65, "batchsize": "1"}, None),
    ("GET", "/assignwork", {"engineid": "e1", "batchsize": "many"}, None),
    ("GET", "/assignwork", {"engineid": "e1", "batchsize": "99999999999999999999"}, None),
    ("GET", "/assignwork", {"engineid": "e1", "batchsize": "1000000"}, None),
    ("GET", "/assignwork", {"engineid": "e1"}, None),
    ("GET", "/keepalive", {"job_id": "abc", "job_state": "PROCESSING"}, None),
    ("GET", "/keepalive", {"job_id": "-1", "job_state": "PROCESSING"}, None),
    ("GET", "/keepalive", {"job_id": "424242", "job_state": "PROCESSING"}, None),
    ("GET", "/keepalive", {"job_id": "1"}, None),
    ("GET", "/completed", {"job_id": "424242", "job_state": "DONE"}, None),
    ("GET", "/completed", {"job_id": "1", "job_state": "DO NE/.."}, None),
    ("GET", "/completed", {"job_id": "9" * 40, "job_state": "DONE"}, None),
    ("POST", "/v1/claim", None, {}),
    ("POST", "/v1/claim", None, {"engine_id": "e1", "max_files": -1}),
    ("POST", "/v1/claim", None, {"engine_id": "e1", "max_files": "x"}),
    ("POST", "/v1/claim", None, {"engine_id": "e1", "max_files": 10**9}),
    ("POST", "/v1/claim", None, {"engine_id": "e1", "wait_s": 1e9}),
    ("POST", "/v1/claim", None, {"engine_id": "e/1"}),
    ("POST", "/v1/claim", None, {"engine_id": "e1", "surprise": 1}),
    ("POST", "/v1/claim", None, [1, 2]),
    ("POST", "/v1/jobs/1/heartbeat", None, {}),
    ("POST", "/v1/jobs/424242/heartbeat", None, {"token": "t"}),
    ("POST", "/v1/jobs/0/heartbeat", None, {"token": "t"}),
    ("POST", "/v1/jobs/abc/complete", None, {"token": "t", "outcome": "done"}),
    ("POST", "/v1/jobs/1/complete", None, {"token": "t", "outcome": "maybe"}),
    ("POST", "/v1/jobs/1/complete", None, {"token": "wrong", "outcome": "done"}),
    ("GET", "/v1/jobs/99999999999999999999999", None, None),
    ("GET", "/v1/jobs/424242", None, None),
    ("GET", "/v1/events", {"limit": "0"}, None),
    ("GET", "/nowhere", None, None),
]


@pytest.fixture(scope="module")
def busy_manager(tmp_path_factory):
    """One manager with a job running, shared by the bad-input table."""
    from tests.conftest import ManagerProcess
    from tests.helpers import free_port

    base = tmp_path_factory.mktemp("bad")
    inp, out = base / "in", base / "out"
    inp.mkdir()
    make_run(inp, 4)
    m = ManagerProcess(inp, out, free_port(), base / "log", ["--rescan", "0.2"], {}).wait_ready()
    wait_for_files(m, 4)
    job = m.post("/v1/claim", {"engine_id": "e1", "max_files": 1}).json()["job"]
    assert job["job_id"] == 1
    yield m
    m.kill9()


@pytest.mark.parametrize(("method", "path", "params", "body"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_json_message_and_changes_nothing(
    busy_manager, method, path, params, body
) -> None:
    m = busy_manager
    before = m.status()
    r = httpx.request(method, m.url + path, params=params, json=body, timeout=10)
    assert 400 <= r.status_code < 500, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    after = m.status()
    assert after["files"] == before["files"] and after["jobs"] == before["jobs"]


def test_an_oversized_body_is_refused(busy_manager) -> None:
    r = httpx.post(
        busy_manager.url + "/v1/claim",
        content=b"{" + b" " * 100_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and "error" in r.json()


def test_v1_claim_heartbeat_complete_and_fencing(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    m = start_manager(inp, out, "--lease", "1")
    wait_for_files(m, 2)
    job = m.post("/v1/claim", {"engine_id": "e1", "max_files": 1}).json()["job"]
    assert job["files"][0]["path"] == "f0000.pod5" and len(job["token"]) == 32
    hb = m.post(f"/v1/jobs/{job['job_id']}/heartbeat", {"token": job["token"]})
    assert hb.status_code == 200 and hb.json()["late"] is False
    stale = m.post(f"/v1/jobs/{job['job_id']}/heartbeat", {"token": "f" * 32})
    assert stale.status_code == 409
    time.sleep(2.5)  # let the 1 s lease run out
    late = m.post(f"/v1/jobs/{job['job_id']}/heartbeat", {"token": job["token"]})
    assert late.status_code == 409 and late.json()["late"] is True
    done = m.post(f"/v1/jobs/{job['job_id']}/complete", {"token": job["token"], "outcome": "done"})
    assert done.status_code == 409 and done.json()["late"] is True
    assert m.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "late"
    legacy_late = m.get("/keepalive", job_id=job["job_id"], job_state="PROCESSING")
    assert legacy_late.status_code == 200 and legacy_late.json() == {"late": True}


def test_a_heartbeats_progress_is_checked_and_a_bad_one_changes_nothing(
    run_dirs, start_manager
) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    wait_for_files(m, 1)
    job = m.post("/v1/claim", {"engine_id": "e1"}).json()["job"]
    beat = f"/v1/jobs/{job['job_id']}/heartbeat"
    lease = m.get(f"/v1/jobs/{job['job_id']}").json()["lease_expires"]
    good = {"startup_s": 1.5, "basecall_s": 3.0, "output_bytes": 4096}
    for bad in (
        {**good, "output_bytes": -1},
        {**good, "basecall_s": "soon"},
        {**good, "startup_s": 1e12},
        {**good, "files": 3},
        {**good, "reads": {"done": 3}},  # a read count comes whole or not at all
        {**good, "reads": {"total": 10}},
        {**good, "reads": {"done": 3, "total": 0}},
        {**good, "reads": 3},
        {**good, "reads": {"done": 3, "total": 10, "at_s": -1}},
        {**good, "reads": {"done": 3, "total": 10, "at_s": "soon"}},
        [1, 2],
    ):
        r = m.post(beat, {"token": job["token"], "progress": bad})
        assert r.status_code == 422 and "error" in r.json(), (bad, r.text)
        (engine,) = m.status()["engines"]
        assert engine["progress"] is None
        assert m.get(f"/v1/jobs/{job['job_id']}").json()["lease_expires"] == lease
    assert m.post(beat, {"token": job["token"], "progress": good}).status_code == 200
    (engine,) = m.status()["engines"]
    assert {k: engine["progress"][k] for k in good} == good
    counted = {**good, "reads": {"done": 3, "total": 10}}
    assert m.post(beat, {"token": job["token"], "progress": counted}).status_code == 200
    (engine,) = m.status()["engines"]
    assert {k: engine["progress"][k] for k in good} == good
    assert (engine["progress"]["reads_done"], engine["progress"]["reads_total"]) == (3, 10)
    assert engine["progress"]["reads_at_s"] is None  # the count's time is optional
    reached = {**good, "reads": {"done": 5, "total": 10, "at_s": 2.5}}
    assert m.post(beat, {"token": job["token"], "progress": reached}).status_code == 200
    (engine,) = m.status()["engines"]
    assert (engine["progress"]["reads_done"], engine["progress"]["reads_at_s"]) == (5, 2.5)
    assert m.post(beat, {"token": job["token"]}).status_code == 200  # progress is optional
    done = f"/v1/jobs/{job['job_id']}/complete"
    assert m.post(done, {"token": job["token"], "outcome": "released"}).status_code == 200
    (engine,) = m.status()["engines"]
    assert engine["progress"] is None  # it speaks of the batch the engine holds: none now


def test_a_basecalled_heartbeat_teaches_the_engines_speed_before_its_report(
    run_dirs, start_manager
) -> None:
    """An engine whose basecaller has finished says so (`basecalled`) before it files the
    output and claims its next batch: the manager learns its speed then, once, and does
    not count the batch again at the report."""
    inp, out = run_dirs
    make_run(inp, 1)
    # its rate is in the bytes that hold signal: the file's size less its fixed part
    size = (inp / "f0000.pod5").stat().st_size - scheduler.POD5_FIXED_BYTES
    m = start_manager(inp, out)
    wait_for_files(m, 1)
    job = m.post("/v1/claim", {"engine_id": "e1"}).json()["job"]
    beat = f"/v1/jobs/{job['job_id']}/heartbeat"
    # within the time since the claim: an account longer than that is capped to it
    timing = {"startup_s": 0.0, "basecall_s": 0.002, "output_bytes": 4096}
    for bad in ("yes", 1, None):
        r = m.post(beat, {"token": job["token"], "progress": timing, "basecalled": bad})
        assert r.status_code == 422 and "error" in r.json(), (bad, r.text)
        (engine,) = m.status()["engines"]
        assert engine["job_id"] == job["job_id"] and engine["bytes_per_s"] is None
        assert engine["filing_s_per_gb"] is None
    r = m.post(beat, {"token": job["token"], "progress": timing, "basecalled": True})
    assert r.status_code == 200, r.text
    (engine,) = m.status()["engines"]
    assert engine["bytes_per_s"] == pytest.approx(size / 0.002)
    assert engine["job_id"] is None and engine["progress"] is None  # its GPU is free
    # heartbeats go on while it files, and change nothing more
    assert (
        m.post(beat, {"token": job["token"], "progress": timing, "basecalled": True}).status_code
        == 200
    )
    slower = {**timing, "basecall_s": 0.008, "filing_s": 0.5}
    done = f"/v1/jobs/{job['job_id']}/complete"
    for bad in (-1, "slow", 1e12):
        bad_timing = {**slower, "filing_s": bad}
        r = m.post(done, {"token": job["token"], "outcome": "done", "timing": bad_timing})
        assert r.status_code == 422 and "error" in r.json(), (bad, r.text)
        assert m.get(f"/v1/jobs/{job['job_id']}").json()["state"] == "assigned"
    r = m.post(done, {"token": job["token"], "outcome": "done", "timing": slower})
    assert r.status_code == 200, r.text
    (engine,) = m.status()["engines"]
    assert engine["bytes_per_s"] == pytest.approx(size / 0.002)  # learnt once
    assert engine["jobs_done"] == 1
    # its filing time, what a run's last batches are sized with, is shown per pod5 GB
    assert engine["filing_s_per_gb"] == pytest.approx(0.5 / size * 1e9, rel=1e-3)


def test_a_waiting_claim_is_answered_as_soon_as_a_file_appears(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    m = start_manager(inp, out)
    result = {}

    def claim() -> None:
        t0 = time.monotonic()
        result["job"] = m.post("/v1/claim", {"engine_id": "waiter", "wait_s": 20}).json()["job"]
        result["took"] = time.monotonic() - t0

    waiter = threading.Thread(target=claim)
    waiter.start()
    time.sleep(0.5)
    make_run(inp, 1)
    waiter.join(timeout=25)
    assert result["job"] is not None and result["job"]["files"][0]["path"] == "f0000.pod5"
    assert result["took"] < 15  # answered when the file appeared, not when the wait ran out
    _confirm(m, result["job"])
    nothing = m.post("/v1/claim", {"engine_id": "waiter", "wait_s": 0.2}).json()
    assert nothing == {"job": None, "more_expected": False}


def test_with_a_token_every_mutating_call_needs_it(run_dirs, start_manager, tmp_path) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    (tmp_path / "token").write_text("s3cret\n")
    m = start_manager(inp, out, "--token-file", str(tmp_path / "token"), "--legacy-auth", "token")
    wait_for_files(m, 2)
    assert m.post("/v1/claim", {"engine_id": "e1"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert m.post("/v1/claim", {"engine_id": "e1"}, headers=wrong).status_code == 401
    assert m.get("/assignwork", engineid="e1", batchsize=1).status_code == 401
    assert m.status()["files"]["queued"] == 2
    ok = m.post("/v1/claim", {"engine_id": "e1"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["job"] is not None
    assert (
        m.get("/assignwork", engineid="e1", batchsize=1, token="s3cret").json()["batch_size"] == 0
    )


def test_startup_says_where_it_listens_and_sigterm_stops_cleanly(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    assert m.terminate() == 0
    log = m.log.read_text()
    assert f"listening on {m.url}" in log
    assert str(out / ".bcmanager" / "ledger.sqlite3") in log


def test_a_missing_input_directory_is_a_clear_error(tmp_path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bcmanager.cli",
            "manager",
            "--input",
            str(tmp_path / "nope"),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def _confirm(m, job: dict, headers: dict | None = None) -> None:
    """What a real engine does as soon as it has a job: its first heartbeat, which tells
    the manager the claim's answer arrived (until then its files may come back, and an
    until-empty claim is told more work is expected)."""
    r = m.post(f"/v1/jobs/{job['job_id']}/heartbeat", {"token": job["token"]}, headers=headers)
    assert r.status_code == 200, r.text


def test_an_until_empty_claim_waits_for_a_job_its_engine_has_not_confirmed(
    run_dirs, start_manager
) -> None:
    """Issue 28: a claim's answer can be lost; until the engine heartbeats the job, its
    files may come back, so an until-empty claim is not told to go home."""
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    wait_for_files(m, 1)
    body = {"engine_id": "e1", "wait_s": 0.3, "until_empty": True}
    job = m.post("/v1/claim", body).json()["job"]
    assert m.post("/v1/claim", {**body, "engine_id": "e2"}).json() == {
        "job": None,
        "more_expected": True,
    }
    _confirm(m, job)
    assert m.post("/v1/claim", {**body, "engine_id": "e2"}).json() == {
        "job": None,
        "more_expected": False,
    }


def test_a_legacy_assignwork_is_not_held_for_a_job_its_engine_has_not_confirmed(
    run_dirs, start_manager
) -> None:
    """Original engines confirm a job at their first keepalive, a lease away: an original
    engine asking meanwhile gets its empty answer at once, not after --legacy-wait."""
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    wait_for_files(m, 1)
    assert m.post("/v1/claim", {"engine_id": "e1"}).json()["job"] is not None
    t0 = time.monotonic()
    empty = m.get("/assignwork", engineid="orig", batchsize=1).json()
    assert empty["jobid"] == "-1" and time.monotonic() - t0 < 5


def _half_written(inp, tmp_path, name: str = "half.pod5") -> bytes:
    from bcmanager.pod5io import write_pod5

    write_pod5(tmp_path / "whole.pod5", 3, 300, seed=42)
    whole = (tmp_path / "whole.pod5").read_bytes()
    (inp / name).write_bytes(whole[: len(whole) // 2])
    return whole


def _legacy_claim_in_background(m) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def ask() -> None:
        t0 = time.monotonic()
        answer = m.get("/assignwork", engineid="old1", batchsize=5)
        result.update(answer=answer.json(), took=time.monotonic() - t0)

    asker = threading.Thread(target=ask)
    asker.start()
    return asker, result


def test_legacy_assignwork_is_held_while_a_file_is_being_written_and_answered_when_it_is_done(
    run_dirs, start_manager, tmp_path
) -> None:
    inp, out = run_dirs
    whole = _half_written(inp, tmp_path)
    m = start_manager(inp, out, "--settle", "60")
    asker, result = _legacy_claim_in_background(m)
    time.sleep(1.0)
    assert asker.is_alive(), f"answered while the file was still being written: {result}"
    (inp / "half.pod5").write_bytes(whole)
    asker.join(timeout=20)
    assert result["answer"]["batch"] == ["half.pod5"] and result["answer"]["jobid"] != "-1"


def test_legacy_assignwork_answers_empty_at_once_when_nothing_is_on_its_way(
    run_dirs, start_manager
) -> None:
    inp, out = run_dirs
    m = start_manager(inp, out)
    t0 = time.monotonic()
    answer = m.get("/assignwork", engineid="old1", batchsize=5).json()
    assert answer["jobid"] == "-1" and answer["batch"] == []
    assert time.monotonic() - t0 < 5  # not held: the scan is done and nothing settles


def test_legacy_assignwork_is_held_at_most_the_legacy_wait(run_dirs, start_manager, tmp_path):
    inp, out = run_dirs
    _half_written(inp, tmp_path)  # never finished
    m = start_manager(inp, out, "--settle", "60", "--legacy-wait", "1.5")
    t0 = time.monotonic()
    answer = m.get("/assignwork", engineid="old1", batchsize=5).json()
    took = time.monotonic() - t0
    assert answer["jobid"] == "-1" and 1.4 <= took < 10


def test_a_v1_until_empty_claim_says_whether_more_work_is_expected(
    run_dirs, start_manager, tmp_path
) -> None:
    inp, out = run_dirs
    whole = _half_written(inp, tmp_path)
    m = start_manager(inp, out, "--settle", "60")
    body = {"engine_id": "e1", "wait_s": 0.3, "until_empty": True}
    assert m.post("/v1/claim", body).json() == {"job": None, "more_expected": True}
    (inp / "half.pod5").write_bytes(whole)
    answer = m.post("/v1/claim", {**body, "wait_s": 10}).json()
    assert [f["path"] for f in answer["job"]["files"]] == ["half.pod5"]
    assert answer["more_expected"] is True
    _confirm(m, answer["job"])
    t0 = time.monotonic()
    assert m.post("/v1/claim", {**body, "wait_s": 10}).json() == {
        "job": None,
        "more_expected": False,
    }
    assert time.monotonic() - t0 < 5  # nothing on its way: answered at once, not after 10 s


def test_adding_a_generation_refuses_bad_input_and_changes_nothing(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    m = start_manager(inp, out, "--token-file", str(_token_file(out.parent)))
    wait_for_files(m, 2)
    auth = {"Authorization": "Bearer s3cret"}
    before = m.get("/v1/generations").json()
    bad = [
        ({}, 422),
        ({"name": "sup"}, 422),
        ({"name": "default", "model": "sup"}, 400),
        ({"name": "../up", "model": "sup"}, 422),
        ({"name": "a/b", "model": "sup"}, 422),
        ({"name": "sup", "model": "s u p"}, 422),
        ({"name": "sup", "model": "x" * 513}, 422),
        ({"name": "sup", "model": 5}, 422),
        ({"name": "sup", "model": "sup", "speed": 2}, 422),
        ({"name": "sup", "model": "sup", "modified_bases": ["6mA"] * 17}, 422),
    ]
    for body, status in bad:
        r = m.post("/v1/generations", json=body, headers=auth)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]
    assert m.post("/v1/generations", json={"name": "sup", "model": "sup"}).status_code == 401
    assert m.get("/v1/generations").json() == before
    first = m.post("/v1/generations", json={"name": "sup", "model": "sup"}, headers=auth)
    assert first.status_code == 200 and first.json()["created"] is True
    assert first.json()["generation"]["output"] == "generations/sup"
    again = m.post("/v1/generations", json={"name": "sup", "model": "sup"}, headers=auth)
    assert again.status_code == 200 and again.json()["created"] is False
    clash = m.post("/v1/generations", json={"name": "sup", "model": "hac"}, headers=auth)
    assert clash.status_code == 409 and "another recipe" in clash.json()["error"]
    gens = m.get("/v1/generations").json()["generations"]
    assert [g["name"] for g in gens] == ["default", "sup"]
    assert gens[1]["files"]["queued"] == 2


def _token_file(folder) -> object:
    path = folder / "token"
    path.write_text("s3cret\n")
    return path


def test_an_idle_connection_outlives_the_clients_own_keep_alive(run_dirs, start_manager) -> None:
    """httpx drops an idle connection after 5 s: the manager must not drop it first, or a
    claim sent as it closes is lost with its answer (its batch then waits out a lease)."""
    import http.client

    inp, out = run_dirs
    m = start_manager(inp, out)
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    conn.request("GET", "/healthz")
    first = conn.getresponse()
    assert first.status == 200 and first.read()
    sock = conn.sock
    time.sleep(5.5)  # longer than httpx's keep-alive: real time is what is tested
    conn.request("GET", "/healthz")  # on the same connection (a closed one raises here)
    again = conn.getresponse()
    assert again.status == 200 and again.read()
    assert conn.sock is sock
    conn.close()


def test_the_manager_raises_its_open_files_limit_for_a_large_cluster(
    run_dirs, start_manager
) -> None:
    import resource

    inp, out = run_dirs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # inherited by the manager
    try:
        m = start_manager(inp, out, wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    m.wait_ready()
    limits = Path(f"/proc/{m.proc.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    assert int(line.split()[3]) > 512, line


def test_an_engine_may_say_it_takes_slices(run_dirs, start_manager) -> None:
    """`slices` (issue 26): the engine can basecall a list of a file's reads. Whole files
    are what it gets until the manager hands out slices; a bad value changes nothing."""
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    wait_for_files(m, 1)
    for bad in ([1], {"a": 1}, "perhaps"):
        r = m.post("/v1/claim", {"engine_id": "e1", "slices": bad})
        assert r.status_code == 422 and "slices" in r.text, (bad, r.text)
    assert m.status()["files"]["queued"] == 1
    job = m.post("/v1/claim", {"engine_id": "e1", "slices": True}).json()["job"]
    assert [f["name"] for f in job["files"]] and not job.get("read_ids")


def test_an_engine_not_measured_yet_is_asked_for_its_progress_often(
    run_dirs, start_manager
) -> None:
    """Its first batch's progress sizes the others' next batches: heartbeats every 2 s,
    not at a third of the lease; once its speed is known, a third of the lease."""
    inp, out = run_dirs
    make_run(inp, 2)
    m = start_manager(inp, out, "--lease", "60")
    wait_for_files(m, 2)
    first = m.post("/v1/claim", {"engine_id": "e1", "max_files": 1}).json()["job"]
    assert first["heartbeat_s"] == 2.0 and first["lease_s"] == 60.0
    timing = {"startup_s": 0.0, "basecall_s": 0.002, "output_bytes": 4096}
    beat = {"token": first["token"], "progress": timing, "basecalled": True}
    assert m.post(f"/v1/jobs/{first['job_id']}/heartbeat", beat).status_code == 200
    done = {"token": first["token"], "outcome": "done"}
    assert m.post(f"/v1/jobs/{first['job_id']}/complete", done).status_code == 200
    second = m.post("/v1/claim", {"engine_id": "e1", "max_files": 1}).json()["job"]
    assert second["heartbeat_s"] == 20.0


def test_the_fleets_size_is_told_checked_and_shown(run_dirs, start_manager) -> None:
    """`PUT /v1/fleet` (a controller's, from the jobs it submitted): refused when malformed
    or without the token, with nothing changed; the same call again changes nothing;
    /v1/status shows what was told, and null goes back to inferring it."""
    from bcmanager import cluster

    inp, out = run_dirs
    make_run(inp, 2)
    m = start_manager(inp, out, "--token-file", str(_token_file(out.parent)))
    wait_for_files(m, 2)
    auth = {"Authorization": "Bearer s3cret"}
    put = functools.partial(httpx.put, f"{m.url}/v1/fleet", timeout=30)
    for body in (
        {},
        {"expected_engines": 0},
        {"expected_engines": -2},
        {"expected_engines": 100_001},
        {"expected_engines": "4"},
        {"expected_engines": True},
        {"expected_engines": 2.5},
        {"expected_engines": 4, "more": 1},
        [4],
    ):
        r = put(json=body, headers=auth)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]
    assert put(json={"expected_engines": 4}).status_code == 401
    assert m.status()["expected_engines"] is None
    for _ in range(2):
        told = put(json={"expected_engines": 4.0}, headers=auth)
        assert told.status_code == 200, told.text
        assert told.json() == {"expected_engines": 4, "engines": 0, "arriving": True}
        assert m.status()["expected_engines"] == 4
    cluster.tell_fleet(m.url, None, token="s3cret")
    assert m.status()["expected_engines"] is None
    with pytest.raises(cluster.ManagerUnreachable, match="401"):
        cluster.tell_fleet(m.url, 3, token="nope")
    assert m.status()["expected_engines"] is None
