"""The command service's one source of time.

Two readings from one object: wall time for everything stored (creation, TTLs, audit lines),
and a monotonic reading for durations kept in memory (the kill switch cache, the grace after a
reboot), which must not jump when the wall clock is set. A test injects one fake that moves
both together, so no part of the service can run on a time the test does not control.
"""

from __future__ import annotations

import time
from typing import Protocol

from storage.models import now_ms


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall time in ms since the Unix epoch: what is stored and compared with storage."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back: for in-memory durations."""
        ...


class SystemClock:
    """The real clock; the only reader of the time in commands/ (a test guards that)."""

    def now_ms(self) -> int:
        return now_ms()  # storage's definition, so stored times agree across layers

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
