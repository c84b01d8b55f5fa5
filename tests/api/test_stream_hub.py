"""The live stream's fan-out (api/stream/hub.py) without a network, on the real SQLite engine
and on the Mongo engine (its in-memory fake, whose log has blocks that become visible out of
order): the replay-to-live handoff, bounded mailboxes, shutdown; the pruner; the settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymongo_async_mock import AsyncMongoMockClient

from api.stream import StreamError, StreamHub, StreamOptions, StreamPruner, StreamRefused
from api.stream.hub import Outgoing, Subscription
from gp8.settings import Settings, StreamSettings
from storage import open_store
from storage.models import Fleet, StreamKind, StreamPage, now_ms
from storage.mongo import MongoStore
from storage.repository import Store, StreamRepo
from tests.api.helpers import make_position

DEV, VEH = "dev_a", "veh_a"


@pytest.fixture(params=["sqlite", "mongo-fake"])
async def store(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[Store]:
    engine: Store
    if request.param == "sqlite":
        engine = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    else:
        engine = MongoStore(AsyncMongoMockClient(), "gp8_hub_test")
    await engine.start()
    yield engine
    await engine.close()


@pytest.fixture
async def fleet(store: Store) -> Fleet:
    return await store.fleets.create("hub")


async def put(store: Store, fleet: Fleet, n: int, start: int = 0) -> None:
    base = now_ms() - 3_600_000 + start * 1000
    await store.telemetry.store(
        [make_position(fleet.id, DEV, VEH, base + i * 1000) for i in range(n)], []
    )


async def drain(sub: Subscription, n: int, timeout_s: float = 5.0) -> list[Outgoing]:
    out: list[Outgoing] = []
    async with asyncio.timeout(timeout_s):
        while len(out) < n:
            message = await sub.next(1.0)
            if message is not None:
                out.append(message)
    return out


async def cursors(store: Store, fleet: Fleet) -> list[int]:
    return [e.cursor for e in (await store.stream.after(fleet.id, 0, limit=5000)).entries]


class Racing:
    """A StreamRepo that lets the fleet's reader run ahead: when a subscriber's replay reaches
    the end of the log, more is stored and the reader passes it before the subscriber hears
    back, so the subscriber registers behind the reader and must fill the gap itself."""

    def __init__(self, inner: StreamRepo, store: Store, fleet: Fleet) -> None:
        self.inner = inner
        self.store = store
        self.fleet = fleet
        self.hub: StreamHub | None = None
        self.armed = False

    async def append(self, items: Sequence[Any]) -> None:
        await self.inner.append(items)

    async def after(
        self,
        fleet_id: str,
        cursor: int,
        *,
        kinds: Collection[StreamKind] | None = None,
        vehicle_id: str | None = None,
        limit: int = 1000,
    ) -> StreamPage:
        page = await self.inner.after(
            fleet_id, cursor, kinds=kinds, vehicle_id=vehicle_id, limit=limit
        )
        reader = self.hub._readers.get(fleet_id) if self.hub else None
        # A subscriber's read (the reader's are unfiltered) that found the end of the log.
        if self.armed and reader is not None and kinds is not None and page.cursor == cursor:
            self.armed = False
            await put(self.store, self.fleet, 3, start=100)
            head = await self.inner.head(fleet_id)
            async with asyncio.timeout(5):
                while reader.cursor < head:  # noqa: ASYNC110 - the reader's own progress
                    await asyncio.sleep(0.01)
        return page

    async def head(self, fleet_id: str) -> int:
        return await self.inner.head(fleet_id)

    async def horizon(self, fleet_id: str) -> int:
        return await self.inner.horizon(fleet_id)

    async def prune(self, before_ms: int) -> int:
        return await self.inner.prune(before_ms)


async def test_a_subscriber_behind_the_reader_fills_the_gap(store: Store, fleet: Fleet) -> None:
    racing = Racing(store.stream, store, fleet)
    hub = StreamHub(racing)
    racing.hub = hub
    try:
        async with hub.subscribe(fleet.id, StreamOptions()) as first:
            await put(store, fleet, 2)
            assert len(await drain(first, 2)) == 2  # the reader runs, at the log's end
            await put(store, fleet, 2, start=10)
            # Replays from 0, and while it reads, three more are stored and passed by the
            # reader: it registers behind it and must read them itself.
            racing.armed = True
            kinds = frozenset(StreamKind)
            async with hub.subscribe(fleet.id, StreamOptions(after=0, kinds=kinds)) as late:
                got = await drain(late, 7)
                await put(store, fleet, 1, start=200)
                got += await drain(late, 1)
            assert not racing.armed, "the race was not staged"
            assert [m.cursor for m in got] == await cursors(store, fleet)
            assert len(await drain(first, 6)) == 6
    finally:
        await hub.stop()


async def test_a_full_mailbox_drops_only_that_subscriber(store: Store, fleet: Fleet) -> None:
    hub = StreamHub(store.stream, queue_limit=100, read_limit=100)
    try:
        async with (
            hub.subscribe(fleet.id, StreamOptions()) as idle,
            hub.subscribe(fleet.id, StreamOptions()) as reading,
        ):
            assert await idle.next(0.01) is None  # joined the reader; now it stops reading
            got: list[Outgoing] = []
            for batch in range(3):
                await put(store, fleet, 60, start=batch * 100)
                got += await drain(reading, 60)
            assert hub.dropped == 1
            with pytest.raises(StreamRefused) as refused:
                await idle.next(0.01)
            assert refused.value.error is StreamError.SLOW_CONSUMER
            assert refused.value.closing.ws_code == 4429
            assert [m.cursor for m in got] == await cursors(store, fleet)
            assert hub.health()["clients"] == 2
        assert hub.health() == {
            "status": "ok",
            "clients": 0,
            "fleets": 0,
            "slow_consumers_dropped": 1,
        }
    finally:
        await hub.stop()


async def test_stop_ends_subscriptions_and_refuses_new_ones(store: Store, fleet: Fleet) -> None:
    hub = StreamHub(store.stream)
    sub = await hub.open(fleet.id, StreamOptions())
    assert await sub.next(0.01) is None
    await hub.stop()
    with pytest.raises(StreamRefused) as ended:
        await sub.next(0.01)
    assert ended.value.error is StreamError.SHUTTING_DOWN
    with pytest.raises(StreamRefused):
        await hub.open(fleet.id, StreamOptions())
    hub.release(sub)
    assert hub.health()["status"] == "stopped"


async def test_too_many_clients_are_refused(store: Store, fleet: Fleet) -> None:
    hub = StreamHub(store.stream, max_subscribers=1)
    try:
        async with hub.subscribe(fleet.id, StreamOptions()):
            with pytest.raises(StreamRefused) as refused:
                await hub.open(fleet.id, StreamOptions())
            assert refused.value.error is StreamError.OVERLOADED
            assert refused.value.closing.ws_code == 1013
    finally:
        await hub.stop()


# --- the pruner -------------------------------------------------------------------------------


async def test_pruner_drops_what_left_the_window(store: Store, fleet: Fleet) -> None:
    await put(store, fleet, 3)
    clock = [now_ms()]
    pruner = StreamPruner(store.stream, retention_s=600, clock=lambda: clock[0])
    assert await pruner.prune_once() == 0  # stored just now: kept
    clock[0] += 601_000
    assert await pruner.prune_once() == 3
    assert await store.stream.horizon(fleet.id) == await store.stream.head(fleet.id)


async def test_pruner_runs_until_stopped(store: Store, fleet: Fleet) -> None:
    await put(store, fleet, 2)
    pruner = StreamPruner(store.stream, interval_s=0.01, clock=lambda: now_ms() + 3_600_000)
    await pruner.start()
    async with asyncio.timeout(5):
        while pruner.pruned < 2:  # noqa: ASYNC110 - the pruner's own counter
            await asyncio.sleep(0.01)
    await pruner.stop()
    await pruner.stop()  # idempotent


def test_retention_under_ten_minutes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="at least 600"):
        StreamPruner(object(), retention_s=599)  # type: ignore[arg-type]
    monkeypatch.setenv("GP8_STREAM__RETENTION_S", "1800")
    assert Settings().stream.retention_s == 1800
    assert StreamSettings().retention_s == 900  # the default: 15 minutes
    monkeypatch.setenv("GP8_STREAM__RETENTION_S", "60")
    with pytest.raises(ValidationError):
        Settings()
