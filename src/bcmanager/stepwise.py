"""Long views built a step at a time, so that the event loop serves requests in between.

A 5,000-engine `/v1/status` is ~60 ms of Python and ~30 ms of encoding. Built in a worker
thread, it competes with the event loop for the interpreter lock: each time the loop lets
go of the lock (a socket's callback, a SQLite call) it waits up to the switch interval
(5 ms) to have it back, so every claim and heartbeat in flight meanwhile takes many times
its time. Built on the loop itself, in steps of about a millisecond with other requests
served between them, nothing waits on the lock.

The work is stated once, as a generator that returns its result and yields between
steps: `None` for a pause, or a blocking call (a query on the ledger, which would stop the
loop for its time) whose result is sent back. `run` drives it to the end at once (a thread,
a test); `run_on_loop` hands the loop back at each pause and makes each blocking call in a
worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
X = TypeVar("X")

Step = Callable[[], Any] | None  # a pause, or a blocking call
Steps = Generator[Step, Any, T]

STEP_ITEMS = 250  # items of a long list per step: about a millisecond


def run(steps: Steps[T]) -> T:
    """The result of `steps`, driven to the end without a pause."""
    answer = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration as done:
            return done.value
        answer = None if step is None else step()


async def run_on_loop(steps: Steps[T]) -> T:
    """The result of `steps`, the event loop serving other work at each pause, and each
    blocking call made in a worker thread."""
    answer = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration as done:
            return done.value
        if step is None:
            await asyncio.sleep(0)
            answer = None
        else:
            answer = await asyncio.to_thread(step)


def blocking(call: Callable[[], T]) -> Steps[T]:
    """`call()`, off the event loop under `run_on_loop`."""
    return (yield call)


def mapped(
    items: Iterable[X], view: Callable[[X], T], per_step: int = STEP_ITEMS
) -> Steps[list[T]]:
    """`[view(x) for x in items]`, a pause every `per_step` items."""
    out: list[T] = []
    for item in items:
        out.append(view(item))
        if len(out) % per_step == 0:
            yield None
    return out
