"""Errors become HTTP here and nowhere else: a status and `{"error": message}`.

bcmanager's own errors (`bcmanager.errors`) carry their status; a lost lease adds
`"late": true`; invalid requests get 422 with each problem; a ledger that cannot be
written is 503 (nothing changed, retry); anything else is a 500 naming only its type.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bcmanager.errors import BcmError, LeaseLost

log = logging.getLogger("bcmanager.api")


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """The answer to every error: `{"error": message, **extra}` (`schemas.ErrorAnswer`)."""
    return JSONResponse({"error": message, **extra}, status_code=status)


# What a call may raise in the normal course (the rest is a bug: a 500, its trace logged)
EXPECTED = (BcmError, StarletteHTTPException, sqlite3.OperationalError)


def answer_for(exc: Exception) -> JSONResponse:
    """The answer to an exception a call raised (what the handlers below answer)."""
    if isinstance(exc, BcmError):
        extra = {"late": True} if isinstance(exc, LeaseLost) else {}
        return error(exc.status_code, str(exc), **extra)
    if isinstance(exc, StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))
    if isinstance(exc, sqlite3.OperationalError):
        log.error("the ledger cannot be written (%s): the call changed nothing", exc)
        return error(503, f"the ledger cannot be written: {exc}")
    return error(500, f"internal error: {type(exc).__name__}")  # logged by the server


async def on_error(_: Request, exc: Exception) -> JSONResponse:
    return answer_for(exc)


async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
        for e in exc.errors()
    ]
    first = problems[0] if problems else {"where": "request", "problem": "invalid"}
    return error(422, f"invalid {first['where']}: {first['problem']}", problems=problems)


def install(app: FastAPI) -> None:
    """Register the handlers above on `app`."""
    app.exception_handler(RequestValidationError)(on_invalid)
    for kind in (*EXPECTED, Exception):
        app.exception_handler(kind)(on_error)
