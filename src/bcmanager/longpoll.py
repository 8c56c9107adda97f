"""Long-poll waiters for claims: woken one at a time when work arrives, all at once when
whether work is expected at all changes.

Thousands of engines may wait in a claim at once. Waking them all for each new file would
cost a claim (a lock and a ledger query) per engine per file; instead a file wakes the
longest waiter, and a claim that got work and leaves some queued passes the wake on to the
next waiter (a baton), so a burst of work reaches as many engines as it can feed, one
claim each. Only a change in whether work is expected (the first scan ended, nothing
settles any more) wakes every waiter, since until-empty claims must answer then.

`ClaimWaiter` is the claim itself (legacy `/assignwork` and v1 `/v1/claim`): claim, and
while there is nothing, wait in a `WorkSignal` queue until woken or out of time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bcmanager.manager import Manager
    from bcmanager.scheduler import Assignment

RECHECK_S = 1.0  # a held claim looks again at least this often
# Threads that make claimed jobs' folders, off the event loop. Two, not asyncio's default
# pool (up to 6 on 2 cores): every runnable thread competes with the event loop for the
# GIL at each system call, and a folder is three of them.
FOLDER_THREADS = 2


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


class ClaimWaiter:
    """Claims that wait for work (long-poll), woken by the manager's listener calls.

    Claims of engines that run any model, and of those that run only their own (the live
    generation), wait in separate queues: a wake is passed on only among claims that could
    use the same files."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.signals = {True: WorkSignal(), False: WorkSignal()}
        self._folders = ThreadPoolExecutor(FOLDER_THREADS, thread_name_prefix="bcm-folders")
        manager.add_listener(self.wake)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve wakes on `loop` (the app's, once it runs)."""
        for signal in self.signals.values():
            signal.bind(loop)

    def wake(self, everyone: bool) -> None:
        """The manager's listener (any thread): work arrived, or whether any is expected
        may have changed (`everyone`)."""
        for signal in self.signals.values():
            signal.wake(everyone)

    async def claim_or_wait(
        self,
        claim_once: Callable[[], Assignment | None],
        wait_s: float,
        until_empty: bool,
        any_model: bool = False,
        unconfirmed_count: bool = True,
    ) -> tuple[Assignment | None, bool]:
        """Claim, waiting up to `wait_s` for work; with `until_empty`, give up as soon as
        no more work is expected. Returns the assignment and whether work is expected."""
        manager = self.manager
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        signal = self.signals[any_model]
        while True:
            place = signal.waiter()  # before looking: a wake meanwhile is not lost
            assignment = claim_once()
            if assignment is not None:
                signal.forget(place)
                if manager.queued(any_model):  # pass the wake on: more engines can be fed
                    signal.wake_here()
                # the job's folders: system calls that must not hold up other requests
                await loop.run_in_executor(self._folders, manager.prepare_folders, assignment)
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
