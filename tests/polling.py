"""Waiting for state that other tasks change: poll a condition, never sleep a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Short enough to keep the suite fast, long enough for a loaded 2-core CI machine.
TIMEOUT_S = 10.0


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:  # noqa: ASYNC109
    """Wait until ``predicate()`` holds (state changed by other tasks), or fail."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - state of other objects, no event to wait on
            await asyncio.sleep(0.005)
