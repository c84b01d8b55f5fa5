"""gateway/deadlines.py: waits that share one bound, failed in order on one timer."""

from __future__ import annotations

import asyncio

import pytest

from gateway.deadlines import Deadlines

TIMEOUT = 5.0


async def test_a_future_not_done_in_time_fails_with_timeout_error() -> None:
    deadlines = Deadlines(0.05, "store wait")
    loop = asyncio.get_running_loop()
    began = loop.time()
    future: asyncio.Future[None] = loop.create_future()
    deadlines.watch(future)
    with pytest.raises(TimeoutError, match="store wait"):
        await asyncio.wait_for(future, TIMEOUT)
    assert loop.time() - began >= 0.05
    assert len(deadlines) == 0


async def test_each_watched_future_gets_its_own_deadline() -> None:
    deadlines = Deadlines(0.1)
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    deadlines.watch(first)
    await asyncio.sleep(0.05)  # the second starts half a bound later
    second: asyncio.Future[None] = loop.create_future()
    deadlines.watch(second)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(first, TIMEOUT)
    assert not second.done()  # the timer re-armed for it
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(second, TIMEOUT)


async def test_done_futures_are_left_alone_and_dropped() -> None:
    deadlines = Deadlines(0.05)
    loop = asyncio.get_running_loop()
    answered: list[asyncio.Future[int]] = [loop.create_future() for _ in range(3)]
    for future in answered:
        deadlines.watch(future)
        future.set_result(1)
    cancelled: asyncio.Future[int] = loop.create_future()
    deadlines.watch(cancelled)
    cancelled.cancel()
    late: asyncio.Future[int] = loop.create_future()
    deadlines.watch(late)  # drops the ended ones ahead of it (answered or cancelled)
    assert len(deadlines) == 1
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(late, TIMEOUT)
    assert [f.result() for f in answered] == [1, 1, 1]
    assert len(deadlines) == 0


async def test_close_stops_the_timer() -> None:
    deadlines = Deadlines(0.02)
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deadlines.watch(future)
    deadlines.close()
    await asyncio.sleep(0.05)
    assert not future.done()


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Deadlines(0)
