"""The MQTT transport: GP8 frames over a broker, into the same ingest pipeline as TCP.

One long-lived MQTT 5 client per gateway process. It subscribes to the uplink of every box
through a shared subscription (``$share/{group}/gp8/+/up``), so the gateways of a group split
the uplink load and each message is handled by exactly one of them. Each message runs in its own
task (`UplinkHandler`): decoded, checked, stored through the shared pipeline, answered with GP8
ACK frames on the box's ack topic, and only then acknowledged to the broker (PUBACK, in receive
order, see aiomqtt_compat.py). The session is persistent (fixed client id, clean start off, a long
session expiry), so while gp8 is down or cut off the broker keeps the messages for it and
resends every one not yet acknowledged; the store's idempotency absorbs the copies.

The broker's Receive Maximum for us bounds the messages in flight, hence memory and the tasks
running at once. Losing the broker is not fatal: the bridge reconnects with exponential back-off
and jitter, forever, until stopped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.core import AnswerHook, log_answer
from gateway.metrics import MetricsCollector
from gateway.mqtt.aiomqtt_compat import (
    Delivery,
    OrderedAcks,
    PublishTracker,
    enable_manual_acks,
    forget_disconnect_error,
    lighten_packet_properties,
)
from gateway.mqtt.config import BrokerConfig
from gateway.mqtt.directory import DeviceCache
from gateway.mqtt.metrics import MqttMetrics
from gateway.mqtt.presence import IDLE_S, Presence
from gateway.mqtt.uplink import NotStored, UplinkHandler, UplinkResult
from gateway.pipeline import IngestPipeline
from gateway.ports import GatewayStore
from protocol.gp8 import Message, encode
from protocol.gp8.topics import (
    STATUS,
    BoxStatus,
    ack_topic,
    down_topic,
    imei_of_status_topic,
    shared_up_filter,
    status_filter,
)
from storage.errors import StorageError
from storage.models import now_ms

log = logging.getLogger(__name__)

STATUS_SUFFIX = f"/{STATUS}"

# How long the broker keeps our session (subscription and queued messages) while we are away:
# long enough to ride out a weekend outage of a gateway host. Shorter means messages queued for a
# gateway that does not come back are dropped by the broker after that time (docs/mqtt.md).
SESSION_EXPIRY_S = 7 * 24 * 3600
# Uplink messages the broker may have in flight to us unacknowledged (MQTT 5 Receive Maximum).
# Each is at most 64 KiB (uplink.MAX_MESSAGE_SIZE), typically ~2 KiB: 500 bounds memory to a
# few MiB in practice and is enough to keep the pipeline's 1000-record batches full.
RECEIVE_MAXIMUM = 500
KEEPALIVE_S = 30
# CONNACK, SUBACK and PUBACK waits; a broker that takes longer is treated as gone.
OPERATION_TIMEOUT_S = 10.0
# Reconnection back-off: doubles from the minimum up to the maximum, with jitter so that a
# fleet of gateways does not reconnect in lockstep after a broker restart.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
DEFAULT_GRACE_S = 10.0


@dataclass(eq=False)
class _Connection:
    """One broker connection and what is tied to it."""

    client: aiomqtt.Client
    acks: OrderedAcks
    publisher: PublishTracker
    # Handlers waiting for the broker to confirm a publication: when the connection drops they
    # are cancelled, since aiomqtt would make them wait out the whole timeout.
    publishing: set[asyncio.Task[Any]] = field(default_factory=set)

    def lost(self) -> None:
        self.publisher.close()
        for task in self.publishing:
            task.cancel()
        self.publishing.clear()


class MqttBridge:
    def __init__(
        self,
        broker: BrokerConfig,
        pipeline: IngestPipeline,
        store: GatewayStore,
        *,
        client_id: str,
        gateway_id: str,
        share_group: str = "gp8",
        on_command_result: AnswerHook = log_answer,
        on_box_online: Callable[[str], Awaitable[None]] | None = None,
        session_expiry_s: int = SESSION_EXPIRY_S,
        receive_maximum: int = RECEIVE_MAXIMUM,
        idle_s: float = IDLE_S,
        operation_timeout_s: float = OPERATION_TIMEOUT_S,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        metrics: MqttMetrics | None = None,
    ) -> None:
        if not client_id:
            raise ValueError("the MQTT client id must be set (and stable across restarts)")
        self.broker = broker
        self.client_id = client_id
        self.gateway_id = gateway_id
        self.share_group = share_group
        self.subscription = shared_up_filter(share_group)
        self.metrics = metrics if metrics is not None else MqttMetrics()
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._timeout_s = operation_timeout_s
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self.devices = DeviceCache(store.devices)
        self.presence = Presence(
            store.devices, gateway_id=gateway_id, idle_s=idle_s, on_online=on_box_online
        )
        self.handler = UplinkHandler(
            pipeline,
            self.devices,
            self.presence,
            self.metrics,
            on_command_result=on_command_result,
            stopping=self._stopping,
        )
        self._connection: _Connection | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._grace_s = DEFAULT_GRACE_S

    @classmethod
    def from_url(
        cls,
        url: str,
        pipeline: IngestPipeline,
        store: GatewayStore,
        *,
        share_group: str,
        client_id: str,
        gateway_id: str,
        **options: Any,
    ) -> MqttBridge:
        """``url``: ``mqtt://[user:password@]host[:port]`` (``mqtts://`` for TLS)."""
        return cls(
            BrokerConfig.from_url(url),
            pipeline,
            store,
            share_group=share_group,
            client_id=client_id,
            gateway_id=gateway_id,
            **options,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; `wait_connected` waits for the subscription.
        gp8 starts even while the broker is down: the bridge keeps trying."""
        if self._task is not None:
            raise RuntimeError("bridge already started")
        self._task = asyncio.create_task(self._run(), name="gp8-mqtt-bridge")
        self._sweeper = asyncio.create_task(self._sweep(), name="gp8-mqtt-presence")

    async def wait_connected(self, timeout: float = OPERATION_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Wait until connected and subscribed; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Read no more; give the messages being handled ``grace_s`` to be stored, answered and
        acknowledged; disconnect (the session stays at the broker, with whatever was not
        acknowledged); record the boxes seen here offline."""
        if self._task is None or self._stopping.is_set():
            return
        self._grace_s = grace_s
        self._stopping.set()
        try:
            async with asyncio.timeout(grace_s + self._timeout_s + 1):
                await asyncio.shield(self._task)
        except TimeoutError:
            log.warning("mqtt bridge: stop timed out; abandoning the connection")
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for task in list(self._handlers):
            task.cancel()  # past the grace period: unacknowledged, the broker resends them
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.presence.close()
        log.info("mqtt bridge %s stopped", self.client_id)

    # --- for /health and commands --------------------------------------------------------------

    def collector(self) -> MetricsCollector:
        """The bridge's counters for a prometheus-client registry (GET /metrics)."""
        return MetricsCollector(self.metrics, "gp8_mqtt_")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def health(self) -> dict[str, object]:
        return {
            "status": "connected" if self.connected else "disconnected",
            "broker": self.broker.address,
            "client_id": self.client_id,
            "subscription": self.subscription,
            "in_flight": len(self._handlers),
            "boxes_online": len(self.presence),
            **self.metrics.snapshot(),
        }

    def is_online(self, imei: str) -> bool:
        """Whether this gateway heard from the box within the idle period (presence.py)."""
        return self.presence.is_online(imei)

    async def send(self, imei: str, message: Message) -> bool:
        """Publish ``message`` (a COMMAND) on the box's down topic, QoS 1: True once the broker
        has it. The broker delivers it when the box is connected (its session is persistent);
        the box answers on its uplink, which reaches ``on_command_result``."""
        conn = self._connection
        if conn is None or not self.connected:
            return False
        # A task of its own: a lost connection cancels it, not our caller.
        publication = asyncio.create_task(self._publish(conn, down_topic(imei), encode(message)))
        try:
            await asyncio.wait({publication})
        except asyncio.CancelledError:
            publication.cancel()
            raise
        if publication.cancelled() or not publication.result():
            return False
        self.metrics.commands_sent += 1
        return True

    # --- the connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff_min_s
        while not self._stopping.is_set():
            client = self._new_client()
            try:
                # aiomqtt bounds the TCP connect and the CONNACK wait; this is the backstop.
                async with asyncio.timeout(self._timeout_s * 2):
                    await client.__aenter__()
            except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
                self.metrics.connect_failures += 1
                log.warning("mqtt: cannot connect to %s: %s", self.broker.address, exc)
            else:
                delay = self._backoff_min_s
                try:
                    await self._session(client)
                except aiomqtt.MqttError as exc:
                    self.metrics.disconnects += 1
                    log.warning("mqtt: lost the broker %s: %s", self.broker.address, exc)
                except Exception:
                    # A bug must cost one connection, not the transport: reconnect.
                    self.metrics.disconnects += 1
                    log.exception("mqtt: the session with %s failed", self.broker.address)
                finally:
                    await self._disconnect(client)
            if self._stopping.is_set():
                break
            pause = delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, self._backoff_max_s)
            try:
                async with asyncio.timeout(pause):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    def _new_client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # keep the session: the broker holds our messages while away
            properties=properties,
            keepalive=KEEPALIVE_S,
            timeout=self._timeout_s,
            max_inflight_messages=self._receive_maximum,
            tls_context=self.broker.tls_context,  # built once by the entry point (config.py)
        )
        enable_manual_acks(client)
        lighten_packet_properties()
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        conn = _Connection(client, OrderedAcks(client), PublishTracker(client, self._timeout_s))
        try:
            # The uplink shared; the boxes' statuses whole (each gateway must know which boxes
            # the broker holds: docs/mqtt.md, "Online state over MQTT").
            topics = [(self.subscription, 1), (status_filter(), 1)]
            granted = await client.subscribe(topics, timeout=self._timeout_s)
            if any(_refused(code) for code in granted):
                raise aiomqtt.MqttError(f"subscription to {topics} refused: {granted}")
            self._connection = conn
            self.metrics.connects += 1
            self.metrics.connected = True
            self._connected.set()
            log.info(
                "mqtt: %s connected to %s, subscribed to %s",
                self.client_id,
                self.broker.address,
                self.subscription,
            )
            reader = asyncio.create_task(self._read(conn))
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not reader.done():
                    reader.cancel()
                results = await asyncio.gather(reader, return_exceptions=True)
            if self._stopping.is_set():
                await self._drain()
            elif isinstance(results[0], BaseException):
                raise results[0]
            else:
                raise aiomqtt.MqttError("message stream ended")
        finally:
            self._connection = None
            self._connected.clear()
            self.metrics.connected = False
            self.metrics.unacked_on_disconnect += conn.acks.close()
            conn.lost()

    async def _read(self, conn: _Connection) -> None:
        async for message in conn.client.messages:
            # Statuses are counted apart (metrics.statuses): `messages` is the uplink's.
            if not message.topic.value.endswith(STATUS_SUFFIX):
                self.metrics.messages += 1
            delivery = conn.acks.receive(message)
            task = asyncio.create_task(self._process(conn, message, delivery))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _drain(self) -> None:
        """Let the messages being handled finish (stored, answered, acknowledged)."""
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=self._grace_s)

    async def _disconnect(self, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            log.debug("mqtt: disconnect: %r", exc)
        forget_disconnect_error(client)

    # --- one message -------------------------------------------------------------------------

    async def _process(
        self, conn: _Connection, message: aiomqtt.Message, delivery: Delivery
    ) -> None:
        topic = message.topic.value
        status_of = imei_of_status_topic(topic)
        if status_of is not None:
            await self._status(status_of, message.payload)
            conn.acks.settle(delivery)
            return
        try:
            result = await self.handler.handle(topic, bytes(message.payload), now_ms())
        except NotStored:
            return  # unacknowledged: the broker resends it to us or another gateway
        except Exception:
            # A bug: drop this message alone rather than hold back every PUBACK after it.
            log.exception("mqtt: handling a message on %r failed; dropped", topic)
            self.metrics.dropped["internal_error"] += 1
            result = UplinkResult(dropped="internal_error")
        if result.replies and result.reply_to is not None:
            frames = b"".join(map(encode, result.replies))
            if not await self._publish(conn, ack_topic(result.reply_to), frames):
                # Unacknowledged: the broker resends the message, the store absorbs the copy
                # and the box gets its ACK then.
                return
        conn.acks.settle(delivery)

    async def _status(self, imei: str, payload: object) -> None:
        """A box's birth or will: the broker's word on its connection, to presence."""
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else b"?"
        # Empty: the box cleared its status as it left cleanly (§7.6).
        status = None if not raw else BoxStatus.decode(raw)
        if raw and status is None:
            self.metrics.statuses["invalid"] += 1
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                known = await self.devices.get(imei)
                if known is None:
                    # A status comes once per connection: worth a fresh read, in case the box
                    # was provisioned since its IMEI was cached as unknown.
                    self.devices.forget(imei)
                    known = await self.devices.get(imei)
        except (StorageError, TimeoutError) as exc:
            # Settled anyway: a status is retained, the next connection gets it again.
            log.warning("mqtt: status of %s not handled: %r", imei, exc)
            return
        if known is None:
            self.metrics.statuses["unknown_device"] += 1
            return
        if status is None:
            self.metrics.statuses["left"] += 1
            self.presence.left(imei, known.device.id)
            return
        self.metrics.statuses["online" if status.online else "offline"] += 1
        self.presence.status(imei, known.device.id, status)

    async def _publish(self, conn: _Connection, topic: str, payload: bytes) -> bool:
        """QoS 1, not retained; True once the broker confirmed. Cancelled (the task ends) if
        the connection drops meanwhile."""
        task = asyncio.current_task()
        assert task is not None
        if conn.acks.closed:
            return False
        conn.publishing.add(task)
        try:
            # Through paho, one future per publication: aiomqtt's publish costs an Event, a
            # wait_for task and a walk over every pending call, once per ACK we publish. The
            # tracker bounds the wait by the operation timeout (one timer for all of them).
            await conn.publisher.publish(topic, payload)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self.metrics.publish_failures += 1
            log.info("mqtt: publish to %s failed: %s", topic, exc)
            return False
        finally:
            conn.publishing.discard(task)
        return True

    async def _sweep(self) -> None:
        period = max(1.0, self.presence.idle_s / 4)
        while True:
            await asyncio.sleep(period)
            await self.presence.sweep()


def _refused(code: object) -> bool:
    # SUBACK: MQTT 5 reason codes (ReasonCode, failure >= 0x80) or 3.1.1 granted QoS (0x80).
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80
