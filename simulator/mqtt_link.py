"""The MQTT link of a virtual box (docs/protocol.md §7): publishes each unit as one QoS 1
message on ``gp8/{imei}/up`` and reads ``gp8/{imei}/ack`` and ``gp8/{imei}/down``. Bytes only:
the outbox (simulator.outbox) puts the IDENT in front of each message.

The box logs in to the broker as itself (user = IMEI, password = `mqtt_password(secret)`) with
MQTT 5, clean start off and a session expiry, so that ACKs and COMMANDs published while it is
away are delivered when it comes back (§7.2). Its presence is the broker's (§7.6): it connects
with a retained last will "offline" on ``gp8/{imei}/status``, publishes the retained birth
"online" of the same session once subscribed, and clears it (an empty retained message)
before a clean close; a link that dies unannounced is reported by the broker (the will)
within 1.5 x the keep-alive.
A PUBACK only means the broker has the message: the unit is sent (and may reach gp8) when its
code is 0, and reached no gateway otherwise (0x10 no subscriber, 0x80+ refused), which `send`
reports so that the records go out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.gp8 import LoginStatus
from protocol.gp8.topics import (
    BoxStatus,
    ack_topic,
    down_topic,
    imei_of_box_topic,
    status_topic,
    up_topic,
)
from simulator.errors import BoxDisconnected, LoginRefused
from simulator.mqtt_client import BoxMqttClient
from simulator.outbox import Framing

log = logging.getLogger(__name__)

# The port of each scheme: mqtts:// is MQTT over TLS.
SCHEME_PORTS = {"mqtt": 1883, "mqtts": 8883}
# How long the broker keeps the box's session (queued ACKs and commands) while it is away.
SESSION_EXPIRY_S = 24 * 3600
KEEPALIVE_S = 60
# CONNACK codes that mean the broker refused these credentials (3.1.1 codes 4 and 5, MQTT 5
# reason codes 0x86 bad user name or password, 0x87 not authorized, 0x8C bad authentication).
_AUTH_REFUSALS = frozenset({4, 5, 0x86, 0x87, 0x8C})
# The last session stamp of each box of this process: a reconnection within the same
# millisecond still gets a greater one (§7.6).
_last_session: dict[str, int] = {}


def _next_session(imei: str) -> int:
    session = max(time.time_ns() // 1_000_000, _last_session.get(imei, 0) + 1)
    _last_session[imei] = session
    return session


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the boxes' broker is. A box logs in as itself, so credentials in a URL are not
    read."""

    host: str = "127.0.0.1"
    port: int = SCHEME_PORTS["mqtt"]
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> Broker:
        """``mqtt://host[:port]``, or ``mqtts://`` for TLS; raises ValueError."""
        parts = urlsplit(url)
        default_port = SCHEME_PORTS.get(parts.scheme)
        if default_port is None:
            raise ValueError(f"{url!r}: the scheme must be one of {', '.join(SCHEME_PORTS)}")
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        return cls(parts.hostname, parts.port or default_port, tls=parts.scheme == "mqtts")


@dataclass(frozen=True, slots=True)
class MqttLogin:
    """Who the box is to the broker."""

    username: str
    password: str = field(repr=False)
    client_id: str
    session_expiry_s: int = SESSION_EXPIRY_S
    keepalive_s: int = KEEPALIVE_S
    # Birth message and last will on its status topic (§7.6); False: a box whose firmware
    # predates them, whose presence gp8 infers from its messages.
    publish_status: bool = True


