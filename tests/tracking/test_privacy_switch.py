"""Privacy mode by a box input (docs/privacy.md): a Teltonika profile's privacy switch
(DeviceProfile.privacy_input, GP8_TELTONIKA__PRIVACY_INPUT) becomes the event
``privacy_switch``, and tracking/privacy_toggles.py turns each change of it into a toggle,
through a real TcpGateway on each storage engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway import TcpGateway
from gateway.adapters.teltonika import FMB, to_event, to_position, with_privacy_input
from protocol.teltonika import AvlId, AvlPacket, AvlRecord, Codec
from storage.models import DeviceModel, DeviceProtocol, now_ms
from storage.privacy import PRIVACY_SWITCH_EVENT
from storage.repository import Store
from tests.gateway.adapters.test_teltonika import CTX
from tests.gateway.test_teltonika_e2e import Box
from tests.polling import eventually

# The storage contract's fixtures: one store per engine.
from tests.storage.conftest import db_dir, engine, store  # noqa: F401
from tracking.privacy import vehicle_privacy
from tracking.privacy_toggles import PrivacyToggleHandler

IMEI = "356307042441013"
DIN2 = 2


def switch_record(time_ms: int, on: int | None) -> AvlRecord:
    """A record; ``on`` not None: the one DIN2 changing to that value triggered (event IO 2)."""
    io1 = ((AvlId.IGNITION, 1),) if on is None else ((AvlId.IGNITION, 1), (DIN2, on))
    return AvlRecord(
        time_ms, 0, 23_500_000, 488_500_000, 40, 90, 8, 30, DIN2 if on is not None else 0, io1=io1
    )  # fmt: skip


def test_only_a_profile_with_the_input_reports_the_switch() -> None:
    record = switch_record(now_ms(), 1)
    io = record.io
    profile = with_privacy_input(DIN2)[DeviceModel.FMC130]
    position = to_position(record, io, CTX, now_ms(), profile)
    event = to_event(record, io, position, profile)
    assert event is not None and (event.code, event.detail) == (PRIVACY_SWITCH_EVENT, 1)
    assert to_event(record, io, position, FMB) is None  # the FMB default has no switch
    assert with_privacy_input(None) == {}
    # Every Teltonika model gets the input, each keeping its own wiring.
    profiles = with_privacy_input(DIN2)
    assert DeviceModel.GP8000 not in profiles
    assert profiles[DeviceModel.FMB920].wiring.lock is None


@dataclass
class World:
    store: Store
    gateway: TcpGateway
    handler: PrivacyToggleHandler
    fleet_id: str
    vehicle_id: str

    async def send(self, *records: AvlRecord) -> None:
        box = await Box.connect(self.gateway.teltonika_port or 0)
        assert await box.login(IMEI)
        assert await box.send_packet(AvlPacket(Codec.CODEC_8, records)) == len(records)
        box.cut()

    async def toggles(self) -> tuple[int, ...]:
        facts = await self.store.privacy.fleet(self.fleet_id, self.vehicle_id)
        return tuple(facts.toggles.get(self.vehicle_id, ()))


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:  # noqa: F811
    fleet = await store.fleets.create("switch")
    await store.devices.create(
        fleet.id, imei=IMEI, model=DeviceModel.FMC130, secret="", protocol=DeviceProtocol.TELTONIKA
    )
    vehicle = await store.vehicles.create(fleet.id, vin="VF1BBBBBBBBBBBBBB", plate="AB", label="")
    await store.devices.fit(fleet.id, vehicle.id, IMEI, 0)
    handler = PrivacyToggleHandler(store.privacy)
    gateway = TcpGateway(
        store,
        port=0,
        teltonika_port=0,
        max_delay_ms=5,
        handlers=[handler],
        teltonika_profiles=with_privacy_input(DIN2),
    )
    await gateway.start()
    try:
        yield World(store, gateway, handler, fleet.id, vehicle.id)
    finally:
        await gateway.stop(grace_s=5)


async def test_the_switch_makes_the_vehicle_private_while_it_is_on(world: World) -> None:
    t = now_ms() - 600_000
    # On, on again (a repeat changes nothing), a plain record, then off.
    await world.send(switch_record(t, 1), switch_record(t + 1000, 1), switch_record(t + 2000, None))
    await eventually(lambda: world.handler.counters["recorded"] == 1)
    await world.send(switch_record(t + 3000, 0), switch_record(t + 4000, 0))
    await eventually(lambda: world.handler.counters["recorded"] == 2)
    assert await world.toggles() == (t, t + 3000)
    spans = vehicle_privacy(
        await world.store.privacy.fleet(world.fleet_id, world.vehicle_id), world.vehicle_id
    ).spans(t - 1000, t + 10_000)
    assert [spans.covers(at) for at in (t - 1, t, t + 2000, t + 3000)] == [
        False,
        True,
        True,
        False,
    ]

    # The packet again (a box resending it): stored once, no toggle more.
    await world.send(switch_record(t + 3000, 0))
    await world.send(switch_record(t + 5000, 1))
    await eventually(lambda: world.handler.counters["recorded"] == 3)
    assert await world.toggles() == (t, t + 3000, t + 5000)
