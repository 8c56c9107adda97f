"""HTTP: the legacy BC-pipelines routes, the v1 API, and the one place errors become HTTP.

Legacy routes (`/assignwork`, `/keepalive`, `/completed`, `/heartbeat`) answer
byte-for-byte what the original Flask manager answered, so its unmodified engines
work; they are a thin translation onto the same `Manager` calls as v1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bcmanager import __version__
from bcmanager.bulkjson import dumps_steps
from bcmanager.dashboard import router as dashboard_router
from bcmanager.errors import BcmError, LeaseLost, Unauthorized
from bcmanager.generations import NAME_PATTERN as GENERATION_NAME
from bcmanager.generations import WORD_PATTERN
from bcmanager.generations import make as make_generation
from bcmanager.layout import ENGINE_ID_MAX, ENGINE_ID_PATTERN, link_name
from bcmanager.longpoll import WorkSignal
from bcmanager.manager import Manager, Outcome, Timing
from bcmanager.metrics import Metrics, RequestTimer
from bcmanager.progress import Progress
from bcmanager.scheduler import Assignment
from bcmanager.stepwise import run_on_loop

log = logging.getLogger("bcmanager.api")

ENGINE_ID = ENGINE_ID_PATTERN
ENGINE_ID_LENGTH = {"min_length": 1, "max_length": ENGINE_ID_MAX}
JOB_ID = r"^[0-9]{1,18}$"
JOB_STATE = r"^[A-Za-z_]{1,32}$"
MAX_BODY_BYTES = 64 * 1024
LEGACY_REPORT_BACK_PERIOD = 300
RECHECK_S = 1.0  # a held claim looks again at least this often


# -- v1 request bodies ------------------------------------------------------------------


def _json_integer(value: object) -> object:
    """An integer as JSON Schema has it: 3 and 3.0, but not `true` or "3"."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


class _Body(BaseModel):
    # strict: `false` is no number and "3" no integer, as the schema says
    model_config = ConfigDict(extra="forbid", strict=True)


class ClaimRequest(_Body):
    engine_id: Annotated[
        str, Field(pattern=ENGINE_ID, **ENGINE_ID_LENGTH, description="engine name")
    ]
    max_files: Annotated[
        Annotated[int, Field(ge=0), Strict(False), BeforeValidator(_json_integer)] | None,
        Field(description="0 or absent: the default"),
    ] = None
    wait_s: Annotated[float, Field(ge=0, le=60, description="long-poll up to this long")] = 0.0
    until_empty: Annotated[
        bool,
        Field(
            description="answer at once, without a job, when no more work is expected"
            " (nothing queued, settling, being scanned or unconfirmed): for engines that exit then"
        ),
    ] = False
    models: Annotated[
        Literal["own", "any"],
        Field(
            description="own: the engine runs its own model and gets the live generation's"
            " files only; any: it runs the model the job names (`generation`), so every"
            " generation's files, the earliest generation first"
        ),
    ] = "own"


class GenerationRequest(_Body):
    """A backfill generation: every known file is queued for it."""

    name: Annotated[str, Field(pattern=f"^{GENERATION_NAME}$", description="its tree's folder")]
    model: Annotated[
        str, Field(pattern=f"^{WORD_PATTERN}$", max_length=512, description="a Dorado model")
    ]
    kit_name: Annotated[str | None, Field(pattern=f"^{WORD_PATTERN}$", max_length=64)] = None
    modified_bases: Annotated[
        list[Annotated[str, Field(pattern=f"^{WORD_PATTERN}$", max_length=64)]],
        Field(max_length=16),
    ] = []


class TokenRequest(_Body):
    token: Annotated[str, Field(min_length=1, max_length=128)]


Count = Annotated[int, Field(ge=0, le=10**15), Strict(False), BeforeValidator(_json_integer)]
HistCell = Annotated[list[Count], Field(min_length=3, max_length=3)]


class YieldReport(_Body):
    """The engine's count of a job's reads of one run and barcode (`output.yields`)."""

    run: Annotated[str, Field(min_length=1, max_length=1000)]
    barcode: Annotated[str, Field(min_length=1, max_length=64)]
    reads: Count
    bases: Count
    pass_reads: Count
    pass_bases: Count
    qscore_sum: Annotated[float, Field(ge=0, le=1e15), Strict(False)]
    hist: Annotated[
        list[HistCell], Field(max_length=1000, description="[length bin, reads, bases] each")
    ] = []


Seconds = Annotated[float, Field(ge=0, le=1e7), Strict(False)]


