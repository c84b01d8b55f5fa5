from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway import IngestPipeline, PipelineClosed
from gateway.adapters.gp8 import to_position
from gateway.context import DeviceContext
from gateway.pipeline import FLUSHES_IN_FLIGHT
from storage.errors import StorageUnavailable
from storage.models import Event, Position, StoreResult
from tests.gateway.conftest import track
from tests.gateway.fakes import FakeTelemetry
from tests.polling import eventually

_counter = iter(range(10**9))


def positions(n: int, device: str = "dev_1") -> list[Position]:
    ctx = DeviceContext("flt_a", device, "356000000000001")
    base = next(_counter) * 1_000_000
    return [to_position(r, ctx, 0) for r in track(n, start_ms=1_600_000_000_000 + base)]


async def test_records_of_concurrent_submitters_share_one_flush() -> None:
    fake = FakeTelemetry()
    async with IngestPipeline(fake, batch_size=100, max_delay_ms=5_000) as pipeline:
        await asyncio.wait_for(
            asyncio.gather(*(pipeline.submit(positions(10), []) for _ in range(10))), 5
        )
    assert fake.calls == [(100, 0)]
    assert len(fake.positions) == 100


async def test_a_lone_record_is_flushed_after_max_delay() -> None:
    fake = FakeTelemetry()
    async with IngestPipeline(fake, batch_size=1000, max_delay_ms=30) as pipeline:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(pipeline.submit(positions(1), []), 5)
        waited = loop.time() - started
    assert fake.calls == [(1, 0)]
    assert 0.025 <= waited < 2.0


async def test_flushes_never_exceed_batch_size_and_keep_submissions_whole() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=10, max_batch_size=25, max_delay_ms=0) as pipeline:
        first = asyncio.create_task(pipeline.submit(positions(1), []))
        await asyncio.wait_for(fake.entered.wait(), 5)  # the writer is busy with `first`
        rest = [asyncio.create_task(pipeline.submit(positions(10), [])) for _ in range(5)]
        await asyncio.sleep(0.01)
        fake.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert fake.calls == [(1, 0), (20, 0), (20, 0), (10, 0)]


async def test_a_backlog_is_written_in_bigger_flushes() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=10, max_delay_ms=0) as pipeline:
        first = asyncio.create_task(pipeline.submit(positions(1), []))
        await asyncio.wait_for(fake.entered.wait(), 5)  # storage is slow: a backlog builds
        rest = [asyncio.create_task(pipeline.submit(positions(5), [])) for _ in range(20)]
        await asyncio.sleep(0.01)
        fake.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    # Up to 8 x batch_size per flush while there is a backlog.
    assert fake.calls == [(1, 0), (80, 0), (20, 0)]


async def test_submit_resolves_only_once_its_records_are_stored() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    batch = positions(3)
    seen_at_resolve: list[int] = []
    async with IngestPipeline(fake, batch_size=10, max_delay_ms=0) as pipeline:

        async def submitter() -> None:
            await pipeline.submit(batch, [])
            seen_at_resolve.append(len(fake.positions))

        task = asyncio.create_task(submitter())
        await asyncio.wait_for(fake.entered.wait(), 5)
        await asyncio.sleep(0.02)
        assert not task.done() and fake.positions == {}
        fake.gate.set()
        await asyncio.wait_for(task, 5)
    assert seen_at_resolve == [3]


