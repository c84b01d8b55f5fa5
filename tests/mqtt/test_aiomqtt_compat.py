"""aiomqtt_compat: PublishTracker: PUBACK reason codes, and PUBACK waits bounded by one shared
timer (no broker: a fake paho client that publishes nowhere and acknowledges on demand); and
the lightened properties of paho's packet decoder."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.mqtt.aiomqtt_compat import PacketProperties, PublishTracker, lighten_packet_properties

TIMEOUT = 5.0


@dataclass
class _Info:
    mid: int
    rc: int = paho.MQTT_ERR_SUCCESS


@dataclass
class _Paho:
    mids: list[int] = field(default_factory=list)  # the ids the next publications get
    next_mid: int = 0
    on_publish: Any = None

    def publish(self, topic: str, payload: bytes, qos: int) -> _Info:
        self.next_mid += 1
        return _Info(self.mids.pop(0) if self.mids else self.next_mid)

    def puback(self, mid: int, reason: int = 0) -> None:
        self.on_publish(self, None, mid, ReasonCode(PacketTypes.PUBACK, identifier=reason), None)


@dataclass
class _Client:
    _client: _Paho = field(default_factory=_Paho)
    chained: list[int] = field(default_factory=list)

    def _on_publish(self, c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.chained.append(mid)


def tracker(timeout_s: float) -> tuple[PublishTracker, _Client]:
    client = _Client()
    return PublishTracker(client, timeout_s), client  # type: ignore[arg-type]


async def test_a_puback_gives_its_reason_code_and_reaches_aiomqtt_too() -> None:
    publisher, client = tracker(TIMEOUT)
    delivered = asyncio.create_task(publisher.publish("a", b"1"))
    nobody = asyncio.create_task(publisher.publish("b", b"2"))
    await asyncio.sleep(0)  # both are waiting
    client._client.puback(2, 0x10)  # no matching subscribers
    client._client.puback(1)
    async with asyncio.timeout(TIMEOUT):
        assert await delivered == 0
        assert await nobody == 0x10
    assert client.chained == [2, 1]
    assert publisher.pending == 0


async def test_waits_without_a_puback_time_out_in_order_with_one_timer() -> None:
    publisher, client = tracker(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.create_task(publisher.publish("a", b"1"))
    await asyncio.sleep(0.05)  # the second is published half a timeout later
    second = asyncio.create_task(publisher.publish("b", b"2"))
    answered = asyncio.create_task(publisher.publish("c", b"3"))
    await asyncio.sleep(0)
    client._client.puback(3)
    async with asyncio.timeout(TIMEOUT):
        assert await answered == 0
        with pytest.raises(TimeoutError):
            await first
        first_failed = loop.time()
        assert not second.done()  # its own deadline is later: the timer re-armed for it
        with pytest.raises(TimeoutError):
            await second
    assert first_failed - started >= 0.1
    assert loop.time() - started >= 0.15
    assert publisher.pending == 0


async def test_a_reused_message_id_ends_the_older_wait() -> None:
    publisher, client = tracker(TIMEOUT)
    client._client.mids = [7, 7]
    older = asyncio.create_task(publisher.publish("a", b"1"))
    await asyncio.sleep(0)
    newer = asyncio.create_task(publisher.publish("b", b"2"))
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(TimeoutError):
            await older
        client._client.puback(7)
        assert await newer == 0
    assert publisher.pending == 0


async def test_close_leaves_no_timer() -> None:
    publisher, _ = tracker(0.05)
    waiting = asyncio.create_task(publisher.publish("a", b"1"))
    await asyncio.sleep(0)
    publisher.close()
    waiting.cancel()  # as the bridge does with its publishing tasks
    await asyncio.gather(waiting, return_exceptions=True)
    assert publisher.pending == 0


# --- paho's packet properties, lightened ---------------------------------------------------------


# paho's Properties is untyped: Any here.


def _publish_properties() -> bytes:
    properties: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = 60
    properties.UserProperty = [("box", "1"), ("fw", "2.1")]
    properties.ContentType = "application/x-gp8"
    packed: bytes = properties.pack()
    return packed


def test_packet_properties_decode_as_paho_s_own() -> None:
    packed = _publish_properties()
    theirs: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    ours: Any = PacketProperties(PacketTypes.PUBLISH)
    assert theirs.unpack(packed)[1] == ours.unpack(packed)[1] == len(packed)
    assert ours.json() == theirs.json()
    assert ours.json()["UserProperty"] == [("box", "1"), ("fw", "2.1")]
    assert str(ours) == str(theirs)
    assert ours.pack() == packed
    # Unpacked again (paho clears first): nothing of the first packet is left.
    ours.unpack(b"\x00")
    assert ours.isEmpty() and ours.json() == {}
    with pytest.raises(MQTTException):  # paho's own checks still apply
        ours.ReceiveMaximum = 1


def test_paho_decodes_publish_packets_into_packet_properties() -> None:
    lighten_packet_properties()
    topic = b"gp8/356000000000001/up"
    packed = _publish_properties()
    packet = len(topic).to_bytes(2, "big") + topic + (17).to_bytes(2, "big") + packed + b"frames"
    decoded: Any = paho_packet.decode_publish(0x32, packet, MQTTProtocolVersion.MQTTv5)
    assert (decoded.topic, decoded.mid, decoded.qos, decoded.payload) == (topic, 17, 1, b"frames")
    properties: Any = decoded.properties
    assert type(properties) is PacketProperties
    assert properties.MessageExpiryInterval == 60
