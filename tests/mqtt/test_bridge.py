"""The MQTT bridge against the shared Mosquitto on 127.0.0.1:1883: uplink, acknowledgements,
commands, what the gateway drops, online state. Each test has its own boxes, share group and
client ids."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from gateway.adapters.gp8 import BoxReply
from gateway.mqtt import ack_topic, up_topic
from protocol.gp8 import (
    Ack,
    Command,
    CommandResult,
    CommandStatus,
    CommandType,
    EventCode,
    FrameDecoder,
    Heartbeat,
    Ident,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    encode,
)
from storage.models import now_ms
from tests.mqtt.conftest import (
    TIMEOUT,
    BoxFactory,
    BridgeFactory,
    Env,
    track,
    unique,
    unique_imei,
)

pytestmark = pytest.mark.mqtt


async def wait_for(predicate: object, timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a counter, bounded by the timeout
            await asyncio.sleep(0.01)


class Listener:
    """A plain MQTT client reading what gp8 publishes to a box (its ack or down topic)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.frames: list[Message] = []

    async def collect(self, until: int, timeout: float = TIMEOUT) -> list[Message]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            async for message in self.client.messages:
                decoder = FrameDecoder()
                decoder.feed(bytes(message.payload))
                self.frames.extend(m for m in decoder if not isinstance(m, Exception))
                if len(self.frames) >= until:
                    return self.frames
        return self.frames


async def raw_client(url_port: int = 1883) -> aiomqtt.Client:
    client = aiomqtt.Client("127.0.0.1", url_port, identifier=unique("raw"), timeout=TIMEOUT)
    await client.__aenter__()
    return client


