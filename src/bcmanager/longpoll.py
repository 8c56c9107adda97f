"""Long-poll waiters for claims: woken one at a time when work arrives, all at once when
whether work is expected at all changes.

Thousands of engines may wait in a claim at once. Waking them all for each new file would
cost a claim (a lock and a ledger query) per engine per file; instead a file wakes the
longest waiter, and a claim that got work and leaves some queued passes the wake on to the
next waiter (a baton), so a burst of work reaches as many engines as it can feed, one
claim each. Only a change in whether work is expected (the first scan ended, nothing
settles any more) wakes every waiter, since until-empty claims must answer then.
"""

from __future__ import annotations

import asyncio
from collections import deque


class WorkSignal:
    """Wakes long-polling claims (safe to call `wake` from any thread)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._gone = 0  # waiters that left but still sit in the queue

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def waiter(self) -> asyncio.Future[None]:
        """A place in the queue; register before looking for work, so no wake is lost."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def forget(self, future: asyncio.Future[None]) -> None:
        """Leave the queue (the claim got work, gave up or timed out). The place is only
        marked: a wake skips it, and the queue is swept once half of it has left."""
        if not future.done():
            future.cancel()
        self._gone += 1
        if self._gone > len(self._waiters) // 2 + 64:
            self._waiters = deque(w for w in self._waiters if not w.done())
            self._gone = 0

    async def wait(self, future: asyncio.Future[None], timeout: float) -> bool:
        """Wait until woken (True) or `timeout` seconds (False); leaves the queue either way."""
        try:
            await asyncio.wait_for(future, timeout=timeout)
            return True
        except (TimeoutError, asyncio.CancelledError):
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():
                raise  # the request itself is being cancelled
            return False
        finally:
            self.forget(future)

    def wake(self, everyone: bool = False) -> None:
        """Wake the longest waiter, or every waiter (from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.wake_here, everyone)

    def wake_here(self, everyone: bool = False) -> None:
        """`wake`, from the event loop's own thread."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                if not everyone:
                    return
