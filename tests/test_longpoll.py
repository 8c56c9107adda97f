"""Long-poll waiters: work wakes one claim at a time, a change of expectation wakes all."""

import asyncio

from bcmanager.longpoll import WorkSignal


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_work_wakes_the_longest_waiter_only() -> None:
    async def scenario() -> list[bool]:
        signal = WorkSignal()
        signal.bind(asyncio.get_running_loop())
        places = [signal.waiter() for _ in range(100)]
        waits = [asyncio.create_task(signal.wait(p, 0.3)) for p in places]
        await asyncio.sleep(0)
        signal.wake_here()
        return await asyncio.gather(*waits)

    woken = run(scenario())
    assert woken[0] is True and sum(woken) == 1  # 99 others slept on: no thundering herd


def test_a_change_of_expectation_wakes_everyone_even_from_another_thread() -> None:
    async def scenario() -> list[bool]:
        signal = WorkSignal()
        signal.bind(asyncio.get_running_loop())
        places = [signal.waiter() for _ in range(50)]
        waits = [asyncio.create_task(signal.wait(p, 2.0)) for p in places]
        await asyncio.to_thread(signal.wake, True)
        return await asyncio.gather(*waits)

    assert all(run(scenario()))


def test_a_waiter_that_left_never_swallows_a_wake() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        signal = WorkSignal()
        signal.bind(asyncio.get_running_loop())
        gone = signal.waiter()
        timed_out = await signal.wait(gone, 0.01)  # left after its timeout
        left = signal.waiter()
        signal.forget(left)  # left after getting work
        staying = signal.waiter()
        task = asyncio.create_task(signal.wait(staying, 1.0))
        await asyncio.sleep(0)
        signal.wake_here()
        return timed_out, await task, signal.waiting

    timed_out, woken, waiting = run(scenario())
    assert timed_out is False and woken is True and waiting == 0


def test_the_queue_of_places_is_swept_as_waiters_leave() -> None:
    async def scenario() -> int:
        signal = WorkSignal()
        signal.bind(asyncio.get_running_loop())
        for _ in range(10_000):
            signal.forget(signal.waiter())
        return len(signal._waiters)

    assert run(scenario()) < 200  # bounded, not one place per claim ever made
