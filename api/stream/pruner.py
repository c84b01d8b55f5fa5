"""Keeps the live stream's log to its retention window: every ``interval_s`` it drops what was
stored more than ``retention_s`` ago (``store.stream.prune``). A client that was away longer
gets an explicit cursor_expired, never a silent gap (storage/stream.py). Several gp8 processes
may each run one: pruning the same window twice drops nothing more."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from runtime import Periodic
from storage.errors import StorageError
from storage.models import now_ms
from storage.repository import StreamRepo
from storage.stream import RETENTION_S

log = logging.getLogger(__name__)

# The promise to clients: a disconnect of up to ten minutes can always be resumed.
MIN_RETENTION_S = 10 * 60
PRUNE_INTERVAL_S = 60.0
# One prune call gives up after this long (tried again at the next interval).
PRUNE_TIMEOUT_S = 30.0


class StreamPruner:
    def __init__(
        self,
        stream: StreamRepo,
        *,
        retention_s: float = RETENTION_S,
        interval_s: float = PRUNE_INTERVAL_S,
        timeout_s: float = PRUNE_TIMEOUT_S,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if retention_s < MIN_RETENTION_S:
            raise ValueError(f"stream retention must be at least {MIN_RETENTION_S} s")
        self._stream = stream
        self.retention_s = retention_s
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._job = Periodic(
            "stream-pruner", self.prune_once, interval_s, expected=(StorageError, OSError)
        )
        self.pruned = 0  # entries dropped since start

    async def prune_once(self) -> int:
        """Drop what is older than the window now; how many entries."""
        before_ms = self._clock() - int(self.retention_s * 1000)
        async with asyncio.timeout(self.timeout_s):
            dropped = await self._stream.prune(before_ms)
        self.pruned += dropped
        return dropped

    async def start(self) -> None:
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()