async def test_uplink_is_stored_exactly_once(
    shared_broker: str, env: Env, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    (device,) = await env.provision()
    bridge = await make_bridge(shared_broker)
    box = make_box(shared_broker, device, batch_size=50)
    await box.connect()
    records = track(120)

    await box.send_positions(records, timeout=TIMEOUT)

    assert box.acked == 120 and box.pending == 0
    assert await env.stored_times(device) == [r.time_ms for r in records]
    assert bridge.metrics.frames["position"] == 3  # 50 + 50 + 20
    assert env.pipeline.metrics.records["stored"] == 120

    # The same records again (a box resending after a lost ACK): acknowledged, not stored twice.
    await box.send_positions(records, timeout=TIMEOUT)
    assert box.acked == 240
    assert await env.stored_times(device) == [r.time_ms for r in records]
    assert env.pipeline.metrics.records["duplicate"] == 120
    assert bridge.metrics.accepted == 6 and not bridge.metrics.dropped


async def test_events_heartbeats_and_vehicle_from_fittings(
    shared_broker: str, env: Env, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    (device,) = await env.provision()
    records = track(10)
    fitted_at = records[5].time_ms
    vehicle = await env.store.vehicles.create(
        env.fleet.id, vin="VF1TEST0000000001", plate="AB", label="van"
    )
    await env.store.devices.fit(env.fleet.id, vehicle.id, device.imei, fitted_at)
    bridge = await make_bridge(shared_broker)
    box = make_box(shared_broker, device)
    await box.connect()

    box.enqueue(records)
    box.enqueue_event(EventCode.HARSH_BRAKING, records[-1], detail=520)
    await box.flush(TIMEOUT)
    await box.heartbeat()

    page = await env.store.telemetry.positions(
        env.fleet.id, vehicle.id, from_ms=0, to_ms=now_ms() + 1
    )
    # Only the records taken once the box was fitted belong to the vehicle.
    assert [p.time_ms for p in page.items] == [r.time_ms for r in records[5:]]
    events = await env.store.telemetry.events(env.fleet.id)
    assert [(e.code, e.detail, e.vehicle_id) for e in events.items] == [
        ("harsh_braking", 520, vehicle.id)
    ]
    assert bridge.metrics.frames == {"position": 1, "event": 1, "heartbeat": 1}


async def test_impossible_records_are_dropped_alone(
    shared_broker: str, env: Env, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    (device,) = await env.provision()
    bridge = await make_bridge(shared_broker)
    box = make_box(shared_broker, device)
    await box.connect()
    good = track(3)
    future = box.record(now_ms() + 3_600_000, 48.0, 2.0)  # an hour ahead: a broken clock

    await box.send_positions([good[0], future, good[1], good[2]], timeout=TIMEOUT)

    assert box.acked == 4  # the frame is ACKed: resending the same values cannot help
    assert await env.stored_times(device) == [r.time_ms for r in good]
    assert sum(bridge.metrics.records_rejected.values()) == 1


async def test_downlink_command_and_its_result_reach_the_hook(
    shared_broker: str, env: Env, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    (device,) = await env.provision()
    replies: list[tuple[str, BoxReply]] = []

    async def on_command_result(imei: str, message: BoxReply) -> None:
        replies.append((imei, message))

    bridge = await make_bridge(shared_broker, on_command_result=on_command_result)
    box = make_box(shared_broker, device)
    await box.connect()

    assert await bridge.send(device.imei, Command(4242, CommandType.LOCK, 0))

    await wait_for(lambda: len(replies) == 2)
    assert box.commands == [Command(4242, CommandType.LOCK, 0)]
    assert box.state.doors_locked
    (imei1, ack), (imei2, result) = replies
    assert imei1 == imei2 == device.imei
    assert isinstance(ack, Ack) and ack.acked_seq == 4242
    assert isinstance(result, CommandResult)
    assert (result.command_seq, result.status) == (4242, CommandStatus.DONE)
    assert result.state & 0b100  # DOORS_LOCKED in the reported state
    assert bridge.metrics.commands_sent == 1
    assert bridge.metrics.frames["command_result"] == 1


async def test_send_to_a_box_fails_while_disconnected(
    shared_broker: str, env: Env, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge("mqtt://127.0.0.1:9", connect=False)  # nothing listens there
    assert not await bridge.send(unique_imei(), Command(1, CommandType.LOCATE, 0))
    await wait_for(lambda: bridge.metrics.connect_failures >= 1)
    assert bridge.health()["status"] == "disconnected"


async def test_messages_the_gateway_must_ignore_are_dropped_and_counted(
    shared_broker: str, env: Env, make_bridge: BridgeFactory
) -> None:
    # The shared broker is anonymous and has no ACL: anyone may publish anywhere, so the
    # gateway's own checks are all that stands between a publisher and another box's data.
    victim, other = await env.provision(2)
    stranger = unique_imei()  # provisioned nowhere
    bridge = await make_bridge(shared_broker)
    position = encode(Position(2, tuple(track(1))))
    ident_other = encode(Ident(1, other.imei, Model.GP8000, (1, 0, 0)))
    ident_victim = encode(Ident(1, victim.imei, Model.GP8000, (1, 0, 0)))
    ident_stranger = encode(Ident(1, stranger, Model.GP8000, (1, 0, 0)))
    publisher = await raw_client()
    listener = await raw_client()
    try:
        await listener.subscribe(ack_topic(victim.imei), qos=1)
        for topic, payload in [
            (up_topic(victim.imei), ident_other + position),  # another box's IDENT
            (up_topic(victim.imei), position),  # no IDENT at all
            (up_topic(victim.imei), b"garbage" * 10),
            (up_topic(stranger), ident_stranger + position),  # a box gp8 does not know
            (up_topic(victim.imei), b"\x00" * 70_000),  # too large
        ]:
            await publisher.publish(topic, payload, qos=1, timeout=TIMEOUT)
        await wait_for(lambda: sum(bridge.metrics.dropped.values()) == 5)
        assert bridge.metrics.dropped == {
            "imei_mismatch": 1,
            "no_ident": 2,
            "unknown_device": 1,
            "too_large": 1,
        }
        # The topic's box is told nothing of the mismatched message was stored.
        frames = await Listener(listener).collect(until=1)
        assert isinstance(frames[0], Nack)
        assert (frames[0].nacked_seq, frames[0].reason) == (2, NackReason.IMEI_MISMATCH)

        # Nothing was stored, and the dropped messages were acknowledged to the broker: a good
        # message after them goes through (PUBACKs are sent in order, none is stuck).
        assert await env.stored_times(victim) == [] and await env.stored_times(other) == []
        await publisher.publish(up_topic(victim.imei), ident_victim + position, qos=1)
        await wait_for(lambda: bridge.metrics.accepted == 1)
        assert len(await env.stored_times(victim)) == 1
    finally:
        for client in (publisher, listener):
            await client.__aexit__(None, None, None)


async def test_bad_frames_after_the_ident_are_nacked(
    shared_broker: str, env: Env, make_bridge: BridgeFactory
) -> None:
    (device,) = await env.provision()
    bridge = await make_bridge(shared_broker)
    ident = encode(Ident(1, device.imei, Model.GP8000, (1, 0, 0)))
    good = encode(Position(5, tuple(track(2))))
    corrupt = bytearray(encode(Position(6, tuple(track(1, start_ms=now_ms() - 500_000)))))
    corrupt[-3] ^= 0xFF  # CRC mismatch
    unexpected = encode(Command(7, CommandType.LOCK, 0))  # a server → box type
    publisher = await raw_client()
    listener = await raw_client()
    try:
        await listener.subscribe(ack_topic(device.imei), qos=1)
        await publisher.publish(
            up_topic(device.imei),
            ident + good + bytes(corrupt) + unexpected + encode(Heartbeat(8)),
            qos=1,
        )
        frames = await Listener(listener).collect(until=4)
    finally:
        for client in (publisher, listener):
            await client.__aexit__(None, None, None)
    answers = sorted(
        (type(f).__name__, f.acked_seq if isinstance(f, Ack) else f.nacked_seq, f)
        for f in frames
        if isinstance(f, (Ack, Nack))
    )
    assert [(kind, seq) for kind, seq, _ in answers] == [
        ("Ack", 5),
        ("Ack", 8),
        ("Nack", 6),
        ("Nack", 7),
    ]
    reasons = [f.reason for _, _, f in answers if isinstance(f, Nack)]
    assert reasons == [NackReason.BAD_CRC, NackReason.UNKNOWN_TYPE]
    assert len(await env.stored_times(device)) == 2
    # The decoder resynchronises after the bad CRC: the rest of that frame counts as garbage.
    assert bridge.metrics.frame_errors == {"bad_crc": 1, "garbage": 1, "unexpected_message": 1}


async def test_online_state_follows_the_box(
    shared_broker: str, env: Env, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    (device,) = await env.provision()
    bridge = await make_bridge(shared_broker, idle_s=1.0, gateway_id="gw-presence")
    # A box without birth and will (§7.6): its presence is inferred from its messages.
    box = make_box(shared_broker, device, publish_status=False)
    await box.connect()
    await box.send_positions(track(1), timeout=TIMEOUT)

    assert bridge.is_online(device.imei)
    await wait_for(lambda: device.id in _connections(env))
    state = await env.store.devices.connection(device.id)
    assert state is not None and state.online and state.transport == "mqtt"
    assert state.gateway_id == "gw-presence"

    # Silent for longer than idle_s: offline (the sweeper runs every second here).
    async def offline() -> bool:
        s = await env.store.devices.connection(device.id)
        return s is not None and not s.online

    async with asyncio.timeout(TIMEOUT):
        while not await offline():  # noqa: ASYNC110 - polling the store
            await asyncio.sleep(0.1)
    assert not bridge.is_online(device.imei)


def _connections(env: Env) -> set[str]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(env.store.path)) as conn:
        return {row[0] for row in conn.execute("SELECT device_id FROM connections")}


async def test_first_message_of_a_box_calls_on_box_online_once(
    shared_broker: str, env: Env, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    # Over MQTT a box's first message stands for the TCP login: the command service delivers
    # what was queued for the box from this hook.
    (device,) = await env.provision()
    online: list[str] = []

    async def on_box_online(imei: str) -> None:
        online.append(imei)

    await make_bridge(shared_broker, on_box_online=on_box_online)
    box = make_box(shared_broker, device)
    await box.connect()
    await box.send_positions(track(3), timeout=TIMEOUT)
    await box.send_positions(track(2, start_ms=now_ms() - 5_000), timeout=TIMEOUT)
    await wait_for(lambda: online == [device.imei])
    await asyncio.sleep(0.1)
    assert online == [device.imei]
