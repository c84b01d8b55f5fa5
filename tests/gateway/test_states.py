"""The coalescing connection-state writer (gateway/states.py), and the gateway's use of it in a
reconnect storm."""

from __future__ import annotations

import asyncio

from gateway import TcpGateway
from gateway.metrics import GatewayMetrics
from gateway.states import StateWriter
from storage.models import DeviceConnection, Transport, connection_version
from tests.gateway.conftest import TIMEOUT, GatewayFactory, new_box
from tests.gateway.fakes import FakeDevices, FakeStore
from tests.polling import eventually


def state(device_id: str, start_ms: int, *, online: bool = True) -> DeviceConnection:
    return DeviceConnection(
        device_id,
        online,
        Transport.TCP,
        "gw-test",
        start_ms,
        version=connection_version(start_ms, online=online),
        seen_ms=start_ms if online else None,
    )


async def test_a_burst_of_states_is_written_in_a_few_batches() -> None:
    devices = FakeDevices()
    writer = StateWriter(devices, max_batch=100)
    states = [state(f"dev_{n}", 1_000) for n in range(250)]
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(writer.record(s) for s in states))
    assert devices.batches == [100, 100, 50]
    assert {d: c.online for d, c in devices.connections.items()} == {
        s.device_id: True for s in states
    }
    assert writer.metrics.state_writes["written"] == 250
    assert writer.pending == 0


async def test_a_newer_state_replaces_an_older_one_not_yet_written() -> None:
    devices = FakeDevices()
    writer = StateWriter(devices)
    online, offline = state("dev_1", 1_000), state("dev_1", 1_000, online=False)
    stale = state("dev_1", 500, online=False)  # an older session's end, reported late
    waits = [writer.record(online), writer.record(offline), writer.record(stale)]
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*waits)
    assert devices.connection_log == [offline]  # one write, of the newest observation
    assert writer.metrics.state_writes == {"coalesced": 2, "written": 1}


async def test_a_failed_write_is_counted_and_retried_until_stored() -> None:
    devices = FakeDevices()
    metrics = GatewayMetrics()
    writer = StateWriter(devices, metrics=metrics, retry_s=0.01)
    devices.unavailable = True
    stored = writer.record(state("dev_1", 1_000))
    await eventually(lambda: metrics.storage_errors >= 2)
    assert not stored.done()  # still queued, not dropped
    newer = state("dev_1", 2_000)
    also = writer.record(newer)  # arrives while the old one waits for its retry
    devices.unavailable = False
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(stored, also)
    assert devices.connections["dev_1"] == newer
    assert metrics.state_writes["failed"] >= 2
    assert writer.pending == 0


async def test_stop_writes_what_is_pending() -> None:
    devices = FakeDevices()
    writer = StateWriter(devices, max_delay_s=60.0)  # would wait a minute for a batch
    waiting = writer.record(state("dev_1", 1_000))
    await writer.stop(grace_s=TIMEOUT)
    assert waiting.done() and devices.connections["dev_1"].online


async def test_a_reconnect_storm_writes_connection_states_in_batches(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    gw: TcpGateway = await make_gateway(store)
    boxes = [new_box(store, gw, n) for n in range(100)]
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(b.connect() for b in boxes))
        for box in boxes:
            box.cut()
        await asyncio.gather(*(b.connect() for b in boxes))
    # 100 logins, up to 100 closes and 100 logins again: far fewer writes than states.
    await eventually(lambda: gw.metrics.state_writes["written"] >= 200)
    assert len(store.devices.batches) < 50
    assert gw.metrics.storage_errors == 0
    await eventually(lambda: all(c.online for c in store.devices.connections.values()))
    assert len(store.devices.connections) == 100
    await asyncio.gather(*(b.close() for b in boxes))


async def test_a_write_stop_gives_up_on_leaves_no_caller_waiting() -> None:
    entered = asyncio.Event()

    class Hanging(FakeDevices):
        async def set_connections(self, connections: list[DeviceConnection]) -> None:
            entered.set()
            await asyncio.Event().wait()  # a store that never answers

    writer = StateWriter(Hanging(), max_delay_s=0.0)
    waiting = writer.record(state("dev_1", 1_000))
    async with asyncio.timeout(TIMEOUT):
        await entered.wait()  # the write is under way
    await writer.stop(grace_s=0.05)
    assert waiting.done() and isinstance(waiting.exception(), RuntimeError)
