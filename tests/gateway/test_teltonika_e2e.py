"""Teltonika boxes end to end: real sockets on port 0, a real TcpGateway with its Teltonika
listener, SQLite storage; the box is driven by hand with protocol.teltonika's encoder."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import TcpGateway
from protocol.gp8 import LoginStatus, Model
from protocol.teltonika import (
    AvlId,
    AvlPacket,
    AvlRecord,
    Codec,
    DeviceDecoder,
    Frame,
    Imei,
    ImeiReply,
    RecordsAck,
    encode,
)
from simulator.box import VirtualBox
from storage.models import DeviceModel, DeviceProtocol, Position, now_ms
from storage.sqlite import SqliteStore
from tests.gateway.conftest import TIMEOUT, RawClient, track
from tests.polling import eventually
from throttle import AuthThrottle, FailureLimit

IMEI = "356307042441013"
GP8_IMEI = "356000000000001"


@dataclass
class World:
    store: SqliteStore
    gateway: TcpGateway
    fleet_id: str
    vehicle_id: str

    async def stored(self) -> list[Position]:
        page = await self.store.telemetry.positions(
            self.fleet_id, self.vehicle_id, from_ms=0, to_ms=2**62, limit=10_000
        )
        return page.items


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    fleet = await store.fleets.create("teltonika")
    await store.devices.create(
        fleet.id, imei=IMEI, model=DeviceModel.FMC130, secret="", protocol=DeviceProtocol.TELTONIKA
    )
    await store.devices.create(fleet.id, imei=GP8_IMEI, model=DeviceModel.GP8000, secret="gp8-s")
    vehicle = await store.vehicles.create(fleet.id, vin="VF1AAAAAAAAAAAAAA", plate="AB", label="x")
    await store.devices.fit(fleet.id, vehicle.id, IMEI, 0)
    gateway = TcpGateway(
        store,
        port=0,
        teltonika_port=0,
        idle_timeout_s=30,
        login_timeout_s=5,
        write_timeout_s=5,
        max_delay_ms=5,
        gateway_id="gw-teltonika",
    )
    await gateway.start()
    try:
        yield World(store, gateway, fleet.id, vehicle.id)
    finally:
        await gateway.stop(grace_s=5)
        await store.close()


class Box:
    """A Teltonika box's link, by hand: IMEI, packets, and what the server answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = DeviceDecoder()

    @classmethod
    async def connect(cls, port: int) -> Box:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(TIMEOUT):
            await self.writer.drain()

    async def login(self, imei: str = IMEI) -> bool:
        await self.write(encode(Imei(imei)))
        reply = await self.read()
        assert isinstance(reply, ImeiReply)
        return reply.accepted

    async def read(self) -> Frame | None:
        """The server's next frame, or None once it closed the link."""
        async with asyncio.timeout(TIMEOUT):
            while (frame := self.decoder.next_frame()) is None:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.decoder.feed(data)
        return frame

    async def send_packet(self, packet: AvlPacket, pieces: int = 1) -> int:
        """Write the packet in ``pieces`` writes, return the count the server answered."""
        data = encode(packet)
        self.decoder.expect_ack()
        cuts = sorted(random.Random(len(data)).sample(range(1, len(data)), pieces - 1))
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            await self.write(data[a:b])
        ack = await self.read()
        assert isinstance(ack, RecordsAck), ack
        return ack.count

    def cut(self) -> None:
        self.writer.transport.abort()


