"""Against a Mosquitto of our own on a free port, configured from the files gp8 generates:
per-box credentials and ACLs, a broker restart mid-stream, gp8 dying before it stored."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence

import aiomqtt
import pytest

from gateway.mqtt import ack_topic, down_topic, up_topic
from gateway.mqtt.aiomqtt_compat import PublishTracker, cut
from gateway.pipeline import IngestPipeline
from protocol.gp8 import Command, CommandType, Ident, Model, Position, encode, mqtt_password
from simulator.box import LoginRefused
from storage.models import Event, StoreResult
from storage.models import Position as StoredPosition
from tests.mqtt.conftest import (
    GATEWAY_USER,
    TIMEOUT,
    BoxFactory,
    BridgeFactory,
    Env,
    Mosquitto,
    track,
    unique,
)

pytestmark = pytest.mark.mqtt

BrokerFactory = Callable[..., Awaitable[Mosquitto]]


def gateway_url(broker: Mosquitto, password: str = "gw-pw") -> str:
    return f"mqtt://{GATEWAY_USER}:{password}@127.0.0.1:{broker.port}"


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a counter, bounded by the timeout
            await asyncio.sleep(0.01)


async def test_each_box_is_confined_to_its_own_topics(
    env: Env, start_broker: BrokerFactory, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    a, b = await env.provision(2)
    broker = await start_broker(env)
    bridge = await make_bridge(gateway_url(broker))
    box_a = make_box(broker.url, a)
    await box_a.connect()  # IMEI + the password derived from its secret

    # Box A, authenticated as itself, publishes a well-formed message on B's uplink.
    forged = encode(Ident(1, b.imei, Model.GP8000, (1, 0, 0))) + encode(
        Position(2, tuple(track(3)))
    )
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username=a.imei, password=mqtt_password(a.secret),
        identifier=unique("a-raw"), timeout=TIMEOUT, protocol=aiomqtt.ProtocolVersion.V5,
    ) as raw_a:  # fmt: skip
        refused = await PublishTracker(raw_a).publish(up_topic(b.imei), forged)
        assert refused == 0x87  # MQTT 5 "Not authorized": the broker's ACL refused it
        # ... and tries to read B's downlink and acknowledgements.
        await raw_a.subscribe([(down_topic(b.imei), 1), (ack_topic(b.imei), 1)])
        await bridge.send(b.imei, Command(99, CommandType.LOCK, 0))
        # A's own uplink still works, and everything before it was handled by then.
        await box_a.send_positions(track(2), timeout=TIMEOUT)
        leaked = await drain(raw_a, 0.3)

    assert leaked == []  # the broker delivered nothing of B's to A
    assert bridge.metrics.messages == 1  # only A's own message reached the gateway
    assert await env.stored_times(b) == []
    assert len(await env.stored_times(a)) == 2


async def test_credentials_are_checked_by_the_broker(
    env: Env, start_broker: BrokerFactory, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    (a,) = await env.provision()
    broker = await start_broker(env)

    with pytest.raises(LoginRefused):  # the secret itself is not the broker password
        await make_box(broker.url, a, password=a.secret).connect()
    with pytest.raises(aiomqtt.MqttError, match="Not authorized"):  # nor anonymous access
        async with aiomqtt.Client("127.0.0.1", broker.port, timeout=TIMEOUT):
            pass
    # A gateway with a wrong password keeps retrying; with the right one it connects.
    wrong = await make_bridge(gateway_url(broker, "nope"), connect=False)
    await wait_for(lambda: wrong.metrics.connect_failures >= 2)
    assert not wrong.connected
    await make_bridge(gateway_url(broker))


async def test_a_box_provisioned_later_is_let_in_after_regeneration_and_sighup(
    env: Env, start_broker: BrokerFactory, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    broker = await start_broker(env)
    bridge = await make_bridge(gateway_url(broker))
    (late,) = await env.provision()
    with pytest.raises(LoginRefused):
        await make_box(broker.url, late).connect()

    from gateway.mqtt.acl import generate_acl

    await generate_acl(
        env.store, broker.workdir / "auth", gateway_user=GATEWAY_USER, gateway_password="gw-pw"
    )
    broker.reload()
    box = make_box(broker.url, late)
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                await box.connect()
                break
            except LoginRefused:  # the broker has not re-read its files yet
                await asyncio.sleep(0.05)
    await box.send_positions(track(1), timeout=TIMEOUT)
    assert bridge.metrics.accepted == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
async def test_broker_restarted_mid_stream_loses_nothing(
    sig: signal.Signals,
    env: Env,
    start_broker: BrokerFactory,
    make_bridge: BridgeFactory,
    make_box: BoxFactory,
) -> None:
    devices = await env.provision(4)
    broker = await start_broker(env, persistence=True)
    bridge = await make_bridge(gateway_url(broker))
    # After a restart the broker has forgotten the gateway's shared subscription until the
    # bridge subscribes again; the boxes see "no matching subscribers" and resend.
    boxes = [
        make_box(broker.url, d, batch_size=5, window=4, busy_backoff_s=0.2, ack_timeout_s=30)
        for d in devices
    ]
    tracks = [track(200) for _ in devices]
    for box, records in zip(boxes, tracks, strict=True):
        box.enqueue(records)
    deliveries = [asyncio.create_task(box.deliver(timeout=40.0)) for box in boxes]

    # Mid-stream: some of every box's records are stored, most are not.
    await wait_for(lambda: all(box.acked >= 20 for box in boxes))
    assert any(box.pending > 50 for box in boxes)
    broker.stop(sig)
    await asyncio.sleep(0.3)
    broker.start()  # same port, same persistence directory

    await asyncio.gather(*deliveries)
    for device, records in zip(devices, tracks, strict=True):
        assert await env.stored_times(device) == [r.time_ms for r in records]
    assert all(box.logins >= 2 for box in boxes)  # every box did reconnect
    assert bridge.metrics.connects >= 2 and bridge.metrics.disconnects >= 1


class NeverStores:
    """A telemetry sink that never answers: gp8 "dies" with the message received, unstored."""

    def __init__(self) -> None:
        self.calls = 0

    async def store(
        self, positions: Sequence[StoredPosition], events: Sequence[Event]
    ) -> StoreResult:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_gp8_dying_before_the_store_makes_the_broker_redeliver(
    env: Env, start_broker: BrokerFactory, make_bridge: BridgeFactory, make_box: BoxFactory
) -> None:
    (device,) = await env.provision()
    broker = await start_broker(env)
    url = gateway_url(broker)
    sink = NeverStores()
    stuck = IngestPipeline(sink, max_delay_ms=1)
    await stuck.start()
    first = await make_bridge(url, pipeline=stuck, client_id="gw-stable", share_group="g1")
    box = make_box(broker.url, device)
    await box.connect()
    records = track(5)
    box.enqueue(records)
    await box.send_frames()
    await wait_for(lambda: sink.calls == 1)  # received, being stored: not acknowledged

    # gp8 dies: its connection drops without a DISCONNECT, nothing was acknowledged.
    assert first._connection is not None
    cut(first._connection.client)
    await first.stop(grace_s=0.1)
    await stuck.stop(grace_s=0.1)

    # gp8 comes back with the same client id: the broker resends the message.
    second = await make_bridge(url, client_id="gw-stable", share_group="g1")
    await box.flush(TIMEOUT)
    assert await env.stored_times(device) == [r.time_ms for r in records]
    assert second.metrics.accepted == 1
    assert box.acked == 5 and box.resent == 0  # the box did not have to resend anything


async def drain(client: aiomqtt.Client, seconds: float) -> list[str]:
    got: list[str] = []
    try:
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                got.append(message.topic.value)
    except TimeoutError:
        pass
    return got