class TimingReport(_Body):
    """How long the engine's basecaller took to start (model loaded, GPU ready), then to
    basecall the batch, and the bytes it wrote: what the manager sizes the engine's next
    batches from. In a heartbeat: the batch so far."""

    startup_s: Seconds
    basecall_s: Seconds
    output_bytes: Annotated[Count | None, Field(description="the basecaller's output")] = None
    filing_s: Annotated[
        Seconds | None,
        Field(description="filing the output into the layout, after basecalling (DONE)"),
    ] = None


class HeartbeatRequest(TokenRequest):
    progress: TimingReport | None = None
    basecalled: Annotated[
        bool,
        Field(
            description="the basecaller has finished the batch (exit 0) and `progress` is its"
            " whole account; the engine files the output and claims its next batch meanwhile"
        ),
    ] = False


class CompleteRequest(TokenRequest):
    outcome: Literal["done", "failed", "released"]
    reason: Annotated[str | None, Field(max_length=2000)] = None
    timing: TimingReport | None = None
    yields: Annotated[
        list[YieldReport] | None,
        Field(max_length=1000, description="reads per run and barcode (done only)"),
    ] = None


JobIdPath = Annotated[int, PathParam(ge=1, le=10**18)]


# -- answers, as the OpenAPI schema declares them ---------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Answer):
    where: str
    problem: str


class ErrorAnswer(_Answer):
    """Every 4xx (and the 500 that should never happen): a message naming the problem."""

    error: str
    problems: list[Problem] | None = None  # 422: each invalid value
    late: bool | None = None  # 409 LeaseLost: the engine must drop the batch


class LegacyAssignment(_Answer):
    report_back_period: int
    jobid: str
    job_input_dir: str
    job_output_dir: str
    bc_engine_id: str
    batch_size: int
    batch: list[str]
    report_back_interval: int


class LegacyLate(_Answer):
    late: bool


class LegacyOk(_Answer):
    ok: bool


class LegacyHeartbeat(_Answer):
    status: Literal["true", "false"]
    inactivity_interval: float


_ERROR_TEXT = {
    400: "a body that is not JSON, or a value out of bounds",
    401: "the token is missing or wrong (or the legacy routes are off)",
    404: "unknown job",
    409: "the lease is lost or the token does not match: drop the batch",
    411: "a request body without Content-Length",
    413: "request body too large",
    422: "a malformed or out-of-range value",
    503: "the ledger cannot be written (e.g. its disk is full): nothing changed, retry",
}


