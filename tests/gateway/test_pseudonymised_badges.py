"""Driver badges become pseudonyms where box records enter storage (storage/pseudonyms.py,
docs/privacy.md): a GP8 box's badge and a Teltonika box's iButton (IO 78), read back raw from
each engine, are never stored as the badge number; and a driver presenting the fleet's privacy
badge, from either kind of box, toggles the vehicle's privacy (tracking/privacy_toggles.py).

A real TcpGateway (both listeners, port 0) on each storage engine of the contract suite."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway import TcpGateway
from protocol.gp8 import EventCode, Model
from protocol.teltonika import AvlId, AvlPacket, AvlRecord, Codec
from simulator.box import VirtualBox
from simulator.records import make_record
from storage.models import DeviceModel, DeviceProtocol, now_ms
from storage.mongo import MongoStore
from storage.pseudonyms import BadgePseudonyms
from storage.repository import Store
from storage.sqlite import SqliteStore
from tests.gateway.conftest import TIMEOUT
from tests.gateway.test_teltonika_e2e import Box
from tests.polling import eventually

# The storage contract's fixtures: one store per engine.
from tests.storage.conftest import db_dir, engine, store  # noqa: F401
from tracking.privacy_toggles import PrivacyToggleHandler

KEY = BadgePseudonyms(bytes(range(100, 132)))  # not the development key
GP8_IMEI, TELTONIKA_IMEI = "356938035643809", "356307042441013"
BADGE = 1_234_567_890  # a GP8 box's RFID badge
IBUTTON = 0x0100_001A_2B3C_4D5E  # a Teltonika iButton id (8 bytes, family code first)


@dataclass
class World:
    store: Store
    gateway: TcpGateway
    toggles: PrivacyToggleHandler
    fleet_id: str
    gp8_vehicle: str
    teltonika_vehicle: str

    async def gp8_box(self) -> VirtualBox:
        box = VirtualBox(
            GP8_IMEI, "gp8-s", Model.GP8000, port=self.gateway.port, io_timeout_s=TIMEOUT
        )
        await box.connect()
        return box

    async def teltonika_box(self) -> Box:
        box = await Box.connect(self.gateway.teltonika_port or 0)
        assert await box.login(TELTONIKA_IMEI)
        return box


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:  # noqa: F811
    fleet = await store.fleets.create("badges")
    await store.devices.create(fleet.id, imei=GP8_IMEI, model=DeviceModel.GP8000, secret="gp8-s")
    await store.devices.create(
        fleet.id,
        imei=TELTONIKA_IMEI,
        model=DeviceModel.FMC130,
        secret="",
        protocol=DeviceProtocol.TELTONIKA,
    )
    vehicles = []
    for vin, imei in (("VF1AAAAAAAAAAAAAA", GP8_IMEI), ("VF1BBBBBBBBBBBBBB", TELTONIKA_IMEI)):
        vehicle = await store.vehicles.create(fleet.id, vin=vin, plate=vin[-2:], label=imei)
        await store.devices.fit(fleet.id, vehicle.id, imei, 0)
        vehicles.append(vehicle.id)
    toggles = PrivacyToggleHandler(store.privacy)
    gateway = TcpGateway(
        store,
        port=0,
        teltonika_port=0,
        max_delay_ms=5,
        gateway_id="gw-badges",
        handlers=[toggles],
        pseudonyms=KEY,
    )
    await gateway.start()
    try:
        yield World(store, gateway, toggles, fleet.id, *vehicles)
    finally:
        await gateway.stop(grace_s=5)


def ibutton_record(time_ms: int, *, presented: bool) -> AvlRecord:
    """A Teltonika record with the iButton attached; ``presented``: the record its
    presentation triggered (event IO 78, the stored event ``driver_badge``)."""
    return AvlRecord(
        time_ms, 0, 23_500_000, 488_500_000, 40, 90, 8, 0,
        AvlId.IBUTTON if presented else 0,
        io1=((AvlId.IGNITION, 1),),
        io8=((AvlId.IBUTTON, IBUTTON),),
    )  # fmt: skip


async def raw_badges(held: Store) -> dict[str, list[int | None]]:
    """The badges as the engine holds them, read past the repositories: by table."""
    if isinstance(held, SqliteStore):
        with sqlite3.connect(held.path) as conn:
            return {
                "positions": [r[0] for r in conn.execute("SELECT driver_badge FROM positions")],
                "events": [
                    r[0]
                    for r in conn.execute(
                        "SELECT json_extract(CAST(position AS TEXT), '$.driver_badge') FROM events"
                    )
                ],
            }
    assert isinstance(held, MongoStore)
    database = held._db.database
    out: dict[str, list[int | None]] = {}
    for name in ("positions", "last_positions"):
        out[name] = [d.get("driver_badge") for d in await database[name].find({}).to_list()]
    out["events"] = [
        d["position"].get("driver_badge") for d in await database["events"].find({}).to_list()
    ]
    return out


async def test_both_protocols_store_the_pseudonym_never_the_badge(world: World) -> None:
    t = now_ms() - 60_000
    box = await world.gp8_box()
    box.enqueue([make_record(t, 48.85, 2.35, ignition=True, badge=BADGE)])
    box.enqueue_event(EventCode.DRIVER_BADGE, make_record(t + 1000, 48.85, 2.35, badge=BADGE))
    box.enqueue([make_record(t + 2000, 48.85, 2.35)])  # no badge: stored as none
    await box.flush(timeout=TIMEOUT)
    await box.close()
    teltonika = await world.teltonika_box()
    packet = AvlPacket(
        Codec.CODEC_8E,
        (ibutton_record(t, presented=True), ibutton_record(t + 1000, presented=False)),
    )
    assert await teltonika.send_packet(packet) == 2
    teltonika.cut()

    stored = await raw_badges(world.store)
    every = [b for badges in stored.values() for b in badges]
    assert BADGE not in every and IBUTTON not in every
    assert sorted(stored["positions"], key=str) == sorted(
        [KEY.of(BADGE), None, KEY.of(IBUTTON), KEY.of(IBUTTON)], key=str
    )
    assert sorted(stored["events"]) == sorted([KEY.of(BADGE), KEY.of(IBUTTON)])
    # Through the repositories: the pseudonym, as the API serves it.
    page = await world.store.telemetry.positions(
        world.fleet_id, world.gp8_vehicle, from_ms=0, to_ms=2**62
    )
    assert [p.driver_badge for p in page.items] == [KEY.of(BADGE), None]


async def test_presenting_the_privacy_badge_toggles_the_vehicle(world: World) -> None:
    # The fleet's privacy badge is the GP8 driver's; the Teltonika iButton is someone else's.
    await world.store.privacy.set_badge(world.fleet_id, KEY.of(BADGE))
    t = now_ms() - 60_000
    box = await world.gp8_box()
    for at in (t, t + 10_000):  # presented, then presented again
        box.enqueue_event(EventCode.DRIVER_BADGE, make_record(at, 48.85, 2.35, badge=BADGE))
    await box.flush(timeout=TIMEOUT)
    await box.close()
    teltonika = await world.teltonika_box()
    assert (
        await teltonika.send_packet(AvlPacket(Codec.CODEC_8, (ibutton_record(t, presented=True),)))
        == 1
    )
    teltonika.cut()

    await eventually(lambda: world.toggles.counters["recorded"] == 2)
    facts = await world.store.privacy.fleet(world.fleet_id)
    assert facts.toggles.get(world.gp8_vehicle) == (t, t + 10_000)
    assert world.teltonika_vehicle not in facts.toggles

    # A Teltonika box's iButton works the same once it is the privacy badge.
    await world.store.privacy.set_badge(world.fleet_id, KEY.of(IBUTTON))
    world.toggles.invalidate(world.fleet_id)  # as the API does (else seen within 5 s)
    teltonika = await world.teltonika_box()
    assert (
        await teltonika.send_packet(
            AvlPacket(Codec.CODEC_8, (ibutton_record(t + 5000, presented=True),))
        )
        == 1
    )
    teltonika.cut()
    await eventually(lambda: world.toggles.counters["recorded"] == 3)
    facts = await world.store.privacy.fleet(world.fleet_id)
    assert facts.toggles.get(world.teltonika_vehicle) == (t + 5000,)
