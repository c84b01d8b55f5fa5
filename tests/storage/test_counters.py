"""Contract: shared sliding-window counters (storage/counters.py)."""

from __future__ import annotations

import asyncio

from storage.counters import CounterWindow, Increment
from storage.models import Fleet
from storage.repository import Store

MINUTE = CounterWindow(window_ms=60_000, bucket_ms=10_000)
T0 = 1_700_000_000_000


async def test_take_counts_up_to_the_limit_then_refuses(store: Store, fleet: Fleet) -> None:
    takes = [
        await store.counters.take("cap", fleet_id=fleet.id, limit=3, window=MINUTE, now_ms=T0)
        for _ in range(4)
    ]
    assert takes == [1, 2, 3, None]
    # Another counter is apart.
    assert await store.counters.take("x", fleet_id=None, limit=3, window=MINUTE, now_ms=T0) == 1


async def test_counts_leave_the_window(store: Store, fleet: Fleet) -> None:
    for _ in range(2):
        await store.counters.take("cap", fleet_id=fleet.id, limit=2, window=MINUTE, now_ms=T0)
    later = T0 + MINUTE.window_ms
    assert (
        await store.counters.take("cap", fleet_id=fleet.id, limit=2, window=MINUTE, now_ms=later)
        is None
    )
    # Past the window and its partly-expired oldest bucket, they are gone.
    gone = T0 + MINUTE.window_ms + MINUTE.bucket_ms
    assert (
        await store.counters.take("cap", fleet_id=fleet.id, limit=2, window=MINUTE, now_ms=gone)
        == 1
    )


async def test_add_returns_each_total(store: Store, fleet: Fleet) -> None:
    incs = [Increment("a", fleet.id, 3), Increment("b", None, 1)]
    assert await store.counters.add(incs, window=MINUTE, now_ms=T0) == {"a": 3, "b": 1}
    later = T0 + MINUTE.bucket_ms
    incs = [Increment("a", fleet.id, 2), Increment("b", None, 0)]
    assert await store.counters.add(incs, window=MINUTE, now_ms=later) == {"a": 5, "b": 1}


async def test_concurrent_takes_never_overrun(store: Store, fleet: Fleet) -> None:
    results = await asyncio.gather(
        *(
            store.counters.take("cap", fleet_id=fleet.id, limit=5, window=MINUTE, now_ms=T0)
            for _ in range(12)
        )
    )
    assert sorted(r for r in results if r is not None) == [1, 2, 3, 4, 5]
