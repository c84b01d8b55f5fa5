"""aiomqtt's client with what a virtual box needs beyond aiomqtt 2.5's public API: the one
simulator module that touches aiomqtt's private parts (the wrapped paho-mqtt client and two of
its callbacks). Everything else goes through the public API.

* The PUBACK's reason code. ``Client.publish`` awaits the PUBACK but drops its code, and a box
  needs MQTT 5's 0x10 "no matching subscribers": no gateway is subscribed (right after a broker
  restart, docs/mqtt.md), gp8 will never see the message, and the box must publish it again
  (docs/protocol.md §7.4). `publish_nowait` hands the message to paho at once, in call order
  (what the box posts without waiting, a COMMAND's answers, keeps its order), and returns a
  future for the code.
* Cutting the link the way a lost radio does: the socket shut down, no DISCONNECT packet.
* Unexpected disconnections: aiomqtt keeps their error in a future that nobody reads once the
  box has stopped reading messages, and asyncio then reports "exception never retrieved". A
  virtual box's disconnections are expected (it causes most of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class BoxMqttClient(aiomqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pubacks: dict[int, asyncio.Future[int]] = {}

    def publish_nowait(self, topic: str, payload: bytes) -> asyncio.Future[int]:
        """Publish at QoS 1 now; the future gets the PUBACK's reason code (0: delivered to a
        subscriber). Raises aiomqtt.MqttError when the client cannot send."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        # paho calls back on this thread, from the event loop's reader: the PUBACK cannot have
        # been handled before this line.
        puback: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pubacks[info.mid] = puback
        return puback

    def cut(self) -> None:
        """Shut the socket down without a DISCONNECT; paho then reads the end of the stream
        and reports the connection lost."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        puback = self._pubacks.pop(mid, None)
        if puback is not None and not puback.done():
            puback.set_result(int(getattr(reason_code, "value", 0)))
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        disconnected = self._disconnected
        if disconnected.done() and not disconnected.cancelled():
            disconnected.exception()  # seen: whoever iterates the messages still gets it
