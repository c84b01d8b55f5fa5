"""The uplink handler without a broker: what one MQTT message does, with in-memory fakes behind
the store (tests/gateway/fakes.py). The PUBACK ordering of aiomqtt_compat.OrderedAcks too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.adapters.gp8 import BoxReply
from gateway.mqtt.aiomqtt_compat import OrderedAcks
from gateway.mqtt.directory import DeviceCache
from gateway.mqtt.metrics import MqttMetrics
from gateway.mqtt.presence import Presence
from gateway.mqtt.uplink import NotStored, UplinkHandler, _consume, split_uplink
from gateway.pipeline import IngestPipeline
from protocol.gp8 import (
    Ack,
    CommandFailure,
    CommandResult,
    CommandStatus,
    EventCode,
    Heartbeat,
    Ident,
    Login,
    Model,
    Nack,
    NackReason,
    Position,
    encode,
)
from protocol.gp8 import Event as WireEvent
from protocol.gp8.topics import up_topic
from storage.models import DeviceStatus, now_ms
from tests.gateway.fakes import FakeStore
from tests.mqtt.conftest import track

IMEI = "356938035643809"
TIMEOUT = 5.0


@dataclass
class Rig:
    store: FakeStore
    pipeline: IngestPipeline
    handler: UplinkHandler
    metrics: MqttMetrics
    stopping: asyncio.Event
    replies: list[tuple[str, BoxReply]]

    def ident(self, imei: str = IMEI) -> bytes:
        return encode(Ident(1, imei, Model.GP8000, (1, 4, 2)))

    async def handle(self, payload: bytes, imei: str = IMEI):  # type: ignore[no-untyped-def]
        async with asyncio.timeout(TIMEOUT):
            return await self.handler.handle(up_topic(imei), payload, now_ms())


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = FakeStore()
    store.devices.add(IMEI, "secret")
    pipeline = IngestPipeline(store.telemetry, max_delay_ms=1)
    await pipeline.start()
    metrics = MqttMetrics()
    stopping = asyncio.Event()
    replies: list[tuple[str, BoxReply]] = []

    async def hook(imei: str, message: BoxReply) -> None:
        replies.append((imei, message))

    handler = UplinkHandler(
        pipeline,
        DeviceCache(store.devices),
        Presence(store.devices, gateway_id="gw"),
        metrics,
        on_command_result=hook,
        stopping=stopping,
        retry_min_s=0.01,
        retry_max_s=0.02,
    )
    yield Rig(store, pipeline, handler, metrics, stopping, replies)
    await pipeline.stop(grace_s=1)


def test_split_uplink() -> None:
    ident = Ident(1, IMEI, Model.GP8000, (1, 0, 0))
    heartbeat = encode(Heartbeat(2))
    assert split_uplink(encode(ident) + heartbeat) == split_uplink(encode(ident) + heartbeat)
    uplink = split_uplink(encode(ident) + heartbeat + heartbeat[:5])
    assert uplink.ident == ident and uplink.items == [Heartbeat(2)] and uplink.truncated == 5
    # IDENT must come first: after anything else, the message has none.
    assert split_uplink(heartbeat + encode(ident)).ident is None
    assert split_uplink(b"").ident is None


def test_frames_are_handed_over_in_order_and_let_go_of() -> None:
    items = ["ident", "position", "event"]
    handed = []
    for item in _consume(items):
        handed.append((item, len(items)))
    assert handed == [("ident", 2), ("position", 1), ("event", 0)]


async def test_records_are_stored_and_acked_in_frame_order(rig: Rig) -> None:
    records = track(4)
    event = WireEvent(4, EventCode.SOS, 0, records[3])
    payload = (
        rig.ident()
        + encode(Position(2, tuple(records[:2])))
        + encode(Heartbeat(3))
        + encode(event)
        + encode(Position(5, (records[2],)))
    )
    result = await rig.handle(payload)
    assert result.reply_to == IMEI and result.records == 4
    assert [(type(r), r.acked_seq) for r in result.replies if isinstance(r, Ack)] == [
        (Ack, 2),
        (Ack, 3),
        (Ack, 4),
        (Ack, 5),
    ]
    assert len(rig.store.telemetry.positions) == 3 and len(rig.store.telemetry.events) == 1


async def test_storage_outage_is_retried_until_stored(rig: Rig) -> None:
    rig.store.telemetry.unavailable = True
    task = asyncio.create_task(rig.handle(rig.ident() + encode(Position(2, tuple(track(2))))))
    async with asyncio.timeout(TIMEOUT):
        while rig.metrics.store_retries < 3:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    assert not task.done()  # holding the message (unacknowledged) while storage is down
    rig.store.telemetry.unavailable = False
    result = await task
    assert [type(r) for r in result.replies] == [Ack]
    assert len(rig.store.telemetry.positions) == 2


async def test_stopping_during_an_outage_leaves_the_message_unacknowledged(rig: Rig) -> None:
    rig.store.telemetry.unavailable = True
    task = asyncio.create_task(rig.handle(rig.ident() + encode(Position(2, tuple(track(1))))))
    async with asyncio.timeout(TIMEOUT):
        while rig.metrics.store_retries < 1:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    rig.stopping.set()
    with pytest.raises(NotStored):
        await task


async def test_device_lookup_outage_is_retried(rig: Rig) -> None:
    rig.store.devices.unavailable = True
    task = asyncio.create_task(rig.handle(rig.ident() + encode(Heartbeat(2))))
    async with asyncio.timeout(TIMEOUT):
        while rig.metrics.store_retries < 2:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    rig.store.devices.unavailable = False
    result = await task
    assert [(type(r), getattr(r, "acked_seq", None)) for r in result.replies] == [(Ack, 2)]


async def test_a_poison_batch_is_refused_alone_with_server_busy(rig: Rig) -> None:
    rig.store.telemetry.poison_device = rig.store.devices.by_imei[IMEI].id
    result = await rig.handle(rig.ident() + encode(Position(2, tuple(track(1)))))
    (reply,) = result.replies
    assert isinstance(reply, Nack) and reply.reason is NackReason.SERVER_BUSY
    assert rig.metrics.nacks["server_busy"] == 1


async def test_a_disabled_box_is_dropped(rig: Rig) -> None:
    rig.store.devices.add("000000000000007", "s", status=DeviceStatus.DISABLED)
    result = await rig.handle(
        rig.ident("000000000000007") + encode(Position(2, tuple(track(1)))), "000000000000007"
    )
    assert result.dropped == "device_disabled" and result.replies == []
    assert rig.store.telemetry.positions == {}


async def test_unknown_imeis_are_looked_up_once_per_period(rig: Rig) -> None:
    calls = 0
    original = rig.store.devices.get_by_imei

    async def counting(imei: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await original(imei)

    rig.store.devices.get_by_imei = counting  # type: ignore[method-assign]
    stranger = "999999999999999"
    for _ in range(5):
        result = await rig.handle(rig.ident(stranger) + encode(Heartbeat(2)), stranger)
        assert result.dropped == "unknown_device"
    assert calls == 1


async def test_command_answers_reach_the_hook_and_results_are_acked(rig: Rig) -> None:
    result_frame = CommandResult(3, 17, CommandStatus.DONE, CommandFailure.NONE, 0)
    result = await rig.handle(rig.ident() + encode(Ack(2, 17)) + encode(result_frame))
    assert rig.replies == [(IMEI, Ack(2, 17)), (IMEI, result_frame)]
    assert [(type(r), getattr(r, "acked_seq", None)) for r in result.replies] == [(Ack, 3)]


async def test_a_login_after_the_ident_is_unexpected(rig: Rig) -> None:
    login = Login(2, IMEI, Model.GP8000, (1, 0, 0), bytes(32))
    result = await rig.handle(rig.ident() + encode(login))
    (reply,) = result.replies
    assert isinstance(reply, Nack) and reply.reason is NackReason.UNKNOWN_TYPE
    assert rig.metrics.frame_errors["unexpected_message"] == 1


async def test_a_topic_that_is_not_an_uplink_is_dropped(rig: Rig) -> None:
    async with asyncio.timeout(TIMEOUT):
        result = await rig.handler.handle("gp8/12345/up", rig.ident(), now_ms())
    assert result.dropped == "bad_topic"


# --- PUBACK order ------------------------------------------------------------------------------


class _Paho:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> int:
        self.acked.append(mid)
        return 0


@dataclass
class _Client:
    _client: _Paho


@dataclass
class _Message:
    mid: int
    qos: int = 1


def test_pubacks_go_out_in_receive_order() -> None:
    paho = _Paho()
    acks = OrderedAcks(_Client(paho))  # type: ignore[arg-type]
    d1, d2, d3, d4 = (acks.receive(_Message(m)) for m in (11, 12, 13, 14))  # type: ignore[arg-type]
    acks.settle(d3)
    acks.settle(d2)
    assert paho.acked == []  # 11 is still being processed
    acks.settle(d1)
    assert paho.acked == [11, 12, 13]
    assert acks.pending == 1
    assert acks.close() == 1  # 14 is left for the broker to resend
    acks.settle(d4)
    assert paho.acked == [11, 12, 13]  # nothing is sent on a closed connection


def test_qos0_messages_need_no_puback() -> None:
    paho = _Paho()
    acks = OrderedAcks(_Client(paho))  # type: ignore[arg-type]
    d0 = acks.receive(_Message(0, qos=0))  # type: ignore[arg-type]
    d1 = acks.receive(_Message(5))  # type: ignore[arg-type]
    acks.settle(d1)
    acks.settle(d0)
    assert paho.acked == [5]