class _SlowTelemetry(FakeTelemetry):
    """Each store takes a while; counts the store calls under way at once."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most_active = 0

    async def store(self, positions: Sequence[Position], events: Sequence[Event]) -> StoreResult:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(0.01)  # being written
            return await super().store(positions, events)
        finally:
            self.active -= 1


async def test_the_next_flush_is_handed_over_while_one_is_written() -> None:
    fake = _SlowTelemetry()
    async with IngestPipeline(fake, batch_size=10, max_batch_size=10, max_delay_ms=0) as pipeline:
        await asyncio.wait_for(
            asyncio.gather(*(pipeline.submit(positions(10), []) for _ in range(6))), 5
        )
    assert fake.calls == [(10, 0)] * 6
    assert fake.most_active == FLUSHES_IN_FLIGHT == 2


async def test_a_waiting_batch_reaches_the_store_before_the_stored_one_is_answered() -> None:
    # Under load the store has the next batch while the loop sends the ACKs of the one it just
    # stored, rather than after them (the SQLite writer would sit idle meanwhile).
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    started: list[int] = []
    store = fake.store

    async def recording(positions: Sequence[Position], events: Sequence[Event]) -> StoreResult:
        started.append(len(positions))
        return await store(positions, events)

    fake.store = recording  # type: ignore[method-assign]

    async with IngestPipeline(fake, batch_size=10, max_batch_size=10, max_delay_ms=0) as pipeline:

        async def submit_then_count() -> int:
            await pipeline.submit(positions(10), [])
            return len(started)

        first = asyncio.create_task(submit_then_count())
        await eventually(lambda: len(started) == 1)
        others = [
            asyncio.create_task(pipeline.submit(positions(10), []))
            for _ in range(FLUSHES_IN_FLIGHT)
        ]
        await eventually(lambda: len(started) == FLUSHES_IN_FLIGHT)  # the last one waits
        fake.gate.set()
        assert await asyncio.wait_for(first, 5) == FLUSHES_IN_FLIGHT + 1
        await asyncio.wait_for(asyncio.gather(*others), 5)
    assert started == [10] * (FLUSHES_IN_FLIGHT + 1)


async def test_a_full_queue_makes_submitters_wait() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=5, max_delay_ms=0, queue_limit=10) as pipeline:
        first = asyncio.create_task(pipeline.submit(positions(10), []))
        await asyncio.wait_for(fake.entered.wait(), 5)
        blocked = asyncio.create_task(pipeline.submit(positions(1), []))
        await asyncio.sleep(0.02)
        assert pipeline.pending == 10  # the 11th record was not admitted
        assert not blocked.done()
        fake.gate.set()
        await asyncio.wait_for(asyncio.gather(first, blocked), 5)
        assert pipeline.pending == 0
    assert len(fake.positions) == 11


async def test_waiting_submitters_are_admitted_first_come_first_served() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=100, max_delay_ms=0, queue_limit=10) as pipeline:
        first = asyncio.create_task(pipeline.submit(positions(9), []))
        await asyncio.wait_for(fake.entered.wait(), 5)
        big = asyncio.create_task(pipeline.submit(positions(8), []))
        await asyncio.sleep(0)
        small = asyncio.create_task(pipeline.submit(positions(1), []))
        await asyncio.sleep(0.02)
        assert pipeline.pending == 9  # "small" fits, but must not overtake "big"
        fake.gate.set()
        await asyncio.wait_for(asyncio.gather(first, big, small), 5)
    assert fake.calls == [(9, 0), (9, 0)]


async def test_a_cancelled_waiter_gives_its_room_back() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=5, max_delay_ms=0, queue_limit=10) as pipeline:
        first = asyncio.create_task(pipeline.submit(positions(10), []))
        await asyncio.wait_for(fake.entered.wait(), 5)
        waiter = asyncio.create_task(pipeline.submit(positions(5), []))
        await asyncio.sleep(0.01)
        waiter.cancel()
        fake.gate.set()
        await asyncio.wait_for(first, 5)
        assert waiter.cancelled()
        await eventually(lambda: pipeline.pending == 0)
    assert len(fake.positions) == 10


async def test_a_submission_not_stored_within_its_wait_times_out_and_is_stored_anyway() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=5, max_delay_ms=0) as pipeline:
        loop = asyncio.get_running_loop()
        began = loop.time()
        waits = [pipeline.submit(positions(1), [], wait_s=0.05) for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 5)
        assert all(isinstance(r, TimeoutError) for r in results)
        assert loop.time() - began >= 0.05
        fake.gate.set()  # the records were not withdrawn: a resend would be a duplicate
        await eventually(lambda: len(fake.positions) == 3)
        await asyncio.wait_for(pipeline.submit(positions(1), [], wait_s=0.05), 5)
    assert len(fake.positions) == 4


async def test_the_wait_bound_covers_the_wait_for_room() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=5, max_delay_ms=0, queue_limit=10) as pipeline:
        first = asyncio.create_task(pipeline.submit(positions(10), []))
        await asyncio.wait_for(fake.entered.wait(), 5)
        with pytest.raises(TimeoutError):  # never admitted: the queue stays full
            await asyncio.wait_for(pipeline.submit(positions(1), [], wait_s=0.05), 5)
        assert pipeline.pending == 10  # its room was not kept
        fake.gate.set()
        await asyncio.wait_for(first, 5)
        # Admitted after a wait for room, then stored in time: no timeout.
        fake.gate.clear()
        second = asyncio.create_task(pipeline.submit(positions(10), []))
        await eventually(lambda: pipeline.pending == 10)
        late = asyncio.create_task(pipeline.submit(positions(1), [], wait_s=5.0))
        await asyncio.sleep(0.02)
        assert not late.done()
        fake.gate.set()
        await asyncio.wait_for(asyncio.gather(second, late), 5)
    assert len(fake.positions) == 21


async def test_storage_unavailable_fails_the_flush_and_the_next_one_works() -> None:
    fake = FakeTelemetry()
    fake.unavailable = True
    async with IngestPipeline(fake, batch_size=100, max_delay_ms=1) as pipeline:
        results = await asyncio.gather(
            pipeline.submit(positions(2), []),
            pipeline.submit(positions(3), []),
            return_exceptions=True,
        )
        assert all(isinstance(r, StorageUnavailable) for r in results)
        assert fake.positions == {}
        assert pipeline.metrics.storage_errors == 1
        fake.unavailable = False
        await asyncio.wait_for(pipeline.submit(positions(4), []), 5)
    assert len(fake.positions) == 4
    assert pipeline.metrics.records["stored"] == 4


async def test_a_hung_store_times_out_as_unavailable() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()  # never opened
    async with IngestPipeline(fake, max_delay_ms=0, store_timeout_s=0.05) as pipeline:
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(pipeline.submit(positions(1), []), 5)


async def test_a_poison_submission_fails_alone() -> None:
    fake = FakeTelemetry()
    fake.poison_device = "dev_bad"
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=100, max_delay_ms=0) as pipeline:
        opener = asyncio.create_task(pipeline.submit(positions(1, "dev_ok0"), []))
        await asyncio.wait_for(fake.entered.wait(), 5)
        good = [
            asyncio.create_task(pipeline.submit(positions(2, f"dev_ok{i}"), [])) for i in (1, 2)
        ]
        bad = asyncio.create_task(pipeline.submit(positions(2, "dev_bad"), []))
        await asyncio.sleep(0.01)
        fake.gate.set()
        results = await asyncio.gather(opener, *good, bad, return_exceptions=True)
    assert results[:3] == [None, None, None]
    assert isinstance(results[3], ValueError)
    assert {d for d, _ in fake.positions} == {"dev_ok0", "dev_ok1", "dev_ok2"}


async def test_a_poison_submission_costs_few_extra_store_calls() -> None:
    fake = FakeTelemetry()
    fake.poison_device = "dev_bad"
    fake.gate = asyncio.Event()
    async with IngestPipeline(fake, batch_size=1000, max_delay_ms=0) as pipeline:
        opener = asyncio.create_task(pipeline.submit(positions(1, "dev_first"), []))
        await asyncio.wait_for(fake.entered.wait(), 5)
        tasks = [asyncio.create_task(pipeline.submit(positions(1, f"d{i}"), [])) for i in range(31)]
        tasks.insert(17, asyncio.create_task(pipeline.submit(positions(1, "dev_bad"), [])))
        await asyncio.sleep(0.01)
        fake.gate.set()
        results = await asyncio.gather(opener, *tasks, return_exceptions=True)
    assert sum(isinstance(r, ValueError) for r in results) == 1
    assert len(fake.positions) == 32
    # 32 submissions, one poisoned: halving finds it in 5 rounds, not 32 single retries.
    assert len(fake.calls) - 1 <= 5


async def test_stop_stores_everything_submitted_then_refuses_more() -> None:
    fake = FakeTelemetry()
    pipeline = IngestPipeline(fake, batch_size=7, max_delay_ms=60_000)
    await pipeline.start()
    tasks = [asyncio.create_task(pipeline.submit(positions(3), [])) for _ in range(10)]
    await asyncio.sleep(0)
    await asyncio.wait_for(pipeline.stop(), 5)
    assert all(t.done() and t.exception() is None for t in tasks)
    assert len(fake.positions) == 30
    with pytest.raises(PipelineClosed):
        await pipeline.submit(positions(1), [])


async def test_stop_gives_up_after_its_grace_and_fails_what_is_left() -> None:
    fake = FakeTelemetry()
    fake.gate = asyncio.Event()  # storage hangs
    pipeline = IngestPipeline(fake, batch_size=2, max_delay_ms=0, store_timeout_s=60)
    await pipeline.start()
    tasks = [asyncio.create_task(pipeline.submit(positions(2), [])) for _ in range(3)]
    await asyncio.wait_for(fake.entered.wait(), 5)
    await asyncio.wait_for(pipeline.stop(grace_s=0.05), 5)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, PipelineClosed) for r in results)
    assert pipeline.pending == 0
