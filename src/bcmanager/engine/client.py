"""The engine's manager client: every call an engine makes to the manager's v1 API.

A claim and a report are retried with backoff while the manager is unreachable or
failing (a restart, the network), so a GPU waits on the manager, never loses its batch
to it; a heartbeat is tried once, the next one comes soon enough. What the manager
answers about a job is raised as this module's own exceptions: 409 `LeaseLost` (the
lease ran out, or the token is fenced), 404 `JobUnknown` (the manager forgot the job),
other 4xx `ManagerRefused` (a configuration problem: token, engine id, batch size).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from bcmanager import errors

log = logging.getLogger("bcmanager.engine")

MAX_BACKOFF_S = 2.0  # a GPU waits at most this long once the manager is back
FIRST_BACKOFF_S = 0.2
ATTEMPTS_WHILE_STOPPING = 3  # a stopping engine's report gets this many retries


class ManagerError(errors.BcmError):
    """Base of what the manager client raises."""


class ManagerUnreachable(ManagerError):
    """A request that got no answer (connection refused, timeout)."""


class ManagerGone(ManagerUnreachable):
    """The manager could not be reached, and the engine is stopping anyway."""


class ManagerRefused(ManagerError):
    """The manager answered a 4xx: a configuration problem (token, engine id, batch size)."""


class JobLost(ManagerError):
    """The manager no longer holds the job for this engine: its batch must be dropped.
    `status_code` is the manager's answer."""

    def __init__(self, job_id: int, error: str | None) -> None:
        super().__init__(f"job {job_id}: HTTP {self.status_code}: {error}")
        self.job_id = job_id
        self.error = error  # the manager's word, None when it said none


class LeaseLost(JobLost, errors.LeaseLost):
    """409: the job's lease ran out (or its token is fenced); the batch was requeued."""


class JobUnknown(JobLost, errors.NotFound):
    """404: the manager does not know the job (e.g. its ledger was lost)."""


class ManagerClient:
    """The manager's v1 API as an engine calls it; owns the HTTP client.

    `stopping` is the engine's: once set, a request is no longer retried (a report is,
    a few times), and `ManagerGone` is raised instead."""

    def __init__(
        self,
        manager_url: str,
        token: str | None = None,
        stopping: threading.Event | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = client or httpx.Client(
            base_url=manager_url.rstrip("/"), headers=headers, timeout=10.0
        )
        self.stopping = stopping or threading.Event()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ManagerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def claim(
        self,
        engine_id: str,
        wait_s: float,
        until_empty: bool = False,
        max_files: int | None = None,
        any_model: bool = False,
        slices: bool = False,
    ) -> tuple[dict[str, Any] | None, bool]:
        """Long-poll for a batch: the job (None after `wait_s`) and whether the manager
        expects more work. `slices`: the engine can basecall a slice of a file (a job
        whose `read_ids` names a list of the reads to basecall)."""
        body: dict[str, Any] = {"engine_id": engine_id, "wait_s": wait_s}
        if until_empty:
            body["until_empty"] = True
        if max_files:
            body["max_files"] = max_files
        if any_model:
            body["models"] = "any"
        if slices:
            body["slices"] = True
        answer = self._call("POST", "/v1/claim", body, timeout=wait_s + 10).json()
        return answer["job"], bool(answer.get("more_expected", False))

    def heartbeat(
        self,
        job_id: int,
        token: str,
        progress: dict[str, Any] | None = None,
        basecalled: bool = False,
    ) -> None:
        """Keep a job's lease, saying how far its batch is; tried once.

        Raises LeaseLost or JobUnknown when the batch must be dropped, ManagerUnreachable
        when there was no answer (another answer is not the engine's concern)."""
        body: dict[str, Any] = {"token": token}
        if progress is not None:
            body["progress"] = progress
        if basecalled:
            body["basecalled"] = True
        try:
            r = self.http.post(f"/v1/jobs/{job_id}/heartbeat", json=body)
        except httpx.TransportError as exc:
            raise ManagerUnreachable(str(exc)) from exc
        _raise_job_lost(job_id, r)

    def complete(
        self,
        job_id: int,
        token: str,
        outcome: str,
        reason: str | None = None,
        yields: list[dict[str, Any]] | None = None,
        timing: dict[str, float] | None = None,
    ) -> None:
        """Report a job's end (done, failed, released), retried until the manager answers.

        Raises LeaseLost, JobUnknown, ManagerRefused, or ManagerGone when the engine is
        stopping and the manager stayed unreachable."""
        body: dict[str, Any] = {"token": token, "outcome": outcome}
        if reason:
            body["reason"] = reason
        if yields:
            body["yields"] = yields
        if timing:
            body["timing"] = timing
        path = f"/v1/jobs/{job_id}/complete"
        r = self._call("POST", path, body, ok=(200, 404, 409), retry_while_stopping=True)
        _raise_job_lost(job_id, r)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        timeout: float = 10.0,
        ok: tuple[int, ...] = (200,),
        retry_while_stopping: bool = False,
    ) -> httpx.Response:
        """One request, retried with backoff while the manager is unreachable or failing."""
        delay = FIRST_BACKOFF_S
        attempts = 0
        while True:
            try:
                r = self.http.request(method, path, json=body, timeout=timeout)
                if r.status_code in ok:
                    return r
                if 400 <= r.status_code < 500:
                    raise ManagerRefused(f"{method} {path}: {r.status_code} {r.text}")
                problem = f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            attempts += 1
            if self.stopping.is_set() and (
                not retry_while_stopping or attempts > ATTEMPTS_WHILE_STOPPING
            ):
                raise ManagerGone(
                    f"{method} {self.http.base_url}{path}: {problem}"
                    f" (gave up after {attempts} attempt(s): the engine is stopping)"
                )
            log.warning("manager unreachable (%s); retrying in %.1f s", problem, delay)
            time.sleep(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)


def _raise_job_lost(job_id: int, r: httpx.Response) -> None:
    """Raise what a 409 or 404 answer about a job means; nothing for any other."""
    if r.status_code == 409:
        raise LeaseLost(job_id, _error_of(r))
    if r.status_code == 404:
        raise JobUnknown(job_id, _error_of(r))


def _error_of(r: httpx.Response) -> str | None:
    """The manager's `error` in an answer, None when it gave none."""
    try:
        answer = r.json()
    except ValueError:
        return None
    return answer.get("error") if isinstance(answer, dict) else None