def records(start_ms: int, count: int, *, nx: bool = False) -> tuple[AvlRecord, ...]:
    """``count`` records a second apart; with ``nx``, each has an NX element (Codec 8E only)."""
    out = []
    for i, gp8_record in enumerate(track(count, start_ms=start_ms, step_ms=1_000)):
        out.append(
            AvlRecord(
                gp8_record.time_ms, 0, gp8_record.lon_e7, gp8_record.lat_e7, 40, 90, 8, 50,
                AvlId.IGNITION if i == 0 else 0,
                io1=((AvlId.IGNITION, 1), (AvlId.MOVEMENT, 1), (AvlId.GSM_SIGNAL, 4)),
                io2=((AvlId.EXTERNAL_VOLTAGE, 12_800), (AvlId.GNSS_HDOP, 9)),
                io4=((AvlId.TOTAL_ODOMETER, 100_000 + i),),
                iox=((385, bytes([1, i, 0xAB])),) if nx else (),
            )
        )  # fmt: skip
    return tuple(out)


async def test_box_with_cuts_and_resends_ends_with_exactly_the_sent_records(world: World) -> None:
    start = now_ms() - 3_600_000
    a, b, c, d = (
        AvlPacket(Codec.CODEC_8E, records(start + i * 100_000, 7, nx=True)) for i in range(4)
    )
    box = await Box.connect(world.gateway.teltonika_port or 0)
    assert await box.login()
    assert await box.send_packet(a, pieces=5) == 7
    # Cut in the middle of packet b: nothing of it is stored, nothing answered.
    data = encode(b)
    await box.write(data[: len(data) // 2])
    box.cut()
    await eventually(lambda: world.gateway.metrics.frame_errors["truncated"] == 1)
    assert len(await world.stored()) == 7

    box = await Box.connect(world.gateway.teltonika_port or 0)
    assert await box.login()
    assert await box.send_packet(b, pieces=3) == 7
    assert await box.send_packet(a) == 7  # a resend (as if the first count was lost)
    # Two packets in one write: two counts, in order.
    box.decoder.expect_ack()
    box.decoder.expect_ack()
    await box.write(encode(c) + encode(d))
    assert [await box.read(), await box.read()] == [RecordsAck(7), RecordsAck(7)]
    box.cut()

    stored = await world.stored()
    sent = [r for packet in (a, b, c, d) for r in packet.records]
    assert [p.time_ms for p in stored] == sorted(r.time_ms for r in sent)
    first = stored[0]
    assert (first.lat, first.lon) == (sent[0].lat_e7 / 1e7, sent[0].lon_e7 / 1e7)
    assert (first.ignition, first.external_power_mv, first.hdop, first.gsm_signal) == (
        True,
        12_800,
        0.9,
        25,
    )
    assert first.vehicle_id == world.vehicle_id and first.fix_valid
    # What has no gp8 field is stored raw with the position; nothing of it dropped.
    assert [p.io for p in stored[:2]] == [
        {"240": 1, "385": "0100ab"},
        {"240": 1, "385": "0101ab"},
    ]
    events = await world.store.telemetry.events(world.fleet_id)
    assert sorted(e.code for e in events.items) == ["ignition_on"] * 4
    metrics = world.gateway.metrics
    assert metrics.logins["ok"] == 2 and metrics.frames["avl"] == 5


@pytest.mark.parametrize("imei", ["356307042441021", GP8_IMEI])
async def test_unprovisioned_or_gp8_imei_gets_00_and_is_closed(world: World, imei: str) -> None:
    box = await Box.connect(world.gateway.teltonika_port or 0)
    assert not await box.login(imei)
    assert await box.read() is None  # closed
    status = "unknown_device" if imei != GP8_IMEI else "wrong_protocol"
    assert world.gateway.metrics.logins[status] == 1


async def test_a_bad_packet_closes_the_link_and_stores_nothing_of_it(world: World) -> None:
    start = now_ms() - 600_000
    box = await Box.connect(world.gateway.teltonika_port or 0)
    assert await box.login()
    good = AvlPacket(Codec.CODEC_8, records(start, 2)[:1])
    bad = bytearray(encode(AvlPacket(Codec.CODEC_8E, records(start + 10_000, 3))))
    bad[-2] ^= 0xFF
    box.decoder.expect_ack()
    await box.write(encode(good) + bytes(bad))
    assert await box.read() == RecordsAck(1)
    assert await box.read() is None
    assert [p.time_ms for p in await world.stored()] == [good.records[0].time_ms]
    assert world.gateway.metrics.closes["bad_crc"] == 1


async def test_gp8_login_refuses_a_teltonika_imei(world: World) -> None:
    # A Teltonika box has no secret: an HMAC keyed on "" must not log anyone in as it.
    client = await RawClient.connect(world.gateway.port)
    result = await client.login(IMEI, "")
    assert result.status is LoginStatus.UNKNOWN_DEVICE
    client.close()


async def test_gp8_listener_unchanged_beside_it(world: World) -> None:
    box = VirtualBox(GP8_IMEI, "gp8-s", Model.GP8000, port=world.gateway.port, io_timeout_s=TIMEOUT)
    box.enqueue(track(3))
    await box.connect()
    await box.flush(timeout=TIMEOUT)
    await box.close()
    gp8_device = await world.store.devices.get_by_imei(GP8_IMEI)
    assert gp8_device is not None and gp8_device.protocol is DeviceProtocol.GP8
    assert world.gateway.health()["teltonika_port"] == world.gateway.teltonika_port
    assert world.gateway.metrics.frames["position"] >= 1


async def test_a_cloned_imei_talking_beside_the_box_is_reported_as_a_duplicate(
    world: World,
) -> None:
    # As for GP8 boxes: a second live link with the same IMEI closes the first and reports it
    # (the command service raises duplicate_box and freezes commands: docs/commands.md).
    reports: list[tuple[str, str, str]] = []

    async def on_duplicate(imei: str, *, old_remote: str, new_remote: str, idle_s: float) -> None:
        reports.append((imei, old_remote, new_remote))

    world.gateway.registry.on_duplicate = on_duplicate
    start = now_ms() - 600_000
    real = await Box.connect(world.gateway.teltonika_port or 0)
    assert await real.login()
    assert await real.send_packet(AvlPacket(Codec.CODEC_8, records(start, 2))) == 2
    clone = await Box.connect(world.gateway.teltonika_port or 0)
    assert await clone.login()
    await eventually(lambda: len(reports) == 1)
    assert reports[0][0] == IMEI and reports[0][1] != reports[0][2]
    assert await real.read() is None  # the older link was closed
    assert world.gateway.metrics.superseded == 1
    clone.cut()


async def test_imei_guessing_from_one_source_is_throttled(tmp_path: Path) -> None:
    # As GP8 logins (gateway/auth.py): failures per (source, IMEI), then per source; a locked
    # source is answered 00 unchecked, even for a provisioned IMEI, and the lock-out counted.
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    fleet = await store.fleets.create("teltonika")
    await store.devices.create(
        fleet.id, imei=IMEI, model=DeviceModel.FMC130, secret="", protocol=DeviceProtocol.TELTONIKA
    )
    throttle = AuthThrottle(
        per_identity=FailureLimit(2, 60.0, 600.0), per_source=FailureLimit(4, 60.0, 600.0)
    )
    gateway = TcpGateway(store, port=0, teltonika_port=0, login_throttle=throttle)
    await gateway.start()
    try:
        port = gateway.teltonika_port or 0
        for guess in ("356307042441021", "356307042441039", "356307042441047"):
            box = await Box.connect(port)
            assert not await box.login(guess)
            box.cut()
        box = await Box.connect(port)
        assert await box.login()  # 3 failures: not locked yet, the genuine box gets in
        box.cut()
        box = await Box.connect(port)
        assert not await box.login("356307042441054")  # the 4th failure locks the source
        box.cut()
        box = await Box.connect(port)
        assert not await box.login()  # locked: refused unchecked
        box.cut()
        metrics = gateway.metrics
        assert metrics.logins["unknown_device"] == 4 and metrics.logins["throttled"] == 1
        assert metrics.login_lockouts["source"] == 1
    finally:
        await gateway.stop(grace_s=1)
        await store.close()
