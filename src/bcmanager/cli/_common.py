"""Helpers shared by the subcommands: logging setup and error reporting."""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from bcmanager.errors import BcmError

F = TypeVar("F", bound=Callable[..., Any])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in ("httpx", "httpcore", "watchdog"):  # one line per request drowns ours
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def logging_options(func: F) -> F:
    func = click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
    )(func)
    func = click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        show_default=True,
    )(func)
    return func


# A full or read-only disk is the user's to mend: said in one line, not a traceback.
DISK_TROUBLE = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES)


def friendly_errors(func: F) -> F:
    """Our own errors become a one-line message and exit status 1, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BcmError as exc:
            raise click.ClickException(str(exc)) from exc
        except sqlite3.OperationalError as exc:  # e.g. its disk full: the user's to mend
            raise click.ClickException(f"the ledger cannot be written: {exc}") from exc
        except OSError as exc:
            if exc.errno not in DISK_TROUBLE:
                raise
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def read_token(token_file: Path | None) -> str | None:
    """The shared secret: --token-file wins over $BCM_TOKEN; empty means none."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read token file {token_file}: {exc}") from exc
        if not token:
            raise click.ClickException(f"token file {token_file} is empty")
        return token
    return os.environ.get("BCM_TOKEN") or None
