"""Many waits with the same bound, on one timer.

The ingest hot path waits on a future per message (its records durable, the broker's PUBACK of
its ACK), and each wait must be bounded. ``asyncio.timeout`` per wait arms and cancels a timer
each time: a twentieth of the MQTT bridge's event loop at 50,000 positions/s. Waits that share
one bound expire in the order they started, so `Deadlines` keeps them in that order and needs
one timer, armed for the oldest: when it fires it fails the waits past their deadline with
TimeoutError and re-arms itself for the next. A wait that ends first costs nothing more than
its place in the queue, dropped as the queue is walked.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Deadlines:
    """Futures failed with TimeoutError ``timeout_s`` after they were watched, unless done."""

    def __init__(self, timeout_s: float, what: str = "wait") -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.timeout_s = timeout_s
        self._what = what
        self._watched: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Futures watched and not yet dropped (some may be done already)."""
        return len(self._watched)

    def watch(self, future: asyncio.Future[Any]) -> None:
        """Fail ``future`` with TimeoutError if it is not done within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        watched = self._watched
        while watched and watched[0][1].done():  # ended meanwhile: mostly in order
            watched.popleft()
        deadline = loop.time() + self.timeout_s
        watched.append((deadline, future))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        watched = self._watched
        while watched:
            deadline, future = watched[0]
            if future.done():
                watched.popleft()
                continue
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            watched.popleft()
            future.set_exception(TimeoutError(f"{self._what} took over {self.timeout_s} s"))

    def close(self) -> None:
        """Stop the timer; what is still watched is no longer bounded (its owner ends it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()
