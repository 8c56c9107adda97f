"""bcmanager's own small exception hierarchy.

Each error carries the HTTP status it maps to; the API maps them in one place
(`bcmanager.api.errors`), the CLI prints their message and exits non-zero.
"""

from __future__ import annotations


class BcmError(Exception):
    """Base of every error bcmanager raises on purpose."""

    status_code = 500


class InvalidInput(BcmError):
    """A request or argument that is malformed or out of bounds."""

    status_code = 400


class Unauthorized(BcmError):
    """A mutating call without the configured token."""

    status_code = 401


class NotFound(BcmError):
    """An unknown job (or other named thing)."""

    status_code = 404


class Conflict(BcmError):
    """A request that contradicts the ledger, e.g. a stale lease token."""

    status_code = 409


class LeaseLost(Conflict):
    """The job's lease expired (or was fenced); the engine must drop the batch."""


class ConfigError(BcmError):
    """A configuration that cannot be used (bad file, missing directory)."""

    status_code = 400


class CorruptState(BcmError):
    """The ledger and an attempted transition disagree: a bug, never user input."""

    status_code = 500
