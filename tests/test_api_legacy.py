"""The legacy routes' fast path (`bcmanager.api.legacy.FastPath`), driven in process:
what it answers itself, and what it leaves to the FastAPI routes."""

import asyncio
import json
from pathlib import Path

import pytest

from bcmanager.api import legacy
from bcmanager.config import Settings, check_directories
from bcmanager.longpoll import ClaimWaiter
from bcmanager.manager import Manager
from tests.helpers import basecall_dir, make_run


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class Behind:
    """The app behind the fast path (FastAPI, in the server): notes what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(f"{scope['path']}?{scope['query_string'].decode()}")
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def sent_for(app, path: str, query: str) -> tuple[list[dict], dict]:
    """One GET through an ASGI app: the messages it sent, and the scope afterwards."""
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode()}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent, scope


def get(app, path: str, query: str) -> tuple[int, bytes, dict]:
    """One GET through an ASGI app: its status, body and scope afterwards."""
    sent, scope = sent_for(app, path, query)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, scope


def open_fast_path(tmp_path: Path, files: int, **kw: object):
    """A manager over a run of `files` pod5 files, and the fast path over it."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    make_run(inp, files)
    settings = check_directories(Settings(input=inp, output=out, settle_s=0, **kw))
    manager = Manager(settings, clock=Clock())
    manager.open(scan_now=True)
    calls = legacy.LegacyCalls(manager, ClaimWaiter(manager))
    behind = Behind()
    return legacy.FastPath(behind, calls, legacy.router(calls).routes), behind, manager, inp, out


@pytest.fixture
def fast(tmp_path: Path):
    opened = open_fast_path(tmp_path, 2, lease_s=30, batch_size=2)
    yield opened
    opened[2].close()


def test_well_formed_calls_are_answered_by_the_fast_path_with_the_originals_bytes(fast):
    path, behind, manager, inp, out = fast
    status, body, scope = get(path, "/assignwork", "engineid=dgx001&batchsize=1")
    job = json.loads(body)
    assert status == 200 and body == json.dumps(job).encode() and job["batch_size"] == 1
    assert scope["route"].path == "/assignwork"  # the metrics label it as the router would
    status, body, _ = get(path, "/keepalive", f"job_id={job['jobid']}&job_state=PROCESSING")
    assert (status, body) == (200, b'{"late": false}')
    basecall_dir(inp / job["job_input_dir"], out / job["job_output_dir"])
    status, body, _ = get(path, "/completed", f"job_id={job['jobid']}&job_state=DONE")
    assert (status, body) == (200, b'{"ok": true}')
    assert manager.status()["files"]["done"] == 1
    # errors of the call itself are the app's answers: unknown job, a batch over the most
    status, body, _ = get(path, "/keepalive", "job_id=424242&job_state=PROCESSING")
    assert status == 404 and "error" in json.loads(body)
    status, body, _ = get(path, "/assignwork", "engineid=e1&batchsize=1000000")
    assert status == 400 and "maximum" in json.loads(body)["error"]
    assert behind.paths == []


@pytest.mark.parametrize(
    "path, query",
    [
        ("/assignwork", "batchsize=1"),
        ("/assignwork", "engineid=&batchsize=1"),
        ("/assignwork", "engineid=a%2Fb&batchsize=1"),
        ("/assignwork", "engineid=" + "x" * 65 + "&batchsize=1"),
        ("/assignwork", "engineid=e1&batchsize=many"),
        ("/assignwork", "engineid=e1&batchsize=1.0"),
        ("/assignwork", "engineid=e1&batchsize=007"),
        ("/assignwork", "engineid=e1&batchsize=99999999999"),
        ("/assignwork", "engineid=e1&engineid=e2&batchsize=1"),  # which one? FastAPI says
        ("/assignwork", "engineid=e1%0A&batchsize=1"),
        ("/keepalive", "job_id=abc&job_state=PROCESSING"),
        ("/keepalive", "job_id=-1&job_state=PROCESSING"),
        ("/keepalive", "job_id=1"),
        ("/completed", "job_id=1&job_state=DO%20NE"),
        ("/completed", "job_id=" + "9" * 19 + "&job_state=DONE"),
        ("/completed", "job_id=1&job_state=DONE&token=" + "t" * 257),
    ],
)
def test_anything_not_well_formed_goes_on_to_the_fastapi_route(fast, path, query):
    """FastAPI's route answers it (422 naming the problem), and nothing changes."""
    fast_path, behind, manager, _, _ = fast
    before = manager.status()["files"]
    assert get(fast_path, path, query)[0] == 599
    assert behind.paths == [f"{path}?{query}"]
    assert manager.status()["files"] == before


def test_a_refused_token_goes_on_to_the_fastapi_route(tmp_path: Path):
    path, behind, manager, _, _ = open_fast_path(tmp_path, 1, token="s3cret", legacy_auth="token")
    try:
        assert get(path, "/assignwork", "engineid=e1&batchsize=1")[0] == 599
        assert get(path, "/assignwork", "engineid=e1&batchsize=1&token=nope")[0] == 599
        assert manager.status()["files"]["queued"] == 1
        status, body, _ = get(path, "/assignwork", "engineid=e1&batchsize=1&token=s3cret")
        assert status == 200 and json.loads(body)["batch_size"] == 1
        assert len(behind.paths) == 2
    finally:
        manager.close()


def test_a_bug_in_a_fast_call_is_a_json_500_and_its_trace_is_logged(fast, monkeypatch, caplog):
    """In front of FastAPI, the fast path answers a bug as the app's handler would (a 500
    naming only its type) and logs its trace, where FastAPI's error middleware did."""
    fast_path, behind, _, _, _ = fast

    def broken(job_id: str) -> dict:
        raise KeyError("secret detail")

    monkeypatch.setattr(fast_path.calls, "keepalive", broken)
    with caplog.at_level("ERROR", logger="bcmanager.api"):
        status, body, scope = get(fast_path, "/keepalive", "job_id=1&job_state=PROCESSING")
    assert (status, json.loads(body)) == (500, {"error": "internal error: KeyError"})
    assert scope["route"].path == "/keepalive" and behind.paths == []
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_the_fast_path_sends_the_headers_the_fastapi_route_sends(fast):
    """Content type and length as the route's response has them, in the same order."""
    fast_path, _, _, _, _ = fast
    sent, _ = sent_for(fast_path, "/assignwork", "engineid=dgx001&batchsize=1")
    body = sent[1]["body"]
    route_answer = legacy._legacy_bytes(json.loads(body))
    assert route_answer.body == body
    assert sent[0]["headers"] == route_answer.raw_headers
