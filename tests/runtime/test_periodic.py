"""runtime.Periodic: the loop of every background job (retention, the offline sweep, the
stream pruner, the export worker)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runtime import Periodic
from tests.polling import eventually


async def test_the_step_runs_again_and_again_until_stopped() -> None:
    runs: list[int] = []

    async def step() -> None:
        runs.append(1)

    job = Periodic("t", step, 0.01)
    job.start()
    job.start()  # idempotent: one loop
    await eventually(lambda: len(runs) >= 3)
    await job.stop()
    done = len(runs)
    await asyncio.sleep(0.05)
    assert len(runs) == done and not job.running


async def test_a_failing_step_is_logged_counted_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("storage down")
        if calls == 2:
            raise RuntimeError("a bug")

    job = Periodic("flaky", step, 0.01, expected=(OSError,))
    with caplog.at_level(logging.WARNING, logger="runtime.periodic"):
        job.start()
        await eventually(lambda: calls >= 3)
        await job.stop()
    assert job.failures == 2
    messages = [(r.levelno, r.exc_info is not None) for r in caplog.records]
    # The world's error: one warning line; a bug: its traceback.
    assert messages[:2] == [(logging.WARNING, False), (logging.ERROR, True)]


async def test_wake_runs_it_now_and_true_runs_it_again_at_once() -> None:
    queue = [1, 2, 3]
    seen: list[int] = []

    async def drain_one() -> bool:
        if not queue:
            return False
        seen.append(queue.pop(0))
        return True  # more may wait

    job = Periodic("drain", drain_one, 3600.0)  # would not run again within the test
    job.start()
    await eventually(lambda: seen == [1, 2, 3])
    queue.append(4)
    job.wake()
    await eventually(lambda: seen == [1, 2, 3, 4])
    await job.stop()
