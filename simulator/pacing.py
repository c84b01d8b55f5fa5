"""When things happen: the simulated clock, the fleet's rate limiter and the storm barrier.

Simulated time vs wall time. Every record carries the *simulated* time of its fix. The gateway
refuses times more than 10 minutes ahead of its clock (and before 2015), so the simulated clock
never runs ahead of the wall clock: a record is *due* once its simulated time is not in the
future. To simulate hours in seconds the clock starts in the past: ``plan_start`` puts the
start so that the run ends about now, and every record whose time has passed is sent as fast as
the gateway acknowledges (or as ``--rate`` allows). Once the simulated clock catches up with the
wall clock it runs in real time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

# Records are never stamped before this (2015-01-01, the protocol's lower bound) plus a day.
EARLIEST_START_MS = 1_420_070_400_000 + 86_400_000
# A storm waits at most this long for the slowest box to reach it; a stuck box must not hold
# the others forever.
STORM_WAIT_S = 120.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class SimClock:
    """``start_ms``: simulated time of the first record. ``lead_ms``: how far ahead of the wall
    clock records may be stamped (0: never in the future)."""

    start_ms: int
    lead_ms: int = 0
    wall: Callable[[], int] = field(default=wall_ms)

    def now_ms(self) -> int:
        return self.wall() + self.lead_ms

    def due(self, time_ms: int) -> bool:
        return time_ms <= self.now_ms()

    def wait_s(self, time_ms: int) -> float:
        return max(0.0, (time_ms - self.now_ms()) / 1000)


def local_minutes(time_ms: int, lon: float) -> float:
    """Minutes after local mean solar midnight at longitude ``lon``."""
    return ((time_ms / 60_000) + lon * 4.0) % 1440.0


def plan_start(
    now_ms: int,
    span_s: float,
    *,
    start_local_min: int | None = None,
    lon: float = 0.0,
    floor_ms: int | None = None,
) -> int:
    """The simulated start so that ``span_s`` of simulated time ends about ``now_ms``.

    ``start_local_min``: the start is moved back to the latest moment at that local time
    (solar, at ``lon``) that still ends before now. ``floor_ms``: never before this (the boxes'
    fittings start then: earlier records would belong to no vehicle); the run then goes on in
    real time past now.
    """
    start = now_ms - math.ceil(span_s * 1000)
    if start_local_min is not None:
        back = (local_minutes(start, lon) - start_local_min) % 1440.0
        start -= math.ceil(back * 60_000)
    start = max(start, EARLIEST_START_MS)
    if floor_ms is not None:
        start = max(start, floor_ms)
    return start


class RateLimiter:
    """Fleet-wide positions per second: every record reserves the next slot, so the boxes share
    the rate fairly and nobody polls. Bursts of up to ``burst_s`` of the rate are allowed."""

    def __init__(
        self,
        per_s: float,
        *,
        burst_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_s <= 0:
            raise ValueError("the rate must be positive")
        self.per_s = per_s
        self._step = 1.0 / per_s
        self._burst = burst_s
        self._clock = clock
        self._next = clock()

    def reserve(self) -> float:
        """Take the next slot; seconds to wait before using it (0: go now)."""
        now = self._clock()
        slot = max(self._next, now - self._burst)
        self._next = slot + self._step
        return max(0.0, slot - now)


class StormBarrier:
    """Makes every live box reach a storm before any of them drops its link.

    ``arrive(key)`` returns when all ``members`` arrived at ``key`` (or STORM_WAIT_S passed), True
    for exactly one caller per key (who counts the storm). A box that ends calls ``leave``.
    """

    def __init__(self, members: int, *, wait_s: float = STORM_WAIT_S) -> None:
        self.members = members
        self.wait_s = wait_s
        self._arrived: dict[Hashable, int] = {}
        self._events: dict[Hashable, asyncio.Event] = {}

    async def arrive(self, key: Hashable) -> bool:
        count = self._arrived.get(key, 0) + 1
        self._arrived[key] = count
        event = self._events.setdefault(key, asyncio.Event())
        if count >= self.members:
            event.set()
        else:
            try:
                async with asyncio.timeout(self.wait_s):
                    await event.wait()
            except TimeoutError:
                event.set()  # the others go; the stragglers storm on their own
        return count == 1

    def leave(self) -> None:
        self.members -= 1
        for key, count in self._arrived.items():
            if count >= self.members:
                self._events[key].set()