class MqttLink:
    framing: ClassVar[Framing] = Framing.MESSAGES

    def __init__(
        self, client: BoxMqttClient, imei: str, io_timeout_s: float, session: int | None = None
    ) -> None:
        self._client = client
        self._imei = imei
        self.session = session  # None: the box publishes no status
        self._up = up_topic(imei)
        self._io_timeout_s = io_timeout_s
        # Set when the link is gone: a publication waiting for its PUBACK stops waiting.
        self._lost = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(
        cls, broker: Broker, imei: str, login: MqttLogin, *, io_timeout_s: float
    ) -> MqttLink:
        """Connect and subscribe to the box's down and ack topics. Raises LoginRefused (bad
        credentials, or an ACL denying the box its own topics) and BoxDisconnected."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = login.session_expiry_s
        session = _next_session(imei)
        # The retained will outlives the box's session no longer than the session itself:
        # after that a gateway finds no status, which says the same (not connected).
        will_properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        will_properties.MessageExpiryInterval = login.session_expiry_s
        will = aiomqtt.Will(
            status_topic(imei),
            BoxStatus(False, session).encode(),
            qos=1,
            retain=True,
            properties=will_properties,
        )
        client = BoxMqttClient(
            broker.host,
            broker.port,
            username=login.username,
            password=login.password,
            identifier=login.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=login.keepalive_s,
            timeout=io_timeout_s,
            tls_params=aiomqtt.TLSParameters() if broker.tls else None,
            will=will if login.publish_status else None,
        )
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            if _code(exc.rc) in _AUTH_REFUSALS:
                raise LoginRefused(LoginStatus.BAD_PROOF) from exc
            raise BoxDisconnected(f"broker refused the connection: {exc}") from exc
        except aiomqtt.MqttError as exc:
            raise BoxDisconnected(f"cannot connect: {exc}") from exc
        link = cls(client, imei, io_timeout_s, session if login.publish_status else None)
        try:
            topics = [(down_topic(imei), 1), (ack_topic(imei), 1)]
            granted = await client.subscribe(topics, timeout=io_timeout_s)
            if link.session is not None and not any(_code(code) >= 0x80 for code in granted):
                # Subscribed first: commands published on seeing the birth reach the box.
                await link._publish_birth()
        except aiomqtt.MqttError as exc:
            await link.close()
            raise BoxDisconnected(f"subscribe failed: {exc}") from exc
        except BaseException:
            await link.close()
            raise
        if any(_code(code) >= 0x80 for code in granted):
            await link.close()
            raise LoginRefused(LoginStatus.BAD_PROOF)  # the ACL denies its own topics
        return link

    def post(self, units: Sequence[bytes]) -> None:
        # Nobody waits for these PUBACKs: a future left pending is simply collected.
        self._publish(units)

    async def send(self, units: Sequence[bytes]) -> list[bool]:
        pubacks = self._publish(units)
        confirmed = asyncio.ensure_future(asyncio.gather(*pubacks))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            # Bounded: without it a broker that never answers would hold the box forever.
            waiters: set[asyncio.Future[Any]] = {confirmed, lost}
            await asyncio.wait(
                waiters, timeout=self._io_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            if not confirmed.done():
                confirmed.cancel()
        if not confirmed.done() or confirmed.cancelled() or self._lost.is_set():
            raise BoxDisconnected("the broker did not confirm the publication")
        codes = confirmed.result()
        if any(codes):
            unrouted = sum(1 for code in codes if code)
            log.info("box %s: %d messages not routed (0x%02x)", self._imei, unrouted, max(codes))
        return [code == 0 for code in codes]

    async def receive(self) -> bytes:
        while True:
            try:
                message = await anext(self._client.messages)
            except aiomqtt.MqttError as exc:
                self._lost.set()
                raise BoxDisconnected(f"link lost: {exc}") from exc
            parsed = imei_of_box_topic(message.topic.value)
            if parsed is None or parsed[0] != self._imei:
                continue
            if isinstance(message.payload, bytes | bytearray):
                return bytes(message.payload)

    def abort(self, in_progress: bytes = b"") -> None:
        # A message is all or nothing: nothing of ``in_progress`` leaves.
        self._lost.set()
        self._client.cut()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            # A clean DISCONNECT discards the will: the box says it is leaving itself, by
            # clearing its retained status (nothing is left at the broker for a box gone).
            if self.session is not None and not self._lost.is_set():
                await self._client.publish(
                    status_topic(self._imei), b"", qos=1, retain=True, timeout=self._io_timeout_s
                )
        self._lost.set()
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(self._io_timeout_s):
                await self._client.__aexit__(None, None, None)

    async def _publish_birth(self) -> None:
        assert self.session is not None
        payload = BoxStatus(True, self.session).encode()
        await self._client.publish(
            status_topic(self._imei), payload, qos=1, retain=True, timeout=self._io_timeout_s
        )

    def _publish(self, units: Sequence[bytes]) -> list[asyncio.Future[int]]:
        if self._lost.is_set():
            raise BoxDisconnected("the link is lost")
        try:
            return [self._client.publish_nowait(self._up, data) for data in units]
        except aiomqtt.MqttError as exc:
            self.abort()
            raise BoxDisconnected(f"publish failed: {exc}") from exc


def _code(rc: object) -> int:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else -1
