"""One job run again and again in a task of its own, from `start()` to `stop()`.

The loop every background part of gp8 needs, written once: run the step; a step that fails is
logged and tried again at the next turn (it must never end the job for good: one bad fleet, one
database hiccup); then wait the interval, or less when someone `wake()`s it (a new export job).
A step that returns True has more to do at once (a queue it drains) and is run again without
waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]


class Periodic:
    def __init__(
        self,
        name: str,
        step: Step,
        interval_s: float,
        *,
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        """``expected``: errors of the world (storage down, a timeout) logged as one warning
        line; anything else is a bug, logged with its traceback. Both are counted."""
        self.name = name
        self._step = step
        self.interval_s = interval_s
        self._expected = expected
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"gp8-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Run the step now rather than at the end of the interval."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self._step() is True:
                    pass
            except self._expected as exc:
                self.failures += 1
                log.warning("%s failed (tried again in %g s): %r", self.name, self.interval_s, exc)
            except Exception:  # a bug here must not end the job for good
                self.failures += 1
                log.exception("%s failed", self.name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
