"""Wiring: `create_app` builds the FastAPI app over a `Manager` from the other modules.

Lifespan (long-poll waiters bound to the loop, the manager's threads), the error
handlers, middleware (body limit, request timer), the routers, and the schema's
`--max-batch`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from bcmanager import __version__
from bcmanager.api import errors, legacy, v1
from bcmanager.api.errors import error
from bcmanager.api.schemas import answers
from bcmanager.dashboard import router as dashboard_router
from bcmanager.longpoll import ClaimWaiter
from bcmanager.manager import Manager
from bcmanager.metrics import Metrics, RequestTimer
from bcmanager.progress import Progress

MAX_BODY_BYTES = 64 * 1024


def create_app(manager: Manager, manage_lifecycle: bool = True) -> ASGIApp:
    """The ASGI app over `manager`; with `manage_lifecycle` it also runs its threads.

    The request timer, the body limit and the legacy fast path stand in front of the
    FastAPI app, not inside its middleware stack: an original engine's calls, most of
    what a manager serves, then pass four ASGI layers, not nine (FastAPI 0.165 adds its
    own exception and body-limit middleware to Starlette's; issue 23). Every other
    request goes on into FastAPI with the timer and the limit applied as before."""
    claims = ClaimWaiter(manager)
    settings = manager.settings
    progress = Progress(manager)
    metrics = Metrics(manager, progress)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        claims.bind(asyncio.get_running_loop())
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
    errors.install(app)
    calls = legacy.LegacyCalls(manager, claims)
    legacy_routes = legacy.router(calls).routes
    # The routers' routes join the app's own list: FastAPI 0.165's include_router keeps a
    # router as one entry that every request searches through again (+0.1 ms a request).
    app.router.routes.extend(legacy_routes)
    app.router.routes.extend(v1.router(manager, claims, progress, metrics).routes)
    app.include_router(dashboard_router(progress), responses=answers())
    _declare_max_batch(app, settings.max_batch)
    return RequestTimer(BodyLimit(legacy.FastPath(app, calls, legacy_routes)), metrics)


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
                await error(*problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
