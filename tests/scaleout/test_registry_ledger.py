"""The session registry's cross-process part (gateway/registry.py) against a real store: two
registries with different gateway ids on one SQLite file stand for two processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.registry import SessionRegistry
from protocol.gp8 import Message
from storage import SQLITE_FILENAME
from storage.models import DeviceConnection, DeviceModel, now_ms
from storage.sqlite import SqliteStore

IMEI = "356938035643809"


@dataclass(eq=False)
class Session:
    imei: str
    device_id: str
    remote: str
    last_activity: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    closed: str | None = None

    async def send(self, message: Message) -> None:
        pass

    def close(self, reason: str) -> None:
        self.closed = reason

    async def ended_within(self, timeout_s: float) -> bool:
        return False


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / SQLITE_FILENAME)
    await store.start()
    yield store
    await store.close()


def registry(store: SqliteStore, gateway_id: str, reports: list[str]) -> SessionRegistry:
    r = SessionRegistry(store.devices, gateway_id=gateway_id)
    r.ledger = store.devices
    r.duplicate_grace_s = 0.2

    async def report(imei: str, *, old_remote: str, new_remote: str, idle_s: float) -> None:
        reports.append(f"{imei} {old_remote} -> {new_remote}")

    r.on_duplicate = report
    return r


async def _row(store: SqliteStore, device_id: str) -> DeviceConnection:
    row = await store.devices.connection(device_id)
    assert row is not None
    return row


async def test_live_sessions_are_touched(store: SqliteStore) -> None:
    fleet = await store.fleets.create("f")
    device = await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s")
    a = registry(store, "gw-a", [])
    a.touch_interval_s = 0.05
    session = Session(IMEI, device.id, "10.0.0.1:1")
    await a.register(session)
    login_seen = (await _row(store, device.id)).seen_ms
    assert login_seen is not None
    async with asyncio.timeout(5):
        while (await _row(store, device.id)).seen_ms == login_seen:
            session.last_activity = asyncio.get_running_loop().time()
            await asyncio.sleep(0.02)
    await a.unregister(session)


async def test_a_half_open_session_elsewhere_is_no_duplicate(store: SqliteStore) -> None:
    fleet = await store.fleets.create("f")
    device = await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s")
    reports: list[str] = []
    a, b = registry(store, "gw-a", reports), registry(store, "gw-b", reports)
    first = Session(IMEI, device.id, "10.0.0.1:1")
    await a.register(first)  # its toucher's first round is 10 s away
    # A last heard from it a minute ago (a dead NAT mapping): the box is back, not a clone.
    await store.devices.touch_connections("gw-a", [device.id], now_ms() - 60_000)
    second = Session(IMEI, device.id, "10.0.0.2:2")
    await b.register(second)
    assert reports == []
    assert (await _row(store, device.id)).gateway_id == "gw-b"
    await a.unregister(first)  # its late "offline" is older than B's login
    assert (await _row(store, device.id)).online
    await b.unregister(second)
    assert not (await _row(store, device.id)).online


async def test_a_login_while_another_process_holds_the_box_live_is_reported(
    store: SqliteStore,
) -> None:
    fleet = await store.fleets.create("f")
    device = await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s")
    reports: list[str] = []
    a, b = registry(store, "gw-a", reports), registry(store, "gw-b", reports)
    a.touch_interval_s = 0.05
    first, second = Session(IMEI, device.id, "10.0.0.1:1"), Session(IMEI, device.id, "10.0.0.2:2")
    await a.register(first)
    await b.register(second)
    assert reports == [f"{IMEI} 10.0.0.1:1 -> 10.0.0.2:2"]
    # A learns at its next touch that B holds the box now: it closes its session, as a
    # session superseded within one process is.
    async with asyncio.timeout(5):
        while first.closed is None:
            first.last_activity = asyncio.get_running_loop().time()
            await asyncio.sleep(0.02)
    assert first.closed == "superseded"
    await a.unregister(first)
    await b.unregister(second)
    assert not (await _row(store, device.id)).online
