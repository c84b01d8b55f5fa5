"""Presence from the boxes' status messages (gateway/mqtt/presence.py, docs/protocol.md §7.6),
against a real store: the broker's word decides, ordered by the box's session stamp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.mqtt.presence import Presence
from protocol.gp8.topics import BoxStatus
from storage.models import DeviceConnection, DeviceModel, Transport, now_ms
from storage.sqlite import SqliteStore

IMEI = "356938035643809"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    yield store
    await store.close()


async def _settled(store: SqliteStore, device_id: str, online: bool) -> DeviceConnection:
    async with asyncio.timeout(5):
        while True:
            row = await store.devices.connection(device_id)
            if row is not None and row.online is online:
                return row
            await asyncio.sleep(0.01)


async def test_the_newest_session_wins_whatever_the_order(store: SqliteStore) -> None:
    fleet = await store.fleets.create("f")
    device = await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s")
    online: list[str] = []

    async def hook(imei: str) -> None:
        online.append(imei)

    presence = Presence(store.devices, gateway_id="gw", on_online=hook)
    old = now_ms() - 10_000
    presence.status(IMEI, device.id, BoxStatus(True, old + 5_000))  # the newer session...
    presence.status(IMEI, device.id, BoxStatus(False, old))  # ...then the old one's will, late
    assert presence.is_online(IMEI)
    row = await _settled(store, device.id, True)
    assert row.transport is Transport.MQTT
    presence.seen(IMEI, device.id)  # a message changes nothing: the broker decides
    presence.status(IMEI, device.id, BoxStatus(False, old + 5_000))  # its own will
    assert not presence.is_online(IMEI)
    await _settled(store, device.id, False)
    await presence.close()
    assert online == [IMEI]


async def test_a_clean_leave_ends_the_session_last_heard(store: SqliteStore) -> None:
    fleet = await store.fleets.create("f")
    device = await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s")
    presence = Presence(store.devices, gateway_id="gw")
    presence.left(IMEI, device.id)  # nothing heard before: nothing to say
    assert await store.devices.connection(device.id) is None
    presence.status(IMEI, device.id, BoxStatus(True, now_ms()))
    await _settled(store, device.id, True)
    presence.left(IMEI, device.id)
    assert not presence.is_online(IMEI)
    await _settled(store, device.id, False)
    await presence.close()
