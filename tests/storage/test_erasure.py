"""Contract: deleting a fleet erases everything of it (GDPR), and nothing of another fleet."""

from __future__ import annotations

from storage.models import DeviceConnection, DeviceModel, Fleet, Transport
from storage.repository import Store
from tests.storage.factories import access_entry, api_key, event, position


async def fill(store: Store, fleet_id: str, imei: str) -> dict[str, str]:
    key = await store.keys.create(api_key(fleet_id))
    vehicle = await store.vehicles.create(fleet_id, vin="VIN", plate="P", label="L")
    device = await store.devices.create(fleet_id, imei=imei, model=DeviceModel.GP8500, secret="k")
    await store.devices.fit(fleet_id, vehicle.id, imei, 1_000)
    await store.devices.set_connection(
        DeviceConnection(device.id, True, Transport.TCP, "gw", 1_000)
    )
    await store.telemetry.store(
        [
            position(fleet_id, device.id, vehicle.id, 2_000),
            position(fleet_id, "dev_loose", None, 2_000),
        ],
        [event(fleet_id, device.id, vehicle.id, 2_000)],
    )
    await store.access_log.append(access_entry(fleet_id, 3_000))
    return {"key_hash": key.key_hash, "vehicle": vehicle.id, "device": device.id, "imei": imei}


async def test_fleet_delete_erases_everything(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    gone = await fill(store, fleet.id, "356938035643809")
    kept = await fill(store, other_fleet.id, "356938035643810")

    await store.fleets.delete(fleet.id)

    assert await store.keys.get_by_hash(gone["key_hash"]) is None
    assert await store.devices.get_by_imei(gone["imei"]) is None
    assert await store.devices.fittings(gone["device"]) == []
    assert await store.devices.connection(gone["device"]) is None
    assert await store.telemetry.last_positions(fleet.id) == []
    track = await store.telemetry.positions(fleet.id, gone["vehicle"], from_ms=0, to_ms=10**9)
    assert track.items == []
    assert (await store.telemetry.events(fleet.id)).items == []
    assert (await store.access_log.list(fleet.id)).items == []
    # The IMEI is free again: the box can be provisioned for a new customer.
    await store.fleets.create("new owner")

    assert await store.keys.get_by_hash(kept["key_hash"]) is not None
    assert await store.devices.get_by_imei(kept["imei"]) is not None
    assert len(await store.devices.fittings(kept["device"])) == 1
    assert await store.devices.connection(kept["device"]) is not None
    assert len(await store.telemetry.last_positions(other_fleet.id)) == 1
    assert len((await store.telemetry.events(other_fleet.id)).items) == 1
    assert len((await store.access_log.list(other_fleet.id)).items) == 1


async def test_imei_reusable_after_erasure(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    await store.devices.create(
        fleet.id, imei="356938035643809", model=DeviceModel.GP8000, secret="k"
    )
    await store.fleets.delete(fleet.id)
    device = await store.devices.create(
        other_fleet.id, imei="356938035643809", model=DeviceModel.GP8000, secret="k2"
    )
    assert device.fleet_id == other_fleet.id
