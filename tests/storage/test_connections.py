"""Contract: connection state written by several processes (docs/scaling.md)."""

from __future__ import annotations

from storage.models import DeviceConnection, Fleet, Transport, connection_version
from storage.repository import Store
from tests.storage.conftest import make_device

IMEI = "356938035643809"


def _state(device_id: str, gateway: str, online: bool, start_ms: int) -> DeviceConnection:
    return DeviceConnection(
        device_id,
        online,
        Transport.TCP,
        gateway,
        start_ms,
        version=connection_version(start_ms, online=online),
        seen_ms=start_ms if online else None,
    )


async def test_a_stale_offline_never_hides_a_newer_online(store: Store, fleet: Fleet) -> None:
    device_id = await make_device(store, fleet.id, IMEI)
    newer = _state(device_id, "gw-b", True, 2_000)
    await store.devices.set_connection(_state(device_id, "gw-a", True, 1_000))
    await store.devices.set_connection(newer)
    # gw-a's session (started at 1,000) ends after gw-b's login: its "offline" is stale.
    await store.devices.set_connection(_state(device_id, "gw-a", False, 1_000))
    assert await store.devices.connection(device_id) == newer
    # Its own session's end outranks its online.
    ended = _state(device_id, "gw-b", False, 2_000)
    await store.devices.set_connection(ended)
    assert await store.devices.connection(device_id) == ended


async def test_touch_refreshes_only_rows_the_gateway_holds(store: Store, fleet: Fleet) -> None:
    held = await make_device(store, fleet.id, IMEI)
    other = await make_device(store, fleet.id, "356938035643810")
    await store.devices.set_connection(_state(held, "gw-a", True, 1_000))
    await store.devices.set_connection(_state(other, "gw-b", True, 1_000))
    taken = await store.devices.touch_connections("gw-a", [held, other, "dev_gone"], 5_000)
    assert taken == {other: "gw-b"}  # gw-b holds that one online now
    assert (await store.devices.connection(held) or _fail()).seen_ms == 5_000
    assert (await store.devices.connection(other) or _fail()).seen_ms == 1_000


def _fail() -> DeviceConnection:
    raise AssertionError("no connection row")


async def test_set_connections_writes_many_and_the_newest_state_wins(
    store: Store, fleet: Fleet
) -> None:
    a = await make_device(store, fleet.id, IMEI)
    b = await make_device(store, fleet.id, "356938035643810")
    c = await make_device(store, fleet.id, "356938035643811")
    newer_b = _state(b, "gw-b", True, 3_000)
    await store.devices.set_connection(newer_b)
    await store.devices.set_connections(
        [
            _state(a, "gw-a", True, 2_000),
            _state(a, "gw-a", False, 1_000),  # stale within the batch: an older session's end
            _state(b, "gw-a", False, 2_000),  # stale against the stored row
            _state(c, "gw-a", True, 1_000),
            _state("dev_gone", "gw-a", True, 1_000),  # deleted while connected: no row
        ]
    )
    assert await store.devices.connection(a) == _state(a, "gw-a", True, 2_000)
    assert await store.devices.connection(b) == newer_b
    assert await store.devices.connection(c) == _state(c, "gw-a", True, 1_000)
    assert await store.devices.connection("dev_gone") is None
    await store.devices.set_connections([])  # nothing to write is no error
