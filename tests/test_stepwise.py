"""Work in steps: the same result driven at once or on the event loop, and on the loop,
other work runs between steps and blocking calls run off the loop's thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bcmanager.stepwise import Steps, blocking, mapped, run, run_on_loop


def _work(log: list[str]) -> Steps[dict[str, object]]:
    squares = yield from mapped(range(1_000), lambda x: x * x, per_step=100)
    where = yield from blocking(lambda: threading.get_ident())
    log.append("done")
    return {"sum": sum(squares), "thread": where}


def test_run_drives_every_step_at_once_in_this_thread() -> None:
    log: list[str] = []
    result = run(_work(log))
    assert result == {"sum": sum(x * x for x in range(1_000)), "thread": threading.get_ident()}
    assert log == ["done"]


def test_on_the_loop_other_work_runs_between_steps() -> None:
    async def main() -> tuple[dict[str, object], int, int]:
        ticks = 0
        finished = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not finished.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        result = await run_on_loop(_work([]))
        during = ticks - before
        finished.set()
        await task
        return result, during, threading.get_ident()

    result, during, loop_thread = asyncio.run(main())
    assert result["sum"] == sum(x * x for x in range(1_000))
    assert during >= 10  # a pause every 100 of the 1,000 items
    assert result["thread"] != loop_thread  # the blocking call ran off the loop


def test_run_in_a_coroutine_lets_nothing_in() -> None:
    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        run(_work([]))
        during = ticks - before
        task.cancel()
        return during

    assert asyncio.run(main()) == 0


def test_a_failing_step_raises_from_either_driver() -> None:
    def failing() -> Steps[int]:
        yield None
        value = yield from blocking(lambda: 1 // 0)
        return value

    with pytest.raises(ZeroDivisionError):
        run(failing())
    with pytest.raises(ZeroDivisionError):
        asyncio.run(run_on_loop(failing()))


def test_mapped_is_the_list_comprehension() -> None:
    for n in (0, 1, 249, 250, 251, 1_000):
        assert run(mapped(range(n), str)) == [str(i) for i in range(n)]
