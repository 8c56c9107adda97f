"""Free space on OUTPUT: a full disk pauses the run instead of failing it.

When OUTPUT fills, every batch fails (its outputs cannot be written, nor merged), and
each failure used to count as an attempt against the batch's files: a full disk for a
minute quarantined good files. So, while OUTPUT has less than the minimum free, no batch
is handed out (claims wait, as when the queue is empty), and a batch that fails while
the disk is short, within a grace after, or with a reason that names a full disk,
counts no attempt: its files simply go back to the queue.

The caller samples (`sample`, from the manager's tick) and passes `now` in, so tests
drive time; the probe is `shutil.disk_usage` unless given.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bcmanager.manager")

MIB = 1024 * 1024
# a failure this soon after the disk was seen short is blamed on the disk: an engine's
# failed batch frees its partial output before it reports, so the disk may look fine again
GRACE_S = 60.0
FULL_DISK_WORDS = ("no space left", "disk is full", "errno 28", "enospc", "disk quota exceeded")


@dataclass(frozen=True)
class SpaceView:
    free_bytes: int | None  # None: not sampled yet, or the probe failed
    min_free_bytes: int
    short: bool
    short_since: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "free_bytes": self.free_bytes,
            "min_free_bytes": self.min_free_bytes,
            "short": self.short,
            "short_since": self.short_since,
        }


class OutputSpace:
    """Whether OUTPUT has room, as last sampled, and since when it has not."""

    def __init__(
        self,
        root: Path,
        min_free_bytes: int,
        probe: Callable[[Path], int] | None = None,
        grace_s: float = GRACE_S,
    ) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.grace_s = grace_s
        self._probe = probe or _free_bytes
        self.free_bytes: int | None = None
        self.short_since: float | None = None
        self.last_short: float | None = None

    @property
    def enabled(self) -> bool:
        return self.min_free_bytes > 0

    @property
    def short(self) -> bool:
        return self.short_since is not None

    def sample(self, now: float) -> bool:
        """Look at the disk; True when it changed between short and not."""
        if not self.enabled:
            return False
        try:
            self.free_bytes = self._probe(self.root)
        except OSError as exc:
            log.warning("could not read the free space of %s: %s", self.root, exc)
            return False
        short = self.free_bytes < self.min_free_bytes
        if short:
            self.last_short = now
        if short == self.short:
            return False
        if short:
            self.short_since = now
            log.warning(
                "OUTPUT has %.0f MiB free, under the %.0f MiB minimum: no batch is handed out"
                " until it has room",
                self.free_bytes / MIB,
                self.min_free_bytes / MIB,
            )
        else:
            log.warning(
                "OUTPUT has room again (%.0f MiB free) after %.0f s: handing out batches",
                self.free_bytes / MIB,
                now - (self.short_since or now),
            )
            self.short_since = None
        return True

    def excuses(self, reason: str, now: float) -> bool:
        """Whether a batch failing now, for `reason`, is the disk's fault, not its files'."""
        if any(word in reason.lower() for word in FULL_DISK_WORDS):
            return True
        return self.last_short is not None and now - self.last_short <= self.grace_s

    def view(self) -> SpaceView:
        return SpaceView(self.free_bytes, self.min_free_bytes, self.short, self.short_since)


def _free_bytes(root: Path) -> int:
    return shutil.disk_usage(root).free
