"""Load shedding (gateway/connection.py, `Backlog`): above the high-water mark a box's records
are answered SERVER_BUSY at once, counted, and stored when the box resends them."""

from __future__ import annotations

import asyncio

from gateway.connection import Backlog
from protocol.gp8 import NackReason
from tests.gateway.conftest import TIMEOUT, GatewayFactory, new_box, track
from tests.gateway.fakes import FakeStore
from tests.polling import eventually


def test_the_backlog_admits_up_to_its_mark_and_a_large_read_alone() -> None:
    backlog = Backlog(high_water=10)
    assert backlog.admits(50)  # nothing waits: a read larger than the mark still goes through
    backlog.records = 8
    assert backlog.admits(2)
    assert not backlog.admits(3)


async def test_records_above_the_high_water_mark_are_refused_at_once_then_stored(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(store, shed_above=10)
    store.telemetry.gate = asyncio.Event()  # storage stalls: what is submitted stays pending
    first = new_box(store, gw, 1, batch_size=10)
    second = new_box(store, gw, 2, batch_size=5, busy_backoff_s=0.05)
    await first.connect()
    await second.connect()
    first.enqueue(track(10))
    holding = asyncio.create_task(first.flush(timeout=TIMEOUT))
    await store.telemetry.entered.wait()  # the first box's 10 records fill the backlog
    second.enqueue(track(5))
    sending = asyncio.create_task(second.flush(timeout=TIMEOUT))
    # Answered while storage is still stalled: nothing of it waited in the queue.
    await eventually(lambda: second.nacks[NackReason.SERVER_BUSY] >= 1)
    assert gw.metrics.shed >= 5 and gw.pipeline.pending == 10
    store.telemetry.gate.set()
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(holding, sending)
    assert first.acked == 10 and second.acked == 5  # the resend was stored: nothing lost
    assert len(store.telemetry.positions) == 15
    await first.close()
    await second.close()
