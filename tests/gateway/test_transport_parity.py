"""TCP and MQTT are two links to one device-session core: for the same frames a box sends, both
store the same rows and give the same replies (docs/architecture.md).

One table of cases runs over both transports, each against a real listener: the TCP gateway on a
socket (port 0) after a real LOGIN, and the MQTT bridge through the real Mosquitto on
127.0.0.1:1883 (IDENT + the same frames in one uplink message). Both write into one SQLite file,
each case with two fresh boxes, one per transport.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway import TcpGateway
from gateway.mqtt import MqttBridge
from protocol.gp8 import (
    Ack,
    Challenge,
    CommandFailure,
    CommandResult,
    CommandStatus,
    Event,
    EventCode,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Ident,
    Login,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
    encode,
)
from protocol.gp8.topics import ack_topic, up_topic
from storage.models import Device, DeviceModel, now_ms
from storage.sqlite import SqliteStore
from tests.gateway.conftest import RawClient, track
from tests.polling import eventually
from tests.protocol.gp8.reference import frame

pytestmark = [pytest.mark.mqtt]

TIMEOUT = 10.0
BROKER = ("127.0.0.1", 1883)


def _bad_crc(seq: int) -> bytes:
    good = bytearray(encode(Heartbeat(seq)))
    good[-1] ^= 0xFF
    return bytes(good)


def _impossible(record: PositionRecord) -> PositionRecord:
    return record._replace(lat_e7=91 * 10**7)


@dataclass(frozen=True)
class Case:
    id: str
    frames: Callable[[list[PositionRecord]], bytes]  # what the box sends, given 6 records
    replies: list[tuple[str, int, str | None]]  # (type, acked seq, NACK reason)
    stored: int  # positions stored
    events: int = 0
    answers: int = 0  # frames handed to the command hook


def _position(seq: int, records: list[PositionRecord]) -> bytes:
    return encode(Position(seq, tuple(records)))


CASES = [
    Case("one position frame", lambda r: _position(10, r[:3]), [("ack", 10, None)], 3),
    Case(
        "position, heartbeat and event in order",
        lambda r: (
            _position(10, r[:2]) + encode(Heartbeat(11)) + encode(Event(12, EventCode.SOS, 7, r[2]))
        ),
        [("ack", 10, None), ("ack", 11, None), ("ack", 12, None)],
        2,
        events=1,
    ),
    Case(
        "a bad CRC between two good frames",
        lambda r: _position(10, r[:1]) + _bad_crc(11) + _position(12, r[1:2]),
        [("ack", 10, None), ("nack", 11, "BAD_CRC"), ("ack", 12, None)],
        2,
    ),
    Case(
        "an impossible record is dropped alone, its frame ACKed",
        lambda r: _position(10, [r[0], _impossible(r[1]), r[2]]),
        [("ack", 10, None)],
        2,
    ),
    Case(
        "a badge no database can hold is dropped alone, not its batch",
        lambda r: _position(10, [r[0], r[1]._replace(badge=2**64 - 1), r[2]]),
        [("ack", 10, None)],
        2,
    ),
    Case(
        "a frame whose records are all impossible is ACKed",
        lambda r: _position(10, [_impossible(r[0])]),
        [("ack", 10, None)],
        0,
    ),
    Case(
        "garbage, then a good frame",
        lambda r: b"\x00garbage!" + _position(10, r[:2]),
        [("ack", 10, None)],
        2,
    ),
    Case(
        "an unknown message type with a good CRC",
        lambda r: frame(0x42, 10, b"") + _position(11, r[:1]),
        [("nack", 10, "UNKNOWN_TYPE"), ("ack", 11, None)],
        1,
    ),
    Case(
        "a server-to-box message sent by the box",
        lambda r: encode(Challenge(10, b"\x00" * 16, now_ms())),
        [("nack", 10, "UNKNOWN_TYPE")],
        0,
    ),
    Case(
        "a second LOGIN or IDENT",
        lambda r: (
            encode(Login(10, "356938035643809", Model.GP8000, (1, 0, 0), b"\x00" * 32))
            + encode(Ident(11, "356938035643809", Model.GP8000, (1, 0, 0)))
        ),
        [("nack", 10, "UNKNOWN_TYPE"), ("nack", 11, "UNKNOWN_TYPE")],
        0,
    ),
    Case(
        "an unsupported version after login",
        lambda r: frame(0x04, 10, b"", version=9) + encode(Heartbeat(11)),
        [("nack", 10, "UNSUPPORTED_VERSION"), ("ack", 11, None)],
        0,
    ),
    Case(
        "the same frame twice is stored once and ACKed twice",
        lambda r: _position(10, r[:3]) + _position(10, r[:3]),
        [("ack", 10, None), ("ack", 10, None)],
        3,
    ),
    Case(
        "command answers: a receipt, a refusal and a result",
        lambda r: (
            encode(Ack(10, 5))
            + encode(Nack(11, 6, NackReason.UNKNOWN_TYPE))
            + encode(CommandResult(12, 5, CommandStatus.DONE, CommandFailure.NONE, 0))
        ),
        [("ack", 12, None)],
        0,
        answers=3,
    ),
]


def _shape(replies: list[Message]) -> list[tuple[str, int, str | None]]:
    out: list[tuple[str, int, str | None]] = []
    for reply in replies:
        if isinstance(reply, Ack):
            out.append(("ack", reply.acked_seq, None))
        elif isinstance(reply, Nack):
            out.append(("nack", reply.nacked_seq, reply.reason.name))
        else:
            out.append((type(reply).__name__, -1, None))
    return out


def _decode(data: bytes) -> list[Message]:
    decoder = FrameDecoder()
    decoder.feed(data)
    return [m for m in decoder if not isinstance(m, FrameError)]


@dataclass
class Rig:
    store: SqliteStore
    gateway: TcpGateway
    bridge: MqttBridge
    fleet_id: str
    answers: list[tuple[str, Any]]

    async def device(self) -> Device:
        imei = f"{secrets.randbelow(9 * 10**14) + 10**14:015d}"
        return await self.store.devices.create(
            self.fleet_id, imei=imei, model=DeviceModel.GP8000, secret=secrets.token_hex(8)
        )

    async def over_tcp(self, device: Device, data: bytes, expected: int) -> list[Message]:
        client = await RawClient.connect(self.gateway.port)
        try:
            await client.login(device.imei, device.secret)
            await client.send(data)
            replies = []
            for _ in range(expected):
                reply = await client.read()
                assert reply is not None, "the gateway closed the connection"
                replies.append(reply)
            return replies
        finally:
            client.close()

    async def over_mqtt(self, device: Device, data: bytes, expected: int) -> list[Message]:
        ident = encode(Ident(1, device.imei, Model.GP8000, (1, 0, 0)))
        async with aiomqtt.Client(*BROKER, identifier=f"box-{device.imei}", timeout=TIMEOUT) as c:
            await c.subscribe(ack_topic(device.imei), qos=1)
            await c.publish(up_topic(device.imei), ident + data, qos=1)
            replies: list[Message] = []
            if expected == 0:
                return replies
            async with asyncio.timeout(TIMEOUT):
                async for message in c.messages:
                    replies.extend(_decode(bytes(message.payload)))
                    if len(replies) >= expected:
                        return replies
        raise AssertionError("unreachable")

    async def rows(self, device: Device) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Stored positions and events without what names the box or the moment of receipt."""
        # Read by device straight from the file: the boxes here are fitted to no vehicle, and
        # the API's listings are by vehicle.
        return await asyncio.to_thread(_rows, self.store.path, device.id)


