"""Talking to a manager's v1 API from the command line (`bcm status`, `bcm events`,
`bcm generations`)."""

from __future__ import annotations

from typing import Any

import click
import httpx


class Unreachable(click.ClickException):
    """The manager did not answer; exit status 1 with a message saying where we looked."""

    exit_code = 1


def unreachable(manager_url: str, exc: Exception) -> Unreachable:
    """The error for a manager that did not answer, saying where we looked."""
    return Unreachable(
        f"cannot reach the manager at {manager_url} ({type(exc).__name__}: {exc or 'no answer'});"
        " is `bcm manager` running, and are the host and port right?"
    )


def get_json(manager_url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET `path` from the manager; Unreachable (a clear message) on any failure."""
    url = manager_url.rstrip("/") + path
    try:
        response = httpx.get(url, params=params, timeout=10)
    except httpx.HTTPError as exc:
        raise unreachable(manager_url, exc) from exc
    if response.status_code != 200:
        raise Unreachable(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        return response.json()
    except ValueError as exc:
        raise Unreachable(f"{url} did not answer JSON; is this a bcmanager?") from exc


def post_json(
    manager_url: str, path: str, body: dict[str, Any], token: str | None = None
) -> tuple[int, Any]:
    """POST `body` to `path`; (status, JSON answer). Unreachable when nothing answers or
    the answer is not JSON; a 4xx comes back for the caller to word."""
    url = manager_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise unreachable(manager_url, exc) from exc
    try:
        return response.status_code, response.json()
    except ValueError as exc:
        raise Unreachable(f"{url} did not answer JSON; is this a bcmanager?") from exc
