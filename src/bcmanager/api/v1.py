"""The v1 API: claims, heartbeats and completions (token-guarded), and the read-only views
(generations, jobs, status, events, health, Prometheus metrics)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from bcmanager import __version__
from bcmanager.api.schemas import (
    ClaimRequest,
    CompleteRequest,
    FleetRequest,
    GenerationRequest,
    HeartbeatRequest,
    answers,
)
from bcmanager.bulkjson import dumps_steps
from bcmanager.config import Settings
from bcmanager.errors import LeaseLost, Unauthorized
from bcmanager.generations import make as make_generation
from bcmanager.layout import link_name
from bcmanager.ledger import FileRow
from bcmanager.longpoll import ClaimWaiter
from bcmanager.manager import Manager, Outcome
from bcmanager.metrics import Metrics
from bcmanager.progress import Progress
from bcmanager.scheduler import Assignment
from bcmanager.stepwise import run_on_loop

JobIdPath = Annotated[int, PathParam(ge=1, le=10**18)]

Guard = Callable[[Request], Awaitable[None]]


def bearer_token(settings: Settings) -> Guard:
    """The dependency of the calls that change state: `Authorization: Bearer <token>`
    when the manager has a token, nothing otherwise."""

    async def require_token(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise Unauthorized("missing or wrong token (Authorization: Bearer ...)")

    return require_token


def router(
    manager: Manager, claims: ClaimWaiter, progress: Progress, metrics: Metrics
) -> APIRouter:
    """The v1 routes over `manager` (and `/healthz`, `/metrics`), in the schema's order."""
    routes = APIRouter()
    require_token = bearer_token(manager.settings)
    _add_job_routes(routes, manager, claims, require_token)
    _add_view_routes(routes, manager, progress, metrics, require_token)
    return routes


def _add_job_routes(
    routes: APIRouter, manager: Manager, claims: ClaimWaiter, require_token: Guard
) -> None:
    """An engine's calls: claim a batch, heartbeat it, complete it."""

    @routes.post(
        "/v1/claim",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=answers(None, 400, 401, 422),
    )
    async def claim(body: ClaimRequest) -> dict[str, Any]:
        """Claim a batch; with `wait_s` the call waits until work exists (long-poll).

        `more_expected` says whether work is still on its way (files queued, settling or
        being scanned, the first scan since start not finished, or a job its engine has
        not yet confirmed with a heartbeat)."""
        any_model = body.models == "any"
        assignment, expected = await claims.claim_or_wait(
            lambda: manager.claim(
                body.engine_id,
                body.max_files,
                api="v1",
                any_model=any_model,
                prepare=False,
                slices=body.slices,
            ),
            body.wait_s,
            until_empty=body.until_empty,
            any_model=any_model,
        )
        job = None if assignment is None else _v1_job(manager, assignment)
        return {"job": job, "more_expected": expected}

    @routes.post(
        "/v1/jobs/{job_id}/heartbeat",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=answers(None, 400, 401, 404, 409, 422),
    )
    async def v1_heartbeat(job_id: JobIdPath, body: HeartbeatRequest) -> dict[str, Any]:
        progress = body.progress.as_timing() if body.progress else None
        job = manager.keepalive(
            job_id, token=body.token, progress=progress, basecalled=body.basecalled
        )
        return {"late": False, "lease_expires": job.lease_expires, "lease_s": job.lease_s}

    @routes.post(
        "/v1/jobs/{job_id}/complete",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=answers(None, 400, 401, 404, 409, 422),
    )
    async def v1_complete(job_id: JobIdPath, body: CompleteRequest) -> dict[str, Any]:
        yields = [y.model_dump() for y in body.yields] if body.yields else None
        timing = body.timing.as_timing() if body.timing else None
        result = manager.complete(
            job_id, Outcome(body.outcome), body.token, body.reason, yields, timing
        )
        if result.late:
            raise LeaseLost(f"job {job_id}: the lease had expired; output set aside, not merged")
        return {"ok": True, "state": result.job.state.value, "repeated": result.repeated}


