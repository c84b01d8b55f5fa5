"""Per-key rate limiting: a token bucket per API key in this process, bounded by a count shared
by every process through storage.

The local bucket decides each request at once (no storage round trip on the request path)
and gives the burst. With ``counters`` (storage/counters.py) the key's requests of every
process over the last minute also count: each process adds what it admitted and reads back
the total every `SYNC_INTERVAL_S`, in one batched write for all its keys, and refuses a key
whose total (plus what it admitted since) reached the limit. The bound is approximate, on
purpose: over one sync interval a process does not see what the others admitted, so with P
processes a key can get at most ``(P - 1) x`` (its requests per process per interval) beyond
the limit; and a count is high by up to one bucket (`SHARED_WINDOW`), so the window is strict
by up to 5 s. docs/scaling.md. The clock is injectable so tests control time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.counters import CounterWindow, Increment
from storage.errors import StorageError
from storage.models import now_ms
from storage.repository import CounterRepo

log = logging.getLogger(__name__)

# Above this many buckets, idle (full) ones are dropped so a flood of keys cannot grow memory
# without bound; a dropped bucket comes back full, which is what it was anyway.
MAX_BUCKETS = 100_000
# How often a process adds its admitted requests to the shared counts and reads them back: the
# staleness of what it knows of the others (the error bound above), against one small write
# per interval while keys are in use.
SYNC_INTERVAL_S = 0.2
# The shared count's window: the limit is per minute; it slides in 5 s steps.
SHARED_WINDOW = CounterWindow(window_ms=60_000, bucket_ms=5_000)
SYNC_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Quota:
    """A key's standing after its request was counted: what the RateLimit headers say."""

    limit: int  # requests per minute, and the largest burst
    remaining: int
    reset_s: int  # seconds until ``remaining`` is back at ``limit``


# The request's quota, filled in by `RateLimiter.acquire` when the request's key is counted and
# read by `RateLimitHeaders` as the response starts. A one-item list set by the middleware: a
# mutable holder stays shared even where a dependency runs in a copied context.
_QUOTA: ContextVar[list[Quota] | None] = ContextVar("gp8_quota", default=None)


class RateLimiter:
    """Allows ``per_minute`` requests per minute per key, in bursts of up to ``per_minute``."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        counters: CounterRepo | None = None,
        sync_interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        # The shared part (None: this process alone decides).
        self._counters = counters
        self._sync_interval_s = sync_interval_s
        self._totals: dict[str, int] = {}  # key -> every process's count, as last read
        self._pending: dict[str, int] = {}  # key -> admitted here since the last sync
        self._used: dict[str, float] = {}  # key -> clock of its last request (kept synced)
        self._syncer: asyncio.Task[None] | None = None
        self.sync_failures = 0

    def acquire(self, key: str) -> float | None:
        """Take one token for ``key``: None when allowed, else seconds until one is available."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        shared_left = self._shared_left(key, now)
        if tokens >= 1.0 and shared_left >= 1:
            self._buckets[key] = (tokens - 1.0, now)
            self._record(min(tokens - 1.0, shared_left - 1))
            if self._counters is not None:
                self._pending[key] = self._pending.get(key, 0) + 1
            if len(self._buckets) > MAX_BUCKETS:
                self._prune(now)
            return None
        self._buckets[key] = (tokens, now)
        self._record(min(tokens, shared_left))
        if tokens >= 1.0:
            # Refused by the others' share: it frees up as the shared window slides.
            return SHARED_WINDOW.bucket_ms / 1000
        return (1.0 - tokens) / self.rate

    def _shared_left(self, key: str, now: float) -> float:
        if self._counters is None:
            return self.capacity
        self._used[key] = now
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.get_running_loop().create_task(self._sync_loop(self._counters))
        return self.capacity - self._totals.get(key, 0) - self._pending.get(key, 0)

    async def _sync_loop(self, counters: CounterRepo) -> None:
        # Runs while keys are in use here; a request after it ended starts it again.
        while self._used:
            await asyncio.sleep(self._sync_interval_s)
            await self.sync(counters)

    async def sync(self, counters: CounterRepo) -> None:
        """Add what this process admitted to the shared counts and read them back."""
        stale = self._clock() - SHARED_WINDOW.window_ms / 1000
        for key in [k for k, used in self._used.items() if used < stale]:
            del self._used[key]
            self._totals.pop(key, None)
        pending, self._pending = self._pending, {}
        keys = set(self._used) | set(pending)
        # API keys are a platform's, not a fleet's, business here: the counts say only how
        # many requests a key id made in the last minute, and expire with it.
        increments = [Increment(f"rate:{k}", None, pending.get(k, 0)) for k in sorted(keys)]
        try:
            async with asyncio.timeout(SYNC_TIMEOUT_S):
                totals = await counters.add(increments, window=SHARED_WINDOW, now_ms=now_ms())
        except (StorageError, TimeoutError) as exc:
            # Counted again at the next sync; meanwhile the local buckets still limit.
            for key, n in pending.items():
                self._pending[key] = self._pending.get(key, 0) + n
            self.sync_failures += 1
            log.warning("rate limit: could not sync %d keys: %r", len(increments), exc)
            return
        for key in keys:
            self._totals[key] = totals.get(f"rate:{key}", 0)

    async def aclose(self) -> None:
        """Stop syncing (what is pending is dropped: it expires within the minute anyway)."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer

    def describe(self) -> str:
        """The limit in words, for the 429 problem's detail."""
        return (
            f"rate limit exceeded: this API key may make {int(self.capacity)} requests per "
            "minute (see the RateLimit-* headers)"
        )

    def _record(self, tokens: float) -> None:
        tokens = max(0.0, tokens)
        holder = _QUOTA.get()
        if holder is not None:
            reset = math.ceil((self.capacity - tokens) / self.rate)
            holder[:] = [Quota(int(self.capacity), int(tokens), reset)]

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


class RateLimitHeaders:
    """Add ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (IETF
    draft-ietf-httpapi-ratelimit-headers) to every response whose request was counted against
    a key, so clients can pace themselves before a 429 rather than after."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holder: list[Quota] = []
        token = _QUOTA.set(holder)

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start" and holder:
                quota = holder[0]
                # Appended, not set through MutableHeaders (a scan of the headers per name):
                # nothing else in gp8 writes these names.
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"ratelimit-limit", b"%d" % quota.limit),
                    (b"ratelimit-remaining", b"%d" % quota.remaining),
                    (b"ratelimit-reset", b"%d" % quota.reset_s),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_quota)
        finally:
            _QUOTA.reset(token)
