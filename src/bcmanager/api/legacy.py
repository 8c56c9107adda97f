"""The original BC-pipelines routes: `/assignwork`, `/keepalive`, `/completed`, `/heartbeat`.

They answer byte-for-byte what the original Flask manager answered, so its unmodified
engines work; they are a thin translation onto the same `Manager` calls as v1
(`LegacyCalls`). The three calls original engines make all the time are answered by
`FastPath` when well formed, without FastAPI's machinery per request; the FastAPI routes
declare them (the schema) and answer everything else (a bad query, a refused token).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from bcmanager.api.errors import EXPECTED, answer_for
from bcmanager.api.schemas import (
    ENGINE_ID,
    ENGINE_ID_LENGTH,
    LegacyAssignment,
    LegacyHeartbeat,
    LegacyLate,
    LegacyOk,
    answers,
)
from bcmanager.errors import LeaseLost, Unauthorized
from bcmanager.layout import link_name
from bcmanager.longpoll import ClaimWaiter
from bcmanager.manager import Manager, Outcome
from bcmanager.scheduler import Assignment

log = logging.getLogger("bcmanager.api")

JOB_ID = r"^[0-9]{1,18}$"
JOB_STATE = r"^[A-Za-z_]{1,32}$"
BATCH_SIZE_RANGE = (-(2**31), 2**31)
TOKEN_MAX = 256
LEGACY_REPORT_BACK_PERIOD = 300


class LegacyCalls:
    """What each legacy route does, over `manager`; `/assignwork` claims through `claims`."""

    def __init__(self, manager: Manager, claims: ClaimWaiter) -> None:
        self.manager = manager
        self.claims = claims
        self.settings = manager.settings

    def check_token(self, token: str | None) -> None:
        """Per `--legacy-auth`: open, token (`?token=`) or off. Unauthorized if refused."""
        if self.settings.legacy_auth == "off":
            raise Unauthorized("the legacy routes are switched off on this manager")
        expected = self.settings.token if self.settings.legacy_auth == "token" else None
        if expected is not None and not secrets.compare_digest(
            (token or "").encode(), expected.encode()
        ):
            raise Unauthorized("missing or wrong token query parameter")

    async def assignwork(self, engineid: str, batchsize: int) -> dict[str, Any]:
        # The original engine exits at its first empty answer (and its request has no
        # timeout): while work is still expected, hold the request until there is some.
        # Not for jobs still unconfirmed: original engines confirm at their first
        # keepalive, which may be a lease away, and would be held for as long.
        assignment, _ = await self.claims.claim_or_wait(
            lambda: self.manager.claim(engineid, batchsize, api="legacy", prepare=False),
            self.settings.legacy_wait_s,
            until_empty=True,
            unconfirmed_count=False,
        )
        return _legacy_batch(assignment, engineid, self.settings.lease_s)

    def keepalive(self, job_id: str) -> dict[str, Any]:
        try:
            self.manager.keepalive(int(job_id), token=None)
        except LeaseLost:
            return {"late": True}
        return {"late": False}

    def completed(self, job_id: str, job_state: str) -> dict[str, Any]:
        if job_state == "DONE":
            outcome, reason = Outcome.DONE, None
        else:
            outcome, reason = Outcome.FAILED, f"engine reported {job_state}"
        self.manager.complete(int(job_id), outcome, token=None, reason=reason)
        return {"ok": True}


def router(calls: LegacyCalls) -> APIRouter:
    """The legacy routes as FastAPI routes: the schema, and every answer `FastPath` leaves."""
    routes = APIRouter()

    async def legacy_gate(
        token: Annotated[str | None, Query(max_length=TOKEN_MAX)] = None,
    ) -> None:
        calls.check_token(token)

    @routes.get(
        "/assignwork",
        tags=["legacy"],
        dependencies=[Depends(legacy_gate)],
        responses=answers(LegacyAssignment, 400, 401, 422),
    )
    async def assignwork(
        engineid: Annotated[str, Query(pattern=ENGINE_ID, **ENGINE_ID_LENGTH)],
        batchsize: Annotated[int, Query(ge=BATCH_SIZE_RANGE[0], le=BATCH_SIZE_RANGE[1])],
    ) -> Response:
        return _legacy_bytes(await calls.assignwork(engineid, batchsize))

    @routes.get(
        "/keepalive",
        tags=["legacy"],
        dependencies=[Depends(legacy_gate)],
        responses=answers(LegacyLate, 401, 404, 422),
    )
    async def keepalive(
        job_id: Annotated[str, Query(pattern=JOB_ID)],
        job_state: Annotated[str, Query(pattern=JOB_STATE)],
    ) -> Response:
        return _legacy_bytes(calls.keepalive(job_id))

    @routes.get(
        "/completed",
        tags=["legacy"],
        dependencies=[Depends(legacy_gate)],
        responses=answers(LegacyOk, 401, 404, 409, 422),
    )
    async def completed(
        job_id: Annotated[str, Query(pattern=JOB_ID)],
        job_state: Annotated[str, Query(pattern=JOB_STATE)],
    ) -> Response:
        return _legacy_bytes(calls.completed(job_id, job_state))

    @routes.get("/heartbeat", tags=["legacy"], responses=answers(LegacyHeartbeat))
    async def heartbeat() -> Response:
        return _legacy_bytes(calls.manager.heartbeat_view())

    return routes


_ENGINE = re.compile(ENGINE_ID)
_JOB_ID = re.compile(JOB_ID)
_JOB_STATE = re.compile(JOB_STATE)
_INT = re.compile(r"-?(0|[1-9][0-9]{0,9})")


class FastPath:
    """ASGI middleware: `/assignwork`, `/keepalive` and `/completed` with a well-formed
    query and an accepted token, answered without FastAPI's dependency solving, parameter
    validation and response classes per request: original engines call them all the time,
    and that machinery was most of the manager's CPU per call (issue 23). It only ever
    takes a query FastAPI would take (each value as strict or stricter than the route's
    declaration); anything else goes on to the FastAPI route, which answers it as always
    (422 naming the problem, 401). It stands in front of the FastAPI app (`create_app`),
    so errors of the call itself are answered here as the app's handlers answer them
    (`errors.answer_for`), a bug's trace logged as the app's error middleware logs it."""

    def __init__(self, app: ASGIApp, calls: LegacyCalls, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.calls = calls
        # the matched route in the scope, as the router leaves it (the metrics' label)
        self.routes = {
            r.path: r
            for r in routes
            if isinstance(r, APIRoute) and r.path in ("/assignwork", "/keepalive", "/completed")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        query = _plain_query(scope["query_string"]) if route and scope["method"] == "GET" else None
        if route is None or query is None or not self._token_ok(query):
            await self.app(scope, receive, send)
            return
        try:
            payload = await self._call(scope["path"], query)
        except Exception as exc:  # in front of the app: its handlers are not above us
            if not isinstance(exc, EXPECTED):
                log.exception("%s failed", scope["path"])
            scope["route"] = route
            await answer_for(exc)(scope, receive, send)
            return
        if payload is None:  # not well formed: FastAPI says what is wrong
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        await _send_legacy_bytes(payload, send)

    def _token_ok(self, query: dict[str, str]) -> bool:
        token = query.get("token")
        if token is not None and len(token) > TOKEN_MAX:
            return False
        try:
            self.calls.check_token(token)
        except Unauthorized:
            return False
        return True

    async def _call(self, path: str, query: dict[str, str]) -> dict[str, Any] | None:
        if path == "/assignwork":
            engine, size = query.get("engineid", ""), query.get("batchsize", "")
            if not (_is_engine_id(engine) and _INT.fullmatch(size)):
                return None
            batch = int(size)
            if not BATCH_SIZE_RANGE[0] <= batch <= BATCH_SIZE_RANGE[1]:
                return None
            return await self.calls.assignwork(engine, batch)
        job_id, state = query.get("job_id", ""), query.get("job_state", "")
        if not (_JOB_ID.fullmatch(job_id) and _JOB_STATE.fullmatch(state)):
            return None
        if path == "/keepalive":
            return self.calls.keepalive(job_id)
        return self.calls.completed(job_id, state)


def _plain_query(raw: bytes) -> dict[str, str] | None:
    """The query as one value a name, as Starlette decodes it; None if a name repeats."""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    query = dict(pairs)
    return query if len(query) == len(pairs) else None


def _is_engine_id(value: str) -> bool:
    low, high = ENGINE_ID_LENGTH["min_length"], ENGINE_ID_LENGTH["max_length"]
    return low <= len(value) <= high and _ENGINE.fullmatch(value) is not None


_JSON_TYPE = (b"content-type", b"application/json")


async def _send_legacy_bytes(payload: dict[str, Any], send: Send) -> None:
    """`_legacy_bytes`, sent as two ASGI messages with the same headers, without building
    a Starlette response per call."""
    body = json.dumps(payload).encode()
    headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _legacy_bytes(payload: dict[str, Any]) -> Response:
    """The original manager answered `json.dumps(...)`; keep those exact bytes."""
    return Response(json.dumps(payload), media_type="application/json")


def _legacy_batch(assignment: Assignment | None, engine: str, lease_s: float) -> dict[str, Any]:
    if assignment is None:
        return {
            "report_back_period": LEGACY_REPORT_BACK_PERIOD,
            "jobid": "-1",
            "job_input_dir": "",
            "job_output_dir": "",
            "bc_engine_id": "",
            "batch_size": 0,
            "batch": [],
            "report_back_interval": int(lease_s),
        }
    job = assignment.job
    return {
        "report_back_period": LEGACY_REPORT_BACK_PERIOD,
        "jobid": str(job.id),
        "job_input_dir": f"ASSIGNED_{job.id}_{engine}",
        "job_output_dir": f"TMPOUTPUT_{job.id}_{engine}",
        "bc_engine_id": engine,
        "batch_size": len(assignment.files),
        "batch": [link_name(f.path) for f in assignment.files],
        "report_back_interval": int(lease_s),
    }
