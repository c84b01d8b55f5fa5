"""Counting failed attempts and locking out who makes too many.

Two counters per attempt (`AuthThrottle`):

* by **(source, identity)** — an IP and the IMEI or key it tries: many failures lock out that
  identity *from that source only*, so someone guessing a box's secret from one address cannot
  lock the genuine box out from its own;
* by **source** alone — the flood: one address failing with many identities (or with none, as a
  wrong API key names no identity) is locked out whatever it tries next.

A counter counts failures in a fixed window that starts with its first failure; reaching the limit
locks the key out for ``lockout_s``, after which it starts again from zero. Memory is bounded: at
most ``max_keys`` keys are tracked per counter, the least recently failed dropped first (one that
is dropped only forgets its failures, which a flood of new sources could force; the per-source
limit is what still holds then).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

# Sources and (source, identity) pairs tracked per counter: ~200 bytes each, ~20 MiB at most.
MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class FailureLimit:
    """``max_failures`` within ``window_s`` seconds lock a key out for ``lockout_s`` seconds."""

    max_failures: int
    window_s: float
    lockout_s: float

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_s <= 0 or self.lockout_s <= 0:
            raise ValueError(f"a failure limit needs positive values: {self}")


@dataclass(slots=True)
class _Entry:
    failures: int
    window_start: float
    locked_until: float = float("-inf")


class FailureThrottle:
    """One counter of failures per key, with lock-out; ``clock`` in seconds (monotonic)."""

    def __init__(
        self,
        limit: FailureLimit,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def locked(self, key: Hashable) -> float | None:
        """Seconds left of ``key``'s lock-out, or None if it may try."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        left = entry.locked_until - self._clock()
        return left if left > 0 else None

    def failure(self, key: Hashable) -> bool:
        """Count one failure of ``key``; True if it starts a lock-out."""
        now = self._clock()
        limit = self.limit
        entry = self._entries.get(key)
        if entry is None or (
            entry.locked_until <= now and now - entry.window_start >= limit.window_s
        ):
            entry = _Entry(0, now)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)
        if entry.locked_until > now:
            return False  # already locked out: the lock-out is not extended by trying
        entry.failures += 1
        if entry.failures < limit.max_failures:
            return False
        entry.locked_until = now + limit.lockout_s
        entry.failures = 0
        entry.window_start = entry.locked_until  # a fresh window once the lock-out ends
        return True

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)


class AuthThrottle:
    """Failed authentication by (source, identity) and by source; see the module docstring."""

    def __init__(
        self,
        *,
        per_identity: FailureLimit,
        per_source: FailureLimit,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._identity = FailureThrottle(per_identity, max_keys=max_keys, clock=clock)
        self._source = FailureThrottle(per_source, max_keys=max_keys, clock=clock)

    def refused(self, source: str, identity: str | None = None) -> float | None:
        """Seconds until ``source`` may try ``identity`` again, or None if it may now."""
        waits = [self._source.locked(source)]
        if identity is not None:
            waits.append(self._identity.locked((source, identity)))
        known = [w for w in waits if w is not None]
        return max(known) if known else None

    def failed(self, source: str, identity: str | None = None) -> str | None:
        """Count a failed attempt; the lock-out it starts ("source", "identity"), if one."""
        started = None
        if identity is not None and self._identity.failure((source, identity)):
            started = "identity"
        if self._source.failure(source):
            started = "source"
        return started

    def succeeded(self, source: str, identity: str) -> None:
        """A genuine attempt clears that pair's failures (never the source's: an attacker could
        interleave its own good logins with its guesses)."""
        self._identity.forget((source, identity))

    @property
    def tracked(self) -> int:
        return len(self._identity) + len(self._source)
