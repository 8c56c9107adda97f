"""When an engine may take backfill work while the live generation still needs GPUs.

Batches are never preempted, so an engine that takes a backfill batch is gone for the
live run until that batch ends. If every engine took backfill, a live file would wait
for the first one to finish (a whole batch, a minute by default) instead of being
claimed at once. So while files still arrive, a *live reserve* of engines stays out of
backfill: as many as the live work keeps busy on average, three standard deviations
more (arrivals are bursty, roughly Poisson), and one spare. Once nothing has arrived for
a while (the run ended, or paused), the reserve is 0 and every engine backfills.

Pure core: time is passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 300.0  # arrivals counted over the last five minutes
SMOOTHING = 0.8  # weight of what was known in a live batch's duration against the latest


@dataclass
class LiveDemand:
    """Live arrivals over the last WINDOW_S and how long a live batch takes."""

    window_s: float = WINDOW_S
    batch_s: float = 0.0  # smoothed claim-to-report time of live batches (0: none yet)
    _arrivals: deque[tuple[float, int]] = field(default_factory=deque)
    _in_window: int = 0

    def arrived(self, now: float, files: int) -> None:
        """`files` new files were queued at `now`."""
        if files > 0:
            self._arrivals.append((now, files))
            self._in_window += files
        self._forget_before(now - self.window_s)

    def batch_done(self, seconds: float) -> None:
        """A live batch took `seconds` from claim to report."""
        if seconds < 0:
            return
        self.batch_s = (
            seconds if not self.batch_s else (SMOOTHING * self.batch_s + (1 - SMOOTHING) * seconds)
        )

    def rate(self, now: float) -> float:
        """Files a second over the window (0 when none arrived in it)."""
        self._forget_before(now - self.window_s)
        return self._in_window / self.window_s if self.window_s > 0 else 0.0

    def reserve(self, now: float) -> int:
        """Engines to keep out of backfill now (see the module docstring)."""
        rate = self.rate(now)
        if rate == 0:
            return 0
        busy = rate * self.batch_s
        return 1 + math.ceil(busy + 3 * math.sqrt(busy))

    def _forget_before(self, cutoff: float) -> None:
        while self._arrivals and self._arrivals[0][0] < cutoff:
            self._in_window -= self._arrivals.popleft()[1]


def may_backfill(idle_others: int, reserve: int) -> bool:
    """Whether an engine may take a backfill batch: the engines left waiting for live work
    without it (`idle_others`) still cover the reserve."""
    return idle_others >= reserve