def _answers(ok: type[BaseModel] | None = None, *errors: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: its 200 model (legacy routes) and its error codes."""
    out: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        out[200] = {"model": ok, "description": "the original manager's exact JSON"}
    for code in (*errors, 411, 413, 503):
        out[code] = {"model": ErrorAnswer, "description": _ERROR_TEXT[code]}
    return out


class BodyLimit:
    """Refuses bodies over MAX_BODY_BYTES, and bodies of unknown length, before any is read.

    Plain ASGI: Starlette's BaseHTTPMiddleware would add a task and a stream per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            problem = None
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                problem = (413, f"request body over {MAX_BODY_BYTES} bytes")
            elif b"transfer-encoding" in headers:
                problem = (411, "a request body needs a Content-Length")
            if problem is not None:
                await _error(*problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _legacy_bytes(payload: dict[str, Any]) -> Response:
    """The original manager answered `json.dumps(...)`; keep those exact bytes."""
    return Response(json.dumps(payload), media_type="application/json")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(manager: Manager, manage_lifecycle: bool = True) -> FastAPI:
    """The ASGI app over `manager`; with `manage_lifecycle` it also runs its threads."""
    # claims of engines that run any model, and of those that run only their own (the live
    # generation): a wake is passed on only among claims that could use the same files
    signals = {True: WorkSignal(), False: WorkSignal()}
    manager.add_listener(lambda everyone: [s.wake(everyone) for s in signals.values()])
    settings = manager.settings
    progress = Progress(manager)
    metrics = Metrics(manager, progress)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        for signal in signals.values():
            signal.bind(asyncio.get_running_loop())
        if manage_lifecycle:
            manager.start_background()
        try:
            yield
        finally:
            if manage_lifecycle:
                manager.close()

    app = FastAPI(
        title="bcmanager",
        version=__version__,
        description="Coordinates basecalling engines; legacy BC-pipelines routes and the v1 API.",
        lifespan=lifespan,
    )

    # -- errors: mapped to HTTP here and nowhere else -------------------------------

    @app.exception_handler(BcmError)
    async def on_bcm_error(_: Request, exc: BcmError) -> JSONResponse:
        extra = {"late": True} if isinstance(exc, LeaseLost) else {}
        return _error(exc.status_code, str(exc), **extra)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"where": "request", "problem": "invalid"}
        return _error(422, f"invalid {first['where']}: {first['problem']}", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(sqlite3.OperationalError)
    async def on_ledger_error(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        log.error("the ledger cannot be written (%s): the call changed nothing", exc)
        return _error(503, f"the ledger cannot be written: {exc}")

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}")

    app.add_middleware(BodyLimit)
    app.add_middleware(RequestTimer, metrics=metrics)

    async def claim_or_wait(
        claim_once: Callable[[], Assignment | None],
        wait_s: float,
        until_empty: bool,
        any_model: bool = False,
        unconfirmed_count: bool = True,
    ) -> tuple[Assignment | None, bool]:
        """Claim, waiting up to `wait_s` for work; with `until_empty`, give up as soon as
        no more work is expected. Returns the assignment and whether work is expected."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        signal = signals[any_model]
        while True:
            place = signal.waiter()  # before looking: a wake meanwhile is not lost
            assignment = claim_once()
            if assignment is not None:
                signal.forget(place)
                if manager.queued(any_model):  # pass the wake on: more engines can be fed
                    signal.wake_here()
                # the job's folders: system calls that must not hold up other requests
                await asyncio.to_thread(manager.prepare_folders, assignment)
                return assignment, True
            # after the claim: none slips between
            expected = manager.work_expected(any_model, unconfirmed_count)
            remaining = deadline - loop.time()
            if remaining <= 0 or (until_empty and not expected):
                signal.forget(place)
                return None, expected
            # an until-empty claim re-checks now and then whether work is still expected (a
            # scan may end quietly); a plain long poll only waits for work
            pause = min(remaining, RECHECK_S) if until_empty else remaining
            await signal.wait(place, pause)

    # -- auth -----------------------------------------------------------------------

    async def require_token(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise Unauthorized("missing or wrong token (Authorization: Bearer ...)")

    async def legacy_gate(token: Annotated[str | None, Query(max_length=256)] = None) -> None:
        if settings.legacy_auth == "off":
            raise Unauthorized("the legacy routes are switched off on this manager")
        expected = settings.token if settings.legacy_auth == "token" else None
        if expected is not None and not secrets.compare_digest(
            (token or "").encode(), expected.encode()
        ):
            raise Unauthorized("missing or wrong token query parameter")

    # -- legacy routes ----------------------------------------------------------------

    @app.get(
        "/assignwork",
        tags=["legacy"],
        dependencies=[Depends(legacy_gate)],
        responses=_answers(LegacyAssignment, 400, 401, 422),
    )
    async def assignwork(
        engineid: Annotated[str, Query(pattern=ENGINE_ID, **ENGINE_ID_LENGTH)],
        batchsize: Annotated[int, Query(ge=-(2**31), le=2**31)],
    ) -> Response:
        # The original engine exits at its first empty answer (and its request has no
        # timeout): while work is still expected, hold the request until there is some.
        # Not for jobs still unconfirmed: original engines confirm at their first
        # keepalive, which may be a lease away, and would be held for as long.
        assignment, _ = await claim_or_wait(
            lambda: manager.claim(engineid, batchsize, api="legacy", prepare=False),
            settings.legacy_wait_s,
            until_empty=True,
            unconfirmed_count=False,
        )
        return _legacy_bytes(_legacy_batch(assignment, engineid, settings.lease_s))

    @app.get(
        "/keepalive",
        tags=["legacy"],
        dependencies=[Depends(legacy_gate)],
        responses=_answers(LegacyLate, 401, 404, 422),
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

    @app.get(
        "/completed",
        tags=["legacy"],
        dependencies=[Depends(legacy_gate)],
        responses=_answers(LegacyOk, 401, 404, 409, 422),
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

    @app.get("/heartbeat", tags=["legacy"], responses=_answers(LegacyHeartbeat))
    async def heartbeat() -> Response:
        return _legacy_bytes(manager.heartbeat_view())

    # -- v1 ---------------------------------------------------------------------------

    @app.post(
        "/v1/claim",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=_answers(None, 400, 401, 422),
    )
    async def claim(body: ClaimRequest) -> dict[str, Any]:
        """Claim a batch; with `wait_s` the call waits until work exists (long-poll).

        `more_expected` says whether work is still on its way (files queued, settling or
        being scanned, the first scan since start not finished, or a job its engine has
        not yet confirmed with a heartbeat)."""
        any_model = body.models == "any"
        assignment, expected = await claim_or_wait(
            lambda: manager.claim(
                body.engine_id, body.max_files, api="v1", any_model=any_model, prepare=False
            ),
            body.wait_s,
            until_empty=body.until_empty,
            any_model=any_model,
        )
        job = None if assignment is None else _v1_job(manager, assignment)
        return {"job": job, "more_expected": expected}

    @app.post(
        "/v1/jobs/{job_id}/heartbeat",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=_answers(None, 400, 401, 404, 409, 422),
    )
    async def v1_heartbeat(job_id: JobIdPath, body: HeartbeatRequest) -> dict[str, Any]:
        progress = Timing(**body.progress.model_dump()) if body.progress else None
        job = manager.keepalive(
            job_id, token=body.token, progress=progress, basecalled=body.basecalled
        )
        return {"late": False, "lease_expires": job.lease_expires, "lease_s": job.lease_s}

    @app.post(
        "/v1/jobs/{job_id}/complete",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=_answers(None, 400, 401, 404, 409, 422),
    )
    async def v1_complete(job_id: JobIdPath, body: CompleteRequest) -> dict[str, Any]:
        yields = [y.model_dump() for y in body.yields] if body.yields else None
        timing = Timing(**body.timing.model_dump()) if body.timing else None
        result = manager.complete(
            job_id, Outcome(body.outcome), body.token, body.reason, yields, timing
        )
        if result.late:
            raise LeaseLost(f"job {job_id}: the lease had expired; output set aside, not merged")
        return {"ok": True, "state": result.job.state.value, "repeated": result.repeated}

    @app.get("/v1/generations", tags=["v1"], responses=_answers())
    def v1_generations() -> dict[str, Any]:
        """Every generation (the live one first) with its files by state."""
        return {"generations": manager.generations_view()}

    @app.post(
        "/v1/generations",
        tags=["v1"],
        dependencies=[Depends(require_token)],
        responses=_answers(None, 400, 401, 409, 422),
    )
    def v1_add_generation(body: GenerationRequest) -> dict[str, Any]:
        """Add a backfill generation: every known file (and every file found later) is
        queued for it, after all earlier generations' work. The same generation again
        changes nothing (`created` false); the same name with another recipe is refused
        (409)."""
        gen = make_generation(body.name, body.model, body.kit_name, body.modified_bases)
        added, new = manager.add_generation(gen)
        return {"generation": added.to_dict(), "created": new}

    @app.get("/v1/jobs/{job_id}", tags=["v1"], responses=_answers(None, 404, 422))
    async def v1_job(job_id: JobIdPath) -> dict[str, Any]:
        return manager.job_detail(job_id)

    @app.get("/v1/status", tags=["v1"], responses=_answers())
    async def v1_status() -> Response:
        """Files, jobs, engines, runs, progress, throughput and ETA (see docs/observability.md)."""
        # Built and encoded on the event loop a step at a time (`stepwise`), claims and
        # heartbeats served between steps. In a worker thread, a 5,000-engine status made
        # every request meanwhile wait for the interpreter lock at each of its system calls.
        status = await run_on_loop(progress.status_steps())
        body = await run_on_loop(dumps_steps(status))
        return Response(body.encode("utf-8"), media_type="application/json")

    @app.get("/v1/events", tags=["v1"], responses=_answers(None, 422))
    async def v1_events(
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        with manager.lock:
            events = manager.db.events(after, limit)
        return {"events": [e.as_dict() for e in events]}

    @app.get("/healthz", tags=["v1"], responses=_answers())
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.get("/metrics", tags=["v1"], responses=_answers())
    def prometheus_metrics() -> Response:
        """Prometheus text exposition (docs/observability.md lists the metrics)."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.include_router(dashboard_router(progress), responses=_answers())
    _declare_max_batch(app, settings.max_batch)
    return app


def _declare_max_batch(app: FastAPI, max_batch: int) -> None:
    """Write this manager's largest batch (a setting) into the schema it serves."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for param in schema["paths"]["/assignwork"]["get"]["parameters"]:
            if param["name"] == "batchsize":
                param["schema"]["maximum"] = max_batch
        max_files = schema["components"]["schemas"]["ClaimRequest"]["properties"]["max_files"]
        for option in max_files.get("anyOf", [max_files]):
            if option.get("type") == "integer":
                option["maximum"] = max_batch
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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


def _v1_job(manager: Manager, assignment: Assignment) -> dict[str, Any]:
    job = assignment.job
    layout = manager.layout
    return {
        "job_id": job.id,
        "token": job.token,
        "engine": job.engine,
        "lease_s": job.lease_s,
        "lease_expires": job.lease_expires,
        "heartbeat_s": job.lease_s / 3,
        "input_dir": str(layout.assigned_dir(job.id, job.engine)),
        "output_dir": str(layout.tmp_output_dir(job.id, job.engine)),
        "job_input_dir": layout.assigned_dir(job.id, job.engine).name,
        "job_output_dir": layout.tmp_output_dir(job.id, job.engine).name,
        "output_layout": manager.output.name,
        "generation": manager.generation(job.gen).to_dict(),
        "files": [
            {"path": f.path, "name": link_name(f.path), "size": f.size, "reads": f.reads}
            for f in assignment.files
        ],
    }
