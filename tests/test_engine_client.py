"""The engine's manager client against a real manager (or none listening): what the
manager's answers about a job become, and what a manager that is down does to a claim,
a heartbeat and a report."""

import logging
import threading
import time

import pytest

from bcmanager import errors
from bcmanager.engine.client import (
    JobLost,
    JobUnknown,
    LeaseLost,
    ManagerClient,
    ManagerGone,
    ManagerRefused,
    ManagerUnreachable,
)
from tests.helpers import free_port, make_run


def retries(caplog) -> int:
    return sum("manager unreachable" in r.getMessage() for r in caplog.records)


def test_the_managers_answers_about_a_job_become_the_clients_own_exceptions(
    run_dirs, start_manager
) -> None:
    """409 (a fenced token, a lease gone) is LeaseLost, 404 (an unknown job) JobUnknown:
    both a JobLost the engine drops its batch for, and both the errors the manager itself
    raises for them (`bcmanager.errors`)."""
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out)
    with ManagerClient(m.url) as client:
        job, _ = client.claim("gpu1", 20.0)
        assert job is not None
        job_id, token = job["job_id"], job["token"]
        client.heartbeat(job_id, token, {"startup_s": 0.5, "basecall_s": 0.1, "output_bytes": 1})

        with pytest.raises(JobUnknown) as unknown:
            client.heartbeat(job_id + 1000, token)
        assert isinstance(unknown.value, JobLost) and isinstance(unknown.value, errors.NotFound)
        assert unknown.value.status_code == 404 and unknown.value.job_id == job_id + 1000

        with pytest.raises(LeaseLost) as fenced:
            client.heartbeat(job_id, "not-its-token")
        assert isinstance(fenced.value, JobLost) and isinstance(fenced.value, errors.LeaseLost)
        assert fenced.value.status_code == 409 and "token" in fenced.value.error
        with pytest.raises(LeaseLost):
            client.complete(job_id, "not-its-token", "failed", "a stale engine")
        with pytest.raises(JobUnknown):
            client.complete(job_id + 1000, token, "done")

        client.complete(job_id, token, "released", "handed back")  # the batch is requeued
        with pytest.raises(LeaseLost):  # its lease is gone with it
            client.heartbeat(job_id, token, basecalled=True)
    assert m.status()["files"]["queued"] == 1


def test_a_request_the_manager_refuses_is_not_retried(run_dirs, start_manager, caplog) -> None:
    """A 4xx about the engine itself (here its id) is a configuration problem: raised at
    once as ManagerRefused, with the manager's answer."""
    caplog.set_level(logging.WARNING, logger="bcmanager.engine")
    inp, out = run_dirs
    m = start_manager(inp, out)
    with ManagerClient(m.url) as client, pytest.raises(ManagerRefused, match="POST /v1/claim: 4"):
        client.claim("not an engine id!", 0.0)
    assert retries(caplog) == 0


def test_a_manager_that_is_down_is_retried_until_it_answers(
    run_dirs, start_manager, caplog
) -> None:
    """A claim waits out a manager restart (or one not started yet): retried with backoff,
    answered once the manager is up."""
    caplog.set_level(logging.WARNING, logger="bcmanager.engine")
    inp, out = run_dirs
    port = free_port()
    answers: list[tuple] = []
    client = ManagerClient(f"http://127.0.0.1:{port}/")
    claiming = threading.Thread(target=lambda: answers.append(client.claim("gpu1", 0.5)))
    claiming.start()
    try:
        deadline = time.monotonic() + 20
        while retries(caplog) < 2:
            assert time.monotonic() < deadline, "no retries"
            time.sleep(0.05)
        assert not answers
        start_manager(inp, out, port=port)
        claiming.join(timeout=30)
        assert not claiming.is_alive()
    finally:
        client.stopping.set()  # a claim still retrying gives up
        claiming.join(timeout=10)
        client.close()
    assert answers == [(None, answers[0][1])]  # nothing to basecall, but an answer


def test_a_stopping_engine_gives_up_on_a_manager_that_is_down(caplog) -> None:
    """Once the engine is stopping, a claim is not retried and a report a few times, then
    ManagerGone says what could not be reached; a heartbeat is tried once either way."""
    caplog.set_level(logging.WARNING, logger="bcmanager.engine")
    url = f"http://127.0.0.1:{free_port()}"
    stopping = threading.Event()
    with ManagerClient(url, stopping=stopping) as client:
        with pytest.raises(ManagerUnreachable) as once:
            client.heartbeat(7, "token")
        assert type(once.value) is ManagerUnreachable and retries(caplog) == 0

        stopping.set()
        with pytest.raises(ManagerGone, match=r"POST .*/v1/claim: .*after 1 attempt"):
            client.claim("gpu1", 0.0)
        assert retries(caplog) == 0
        started = time.monotonic()
        with pytest.raises(ManagerGone, match=r"/v1/jobs/7/complete: .*after 4 attempt") as gone:
            client.complete(7, "token", "released", "engine stopping")
        assert url in str(gone.value)
        assert time.monotonic() - started >= 0.2 + 0.4 + 0.8  # backoff between tries
        assert retries(caplog) == 3