def _add_view_routes(
    routes: APIRouter,
    manager: Manager,
    progress: Progress,
    metrics: Metrics,
    require_token: Guard,
) -> None:
    """Generations (listed, and added with the token), a job, status, events, health and
    metrics."""

    @routes.get("/v1/generations", tags=["v1"], responses=answers())
    def v1_generations() -> dict[str, Any]:
        """Every generation (the live one first) with its files by state."""
        return {"generations": manager.generations_view()}

    @routes.post(
        "/v1/generations",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=answers(None, 400, 401, 409, 422),
    )
    def v1_add_generation(body: GenerationRequest) -> dict[str, Any]:
        """Add a backfill generation: every known file (and every file found later) is
        queued for it, after all earlier generations' work. The same generation again
        changes nothing (`created` false); the same name with another recipe is refused
        (409)."""
        gen = make_generation(
            body.name, body.model, body.kit_name, body.modified_bases, body.reference
        )
        added, new = manager.add_generation(gen)
        return {"generation": added.to_dict(), "created": new}

    @routes.put(
        "/v1/fleet",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=answers(None, 401, 422),
    )
    def v1_fleet(body: FleetRequest) -> dict[str, Any]:
        """Tell the manager how many engines the run is to have (a controller, from the jobs
        it has submitted): while fewer have called, engines are still arriving and a last
        part of the queue is cut for them (README, scheduling). null: not told, inferred
        from the gaps between engines' first calls. The same call again changes nothing."""
        return manager.expect_engines(body.expected_engines)

    @routes.get("/v1/jobs/{job_id}", tags=["v1"], responses=answers(None, 404, 422))
    async def v1_job(job_id: JobIdPath) -> dict[str, Any]:
        return manager.job_detail(job_id)

    @routes.get("/v1/status", tags=["v1"], responses=answers())
    async def v1_status() -> Response:
        """Files, jobs, engines, runs, progress, throughput and ETA (see docs/observability.md)."""
        # Built and encoded on the event loop a step at a time (`stepwise`), claims and
        # heartbeats served between steps. In a worker thread, a 5,000-engine status made
        # every request meanwhile wait for the interpreter lock at each of its system calls.
        status = await run_on_loop(progress.status_steps())
        body = await run_on_loop(dumps_steps(status))
        return Response(body.encode("utf-8"), media_type="application/json")

    @routes.get("/v1/events", tags=["v1"], responses=answers(None, 422))
    async def v1_events(
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        with manager.lock:
            events = manager.db.events(after, limit)
        return {"events": [e.as_dict() for e in events]}

    @routes.get("/healthz", tags=["v1"], responses=answers())
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @routes.get("/metrics", tags=["v1"], responses=answers())
    def prometheus_metrics() -> Response:
        """Prometheus text exposition (docs/observability.md lists the metrics)."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)


def _v1_job(manager: Manager, assignment: Assignment) -> dict[str, Any]:
    """A claimed job as the v1 answer gives it: lease, folders, generation and files."""
    job = assignment.job
    layout = manager.layout
    answer = {
        "job_id": job.id,
        "token": job.token,
        "engine": job.engine,
        "lease_s": job.lease_s,
        "lease_expires": job.lease_expires,
        "heartbeat_s": assignment.heartbeat_s or job.lease_s / 3,
        "input_dir": str(layout.assigned_dir(job.id, job.engine)),
        "output_dir": str(layout.tmp_output_dir(job.id, job.engine)),
        "job_input_dir": layout.assigned_dir(job.id, job.engine).name,
        "job_output_dir": layout.tmp_output_dir(job.id, job.engine).name,
        "output_layout": manager.output.name,
        "generation": manager.generation(job.gen).to_dict(),
        "files": [_v1_file(f) for f in assignment.files],
    }
    if any(f.part is not None for f in assignment.files):
        answer["read_ids"] = str(layout.read_list_path(job.id, job.engine))
    return answer


def _v1_file(f: FileRow) -> dict[str, Any]:
    """A job's file; of a slice, the reads it holds (`read_ids` lists them)."""
    item: dict[str, Any] = {"path": f.path, "name": link_name(f.path), "size": f.size}
    item["reads"] = f.reads
    if f.part is not None:
        item["slice"] = f.part.to_dict()
    return item
