"""Contract: start/close/health, and driver failures surfacing as StorageUnavailable."""

from __future__ import annotations

import pytest

from storage.errors import Conflict, StorageUnavailable
from storage.models import DeviceModel
from storage.repository import Store
from tests.storage.factories import position


async def test_health_names_the_engine(store: Store, engine: str) -> None:
    health = await store.health()
    assert health["engine"] == engine.split("-")[0]


async def test_start_is_idempotent(store: Store) -> None:
    fleet = await store.fleets.create("a")
    await store.start()
    await store.start()
    assert await store.fleets.get(fleet.id) == fleet
    # Indexes survive a second start: uniqueness still holds.
    await store.devices.create(fleet.id, imei="1", model=DeviceModel.GP8000, secret="k")
    with pytest.raises(Conflict):
        await store.devices.create(fleet.id, imei="1", model=DeviceModel.GP8000, secret="k")


async def test_closed_store_is_unavailable(store: Store) -> None:
    fleet = await store.fleets.create("a")
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.health()
    with pytest.raises(StorageUnavailable):
        await store.fleets.get(fleet.id)
    with pytest.raises(StorageUnavailable):
        await store.telemetry.store([position(fleet.id, "dev_a", None, 1)], [])
    with pytest.raises(StorageUnavailable):
        await store.start()
    await store.close()  # closing twice is harmless


async def test_unreachable_database_is_unavailable(unreachable_store: Store) -> None:
    with pytest.raises(StorageUnavailable) as info:
        await unreachable_store.start()
    assert info.value.__cause__ is not None  # the driver's error is kept for the logs
    with pytest.raises(StorageUnavailable):
        await unreachable_store.health()
