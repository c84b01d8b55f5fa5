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
import paho.mqtt.client as paho


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


class PublishTracker:
    """QoS 1 publication that returns the PUBACK's reason code (0 = delivered to subscribers)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = client._client
        self._waiters: dict[int, asyncio.Future[int]] = {}
        chained = client._on_publish  # what aiomqtt installed: it still needs every PUBACK

        def on_publish(c: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            waiter = self._waiters.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(int(getattr(reason, "value", 0)))
            chained(c, userdata, mid, reason, props)

        self._paho.on_publish = on_publish

    async def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and wait for the PUBACK (the caller bounds the wait). Raises
        aiomqtt.MqttError when the client cannot send."""
        info = self._paho.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        # Callbacks run on this thread, inside the loop's reader: the PUBACK cannot have been
        # handled before this line.
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[info.mid] = waiter
        try:
            return await waiter
        finally:
            self._waiters.pop(info.mid, None)
