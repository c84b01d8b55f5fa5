"""Per-key rate limiting: an in-memory token bucket per API key.

In memory and per process: with several API processes a key gets the limit in each, which is
acceptable for abuse protection (the goal) and needs no shared store. The clock is injectable
so tests control time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# Above this many buckets, idle (full) ones are dropped so a flood of keys cannot grow memory
# without bound; a dropped bucket comes back full, which is what it was anyway.
MAX_BUCKETS = 100_000


class RateLimiter:
    """Allows ``per_minute`` requests per minute per key, in bursts of up to ``per_minute``."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def acquire(self, key: str) -> float | None:
        """Take one token for ``key``: None when allowed, else seconds until one is available."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._prune(now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.capacity
        ]
        for key in full:
            del self._buckets[key]


def retry_after_header(wait_s: float) -> str:
    # Retry-After takes whole seconds; rounding down would invite a retry that fails again.
    return str(max(1, math.ceil(wait_s)))
