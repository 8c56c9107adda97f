"""Schemathesis against the OpenAPI schema of a real manager process (v1 and legacy routes).

Every generated request (valid and invalid alike) must get an answer that is not a
5xx, whose status code the schema declares and whose body matches the schema, with
every other built-in Schemathesis check on too. The manager has queued files and
running jobs, so claims, heartbeats and completions reach the real core.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode

from tests.conftest import ManagerProcess
from tests.helpers import free_port, make_run

FUZZED_TAGS = ("v1", "legacy")
NOT_FUZZED = ("/metrics",)  # Prometheus text, not JSON: covered by its own tests
MAX_WAIT_S = 0.2  # a long-poll claim may wait 60 s; the fuzzer needs no more than this
EXAMPLES = 60
OPERATIONS = [
    ("GET", "/assignwork"),
    ("GET", "/keepalive"),
    ("GET", "/completed"),
    ("GET", "/heartbeat"),
    ("POST", "/v1/claim"),
    ("POST", "/v1/jobs/{job_id}/heartbeat"),
    ("POST", "/v1/jobs/{job_id}/complete"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/v1/status"),
    ("GET", "/v1/events"),
    ("GET", "/healthz"),
]
WITHOUT_PARAMETERS = {"/heartbeat", "/v1/status", "/healthz"}


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagerProcess]:
    base = tmp_path_factory.mktemp("fuzz")
    inp, out = base / "in", base / "out"
    inp.mkdir()
    make_run(inp, 40, reads=1, samples=200)
    args = ["--rescan", "0.2", "--lease", "30", "--settle", "0.1"]
    m = ManagerProcess(inp, out, free_port(), base / "manager.log", args, {}).wait_ready()
    yield m
    m.kill9()
    assert "Traceback" not in Path(m.log).read_text(), "the manager logged a traceback"


@pytest.fixture(scope="module")
def api_schema(manager: ManagerProcess) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{manager.url}/openapi.json")
    # a body over the manager's limit is refused before it is read: 413 (declared in
    # the schema) is a rejection of invalid data too, e.g. a yields list far too long
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return schema


def _short_waits(case: schemathesis.Case) -> None:
    body = case.body
    wait = body.get("wait_s") if isinstance(body, dict) else None
    if isinstance(wait, int | float) and MAX_WAIT_S < wait <= 60:  # valid, but slow
        body["wait_s"] = MAX_WAIT_S


def fuzz(operation: APIOperation, mode: GenerationMode) -> None:
    """Generated requests for one operation, each answered and checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        _short_waits(case)
        case.call_and_validate(timeout=15)

    check()


def fuzzed_operations(api_schema: schemathesis.BaseSchema) -> list[APIOperation]:
    found = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if set(operation.tags or ()) & set(FUZZED_TAGS) and operation.path not in NOT_FUZZED:
            found.append(operation)
    return found


CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or path not in WITHOUT_PARAMETERS
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_every_answer_matches_the_schema_and_none_is_a_5xx(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(api_schema[path][method], mode)


def test_routes_added_since_are_fuzzed_too(api_schema: schemathesis.BaseSchema) -> None:
    operations = fuzzed_operations(api_schema)
    assert {(op.method.upper(), op.path) for op in operations} >= set(OPERATIONS)
    for operation in operations:
        if (operation.method.upper(), operation.path) not in OPERATIONS:
            fuzz(operation, GenerationMode.POSITIVE)