def _rows(db: Path, device_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row

        skip = {"device_id", "received_ms", "id"}

        def value(v: Any) -> Any:
            if isinstance(v, bytes) and v.startswith(b"{"):  # an event's embedded position
                return tuple(sorted((k, x) for k, x in json.loads(v).items() if k not in skip))
            return v

        def strip(rows: list[sqlite3.Row]) -> list[tuple[Any, ...]]:
            return [tuple(value(r[k]) for k in r.keys() if k not in skip) for r in rows]  # noqa: SIM118

        positions = conn.execute(
            "SELECT * FROM positions WHERE device_id = ? ORDER BY time_ms", (device_id,)
        ).fetchall()
        events = conn.execute(
            "SELECT * FROM events WHERE device_id = ? ORDER BY time_ms", (device_id,)
        ).fetchall()
        return strip(positions), strip(events)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    fleet = await store.fleets.create("parity")
    answers: list[tuple[str, Any]] = []

    async def on_answer(imei: str, message: Any) -> None:
        answers.append((imei, message))

    gateway = TcpGateway(
        store, port=0, max_delay_ms=2, gateway_id="gw-parity", on_command_result=on_answer
    )
    await gateway.start()
    bridge = MqttBridge.from_url(
        f"mqtt://{BROKER[0]}:{BROKER[1]}",
        gateway.pipeline,
        store,
        share_group=f"parity{secrets.token_hex(4)}",
        client_id=f"gw-parity-{secrets.token_hex(4)}",
        gateway_id="gw-parity",
        session_expiry_s=10,
        on_command_result=on_answer,
    )
    await bridge.start()
    await bridge.wait_connected(TIMEOUT)
    yield Rig(store, gateway, bridge, fleet.id, answers)
    await bridge.stop(grace_s=2)
    await gateway.stop(grace_s=2)
    await store.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_tcp_and_mqtt_store_and_answer_alike(rig: Rig, case: Case) -> None:
    records = track(6)
    data = case.frames(records)
    tcp_box, mqtt_box = await rig.device(), await rig.device()

    tcp_replies = await rig.over_tcp(tcp_box, data, len(case.replies))
    mqtt_replies = await rig.over_mqtt(mqtt_box, data, len(case.replies))

    assert _shape(tcp_replies) == case.replies
    assert _shape(mqtt_replies) == case.replies
    await eventually(lambda: len(rig.answers) >= 2 * case.answers)
    tcp_answers = [m for imei, m in rig.answers if imei == tcp_box.imei]
    mqtt_answers = [m for imei, m in rig.answers if imei == mqtt_box.imei]
    assert tcp_answers == mqtt_answers and len(tcp_answers) == case.answers
    tcp_rows, mqtt_rows = await rig.rows(tcp_box), await rig.rows(mqtt_box)
    assert tcp_rows == mqtt_rows
    assert (len(tcp_rows[0]), len(tcp_rows[1])) == (case.stored, case.events)
