"""The original BC-pipelines routes: `/assignwork`, `/keepalive`, `/completed`, `/heartbeat`.

They answer byte-for-byte what the original Flask manager answered, so its unmodified
engines work; they are a thin translation onto the same `Manager` calls as v1.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from bcmanager.api.schemas import (
    ENGINE_ID,
    ENGINE_ID_LENGTH,
    LegacyAssignment,
    LegacyHeartbeat,
    LegacyLate,
    LegacyOk,
    answers,
)
from bcmanager.config import Settings
from bcmanager.errors import LeaseLost, Unauthorized
from bcmanager.layout import link_name
from bcmanager.longpoll import ClaimWaiter
from bcmanager.manager import Manager, Outcome
from bcmanager.scheduler import Assignment

JOB_ID = r"^[0-9]{1,18}$"
JOB_STATE = r"^[A-Za-z_]{1,32}$"
LEGACY_REPORT_BACK_PERIOD = 300


def gate(settings: Settings) -> Callable[..., Awaitable[None]]:
    """The legacy routes' dependency, per `--legacy-auth`: open, token (`?token=`) or off."""

    async def legacy_gate(token: Annotated[str | None, Query(max_length=256)] = None) -> None:
        if settings.legacy_auth == "off":
            raise Unauthorized("the legacy routes are switched off on this manager")
        expected = settings.token if settings.legacy_auth == "token" else None
        if expected is not None and not secrets.compare_digest(
            (token or "").encode(), expected.encode()
        ):
            raise Unauthorized("missing or wrong token query parameter")

    return legacy_gate


def router(manager: Manager, claims: ClaimWaiter) -> APIRouter:
    """The legacy routes over `manager`; `/assignwork` claims through `claims`."""
    settings = manager.settings
    legacy_gate = gate(settings)
    routes = APIRouter()

    @routes.get(
        "/assignwork",
        tags=["legacy"],
        dependencies=[Depends(legacy_gate)],
        responses=answers(LegacyAssignment, 400, 401, 422),
    )
    async def assignwork(
        engineid: Annotated[str, Query(pattern=ENGINE_ID, **ENGINE_ID_LENGTH)],
        batchsize: Annotated[int, Query(ge=-(2**31), le=2**31)],
    ) -> Response:
        # The original engine exits at its first empty answer (and its request has no
        # timeout): while work is still expected, hold the request until there is some.
        # Not for jobs still unconfirmed: original engines confirm at their first
        # keepalive, which may be a lease away, and would be held for as long.
        assignment, _ = await claims.claim_or_wait(
            lambda: manager.claim(engineid, batchsize, api="legacy", prepare=False),
            settings.legacy_wait_s,
            until_empty=True,
            unconfirmed_count=False,
        )
        return _legacy_bytes(_legacy_batch(assignment, engineid, settings.lease_s))

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
        try:
            manager.keepalive(int(job_id), token=None)
        except LeaseLost:
            return _legacy_bytes({"late": True})
        return _legacy_bytes({"late": False})

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
        if job_state == "DONE":
            outcome, reason = Outcome.DONE, None
        else:
            outcome, reason = Outcome.FAILED, f"engine reported {job_state}"
        manager.complete(int(job_id), outcome, token=None, reason=reason)
        return _legacy_bytes({"ok": True})

    @routes.get("/heartbeat", tags=["legacy"], responses=answers(LegacyHeartbeat))
    async def heartbeat() -> Response:
        return _legacy_bytes(manager.heartbeat_view())

    return routes


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
