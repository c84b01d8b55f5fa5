"""Shared sliding-window counters: the arithmetic both engines use.

A counter is a name (e.g. ``rate:<key id>``) with one count per time bucket. Its value "over
the window ending now" sums the buckets whose start is within ``window_ms + bucket_ms`` of
now: the oldest of them is partly outside the window, so a count is high by at most one
bucket's worth (a limit errs on the strict side) and the window slides in steps of one bucket.
Buckets older than that are deleted as the counter is written.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CounterWindow:
    window_ms: int  # what a count covers, e.g. an hour
    bucket_ms: int  # the step it slides in, e.g. a minute

    def __post_init__(self) -> None:
        if not 0 < self.bucket_ms <= self.window_ms:
            raise ValueError("need 0 < bucket_ms <= window_ms")

    def bucket(self, now_ms: int) -> int:
        """The start of the bucket holding ``now_ms``."""
        return now_ms - now_ms % self.bucket_ms

    def oldest(self, now_ms: int) -> int:
        """Buckets starting after this count; those at or before it are expired."""
        return now_ms - self.window_ms - self.bucket_ms


@dataclass(frozen=True, slots=True)
class Increment:
    name: str
    fleet_id: str | None  # the fleet it belongs to, so an erasure finds it; None: platform
    n: int  # may be 0: only read the total
