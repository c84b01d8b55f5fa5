"""The shared part of the API rate limit (api/ratelimit.py): two limiters on two stores over
one SQLite file stand for two processes; syncs are driven by hand, so the bound is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.ratelimit import RateLimiter
from storage import SQLITE_FILENAME
from storage.sqlite import SqliteStore


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    first, second = SqliteStore(tmp_path / SQLITE_FILENAME), SqliteStore(tmp_path / SQLITE_FILENAME)
    await first.start()
    await second.start()
    yield first, second
    await first.close()
    await second.close()


async def test_a_key_used_up_in_one_process_is_refused_in_the_other(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    now = [0.0]
    a, b = (
        RateLimiter(10, clock=lambda: now[0], counters=s.counters, sync_interval_s=3600)
        for s in stores
    )
    try:
        assert all(a.acquire("key_1") is None for _ in range(6))
        assert all(b.acquire("key_1") is None for _ in range(3))  # before any sync: alone
        await a.sync(stores[0].counters)
        await b.sync(stores[1].counters)  # now b knows of a's 6: 9 in all
        assert b.acquire("key_1") is None
        assert b.acquire("key_1") is not None  # 10 reached across both
        assert b.acquire("key_2") is None  # another key is apart
        await b.sync(stores[1].counters)  # b's 10th, then a learns of it
        await a.sync(stores[0].counters)
        assert a.acquire("key_1") is not None
    finally:
        await a.aclose()
        await b.aclose()


async def test_without_counters_each_process_decides_alone() -> None:
    limiter = RateLimiter(2, clock=lambda: 0.0)
    assert [limiter.acquire("k") is None for _ in range(3)] == [True, True, False]
