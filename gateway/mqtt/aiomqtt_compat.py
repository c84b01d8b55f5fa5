"""What gp8 needs of aiomqtt 2.5 that it does not offer yet: the one module that reaches into
its private parts (the wrapped paho-mqtt client and the connection futures).

* Manual acknowledgements. aiomqtt acknowledges a QoS 1 message as soon as it arrives and has no
  API to defer that (https://github.com/empicano/aiomqtt/issues/345, draft PR #346); paho-mqtt
  has one since 2.0 (``manual_ack_set`` and ``ack``). gp8 must PUBACK an uplink message only
  once it is stored. Replace `enable_manual_acks` and `OrderedAcks` when aiomqtt ships it.
* PUBACK reason codes. ``Client.publish`` drops them, but a box needs the MQTT 5 code 0x10
  "No matching subscribers": no gateway is subscribed (Mosquitto does not restore shared
  subscriptions across a restart, docs/mqtt.md), so gp8 will never see the message and the box
  must keep it and publish it again. `PublishTracker` publishes through paho and returns it.
* The socket, to cut a connection the way a crash or a lost radio link does (simulator, tests).
* Packet decoding. paho builds a `Properties` object for every PUBLISH and PUBACK it decodes,
  and its constructor rebuilds two lookup tables of some fifty entries each time: a tenth of the
  bridge's event loop at 50,000 positions/s. `lighten_packet_properties` has paho's decoder make
  `PacketProperties` instead, the same class with the tables built once.
* The "disconnected" future: after an unexpected disconnection aiomqtt stores the error in it and
  nobody may read it (we stopped reading messages first), which asyncio reports as "exception
  never retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.deadlines import Deadlines


def enable_manual_acks(client: aiomqtt.Client) -> None:
    """Must run before the client connects: a persistent session's queued messages arrive right
    after CONNACK, before any SUBSCRIBE, and would otherwise be acknowledged unprocessed."""
    client._client.manual_ack_set(True)


@dataclass(slots=True, eq=False)
class Delivery:
    """One received message awaiting its PUBACK."""

    mid: int
    qos: int
    settled: bool = False


class OrderedAcks:
    """The PUBACKs of one connection, sent in the order the messages were received (MQTT 3.1.1
    §4.6 and MQTT 5 §4.6 require it) whatever order their processing finishes in.

    Bound to one connection: message ids mean nothing on the next one, where the broker resends
    every unacknowledged message anyway, so `close` forgets what is pending.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = client._client
        self._pending: deque[Delivery] = deque()
        self._closed = False
        self.sent = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Messages received and not yet acknowledged."""
        return len(self._pending)

    def receive(self, message: aiomqtt.Message) -> Delivery:
        delivery = Delivery(message.mid, message.qos)
        if message.qos > 0 and not self._closed:
            self._pending.append(delivery)
        else:
            delivery.settled = True  # QoS 0 has no acknowledgement
        return delivery

    def settle(self, delivery: Delivery) -> None:
        """``delivery`` may be acknowledged: send its PUBACK and those of every settled message
        received before it, up to the first one still being processed."""
        delivery.settled = True
        pending = self._pending
        while pending and pending[0].settled:
            head = pending.popleft()
            if not self._closed:
                self._paho.ack(head.mid, head.qos)
                self.sent += 1

    def close(self) -> int:
        """The connection is gone: drop what is pending (the broker resends it). Returns how
        many messages were left unacknowledged."""
        self._closed = True
        left = len(self._pending)
        self._pending.clear()
        return left


# Instance attributes of paho's Properties that are its tables, not properties.
_TABLES = ("packetType", "types", "names", "properties")
_PROTOTYPE = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


class PacketProperties(Properties):
    """paho's Properties with the lookup tables (which paho only reads) shared by every
    instance instead of rebuilt per packet; everything else is paho's own code."""

    def __init__(self, packetType: int) -> None:
        # Straight into the instance, where Properties.__setattr__ puts these four names too.
        attributes = self.__dict__
        attributes["packetType"] = packetType
        attributes["types"] = _PROTOTYPE.types
        attributes["names"] = _PROTOTYPE.names
        attributes["properties"] = _PROTOTYPE.properties

    def clear(self) -> None:
        # paho's clear tries every property name in turn; only the set ones are attributes.
        attributes = self.__dict__
        for name in [n for n in attributes if n not in _TABLES]:
            del attributes[name]


def lighten_packet_properties() -> None:
    """Have paho's packet decoder (PUBLISH, PUBACK, ...) make PacketProperties. Process-wide
    and idempotent; paho's own clients are unaffected in behaviour (same class, same data)."""
    # The name _packet.py imported and calls per packet (it does not re-export it).
    paho_packet.Properties = PacketProperties  # type: ignore[attr-defined]


def cut(client: aiomqtt.Client) -> None:
    """Shut the connection's socket down without a DISCONNECT packet; paho then sees the end of
    the stream and reports the connection lost, as after a crash."""
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RDWR)


def forget_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark the error of an unexpected disconnection as seen (it was logged or irrelevant)."""
    disconnected = client._disconnected
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


NO_MATCHING_SUBSCRIBERS = 0x10


# Default bound on a PUBACK wait; the bridge passes its own operation timeout.
PUBACK_TIMEOUT_S = 10.0


class PublishTracker:
    """QoS 1 publication that returns the PUBACK's reason code (0 = delivered to subscribers).

    A wait for a PUBACK longer than ``timeout_s`` fails with TimeoutError; the waits share one
    timer (gateway/deadlines.py), where asyncio.timeout armed one per ACK published.
    """

    def __init__(self, client: aiomqtt.Client, timeout_s: float = PUBACK_TIMEOUT_S) -> None:
        self._paho = client._client
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._deadlines = Deadlines(timeout_s, "PUBACK wait")
        chained = client._on_publish  # what aiomqtt installed: it still needs every PUBACK

        def on_publish(c: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            waiter = self._waiters.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(int(getattr(reason, "value", 0)))
            chained(c, userdata, mid, reason, props)

        self._paho.on_publish = on_publish

    @property
    def pending(self) -> int:
        """Publications waiting for their PUBACK."""
        return len(self._waiters)

    async def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and wait for the PUBACK, at most ``timeout_s`` (TimeoutError).
        Raises aiomqtt.MqttError when the client cannot send."""
        info = self._paho.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        # Callbacks run on this thread, inside the loop's reader: the PUBACK cannot have been
        # handled before this line.
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        stale = self._waiters.get(info.mid)
        if stale is not None and not stale.done():
            # paho wrapped its message ids around onto a wait still open: that PUBACK can no
            # longer be told apart, so the older wait ends as if it had timed out.
            stale.set_exception(TimeoutError(f"message id {info.mid} reused"))
        self._waiters[info.mid] = waiter
        self._deadlines.watch(waiter)
        try:
            return await waiter
        finally:
            if self._waiters.get(info.mid) is waiter:
                del self._waiters[info.mid]

    def close(self) -> None:
        """The connection is gone: no timer left behind (the bridge cancels the waits)."""
        self._deadlines.close()
