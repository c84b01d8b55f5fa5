"""The processing stage (processing/stage.py): handlers run on what was durably stored, in
device time order, once per stored batch; none of them can delay an ACK or lose a record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import pytest

from gateway import TcpGateway
from gateway.adapters.gp8 import to_position
from gateway.context import DeviceContext, Fittings
from gateway.pipeline import IngestPipeline
from processing import DeviceBatch, ProcessingStage, Signal
from storage.models import Event, Fitting, Position
from tests.gateway.conftest import GatewayFactory, new_box, track
from tests.gateway.fakes import FakeStore
from tests.polling import eventually

TIMEOUT = 10.0
CTX = DeviceContext("flt_a", "dev_1", "356000000000001")
FIT = Fitting("flt_a", "dev_1", "veh_1", 0, None)
OTHER = DeviceContext("flt_a", "dev_2", "356000000000002")


def positions(ctx: DeviceContext, times: Sequence[int], *, valid: bool = True) -> list[Position]:
    base = track(1)[0]
    return [
        to_position(base._replace(time_ms=t, flags=base.flags if valid else 0), ctx, t + 5)
        for t in times
    ]


@dataclass
class Recorder:
    """A handler that writes down what it saw and checks it was already stored."""

    store: FakeStore | None = None
    name: str = "recorder"
    seen: list[DeviceBatch] = field(default_factory=list)
    not_yet_stored: int = 0

    async def handle(self, batch: DeviceBatch) -> Sequence[Event]:
        if self.store is not None:
            stored = self.store.telemetry.positions
            self.not_yet_stored += sum(
                (p.device_id, p.time_ms) not in stored for p in batch.positions
            )
        self.seen.append(batch)
        return ()


@dataclass
class Stuck:
    """A handler that hangs until released, or raises."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False
    name: str = "stuck"
    calls: int = 0

    async def handle(self, batch: DeviceBatch) -> Sequence[Event]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("handler bug")
        await self.release.wait()
        return ()


# --- the stage alone ---------------------------------------------------------------------------


def test_batches_group_by_device_in_device_time_order() -> None:
    stage = ProcessingStage([Recorder()])
    mixed = [*positions(CTX, [3000, 1000]), *positions(OTHER, [500]), *positions(CTX, [2000])]
    batches = {b.device_id: b for b in stage.batches(mixed, [])}
    assert [p.time_ms for p in batches["dev_1"].positions] == [1000, 2000, 3000]
    assert [p.time_ms for p in batches["dev_2"].positions] == [500]
    live = batches["dev_1"].live
    assert live is not None and live.time_ms == 3000


def test_a_late_batch_has_no_live_fix() -> None:
    stage = ProcessingStage([Recorder()])
    (first,) = stage.batches(positions(CTX, [10_000, 20_000]), [])
    assert first.live is not None and first.live.time_ms == 20_000
    # Replayed hours later from the box's buffer: history, not the vehicle's current state.
    (late,) = stage.batches(positions(CTX, [5_000, 15_000]), [])
    assert late.live is None and [p.time_ms for p in late.positions] == [5_000, 15_000]
    (newer,) = stage.batches(positions(CTX, [25_000]), [])
    assert newer.live is not None and newer.live.time_ms == 25_000


def test_an_invalid_fix_is_never_live() -> None:
    stage = ProcessingStage([Recorder()])
    (batch,) = stage.batches(positions(CTX, [10_000], valid=False), [])
    assert batch.live is None


async def test_after_a_restart_an_old_replay_is_not_live() -> None:
    fitted = DeviceContext("flt_a", "dev_1", "356000000000001", Fittings.of([FIT]))
    stored_last = {("flt_a", "veh_1"): 50_000}

    async def last_fix(fleet_id: str, vehicle_id: str) -> int | None:
        return stored_last.get((fleet_id, vehicle_id))

    recorder = Recorder()
    stage = ProcessingStage([recorder], last_fix=last_fix)
    await stage.start()
    # The first batch since the start is a replay of fixes older than what is stored.
    stage.offer(positions(fitted, [10_000, 20_000]), [])
    await stage.settle(TIMEOUT)
    assert recorder.seen[-1].live is None
    stage.offer(positions(fitted, [60_000]), [])  # then live data
    await stage.settle(TIMEOUT)
    await stage.stop()
    live = recorder.seen[-1].live
    assert live is not None and live.time_ms == 60_000


async def test_a_full_queue_drops_processing_not_records() -> None:
    stuck = Stuck()
    stage = ProcessingStage([stuck], queue_limit=3)
    await stage.start()
    stage.offer(positions(CTX, [1000, 2000]), [])
    await eventually(lambda: stuck.calls == 1)  # the worker holds the first flush
    stage.offer(positions(CTX, [3000]), [])  # fits beside it
    stage.offer(positions(CTX, [4000]), [])  # does not
    assert stage.counters["dropped"] == 1
    stuck.release.set()
    await stage.settle(TIMEOUT)
    await stage.stop()


# --- after the pipeline ------------------------------------------------------------------------


@asynccontextmanager
async def running(store: FakeStore, stage: ProcessingStage) -> AsyncIterator[IngestPipeline]:
    """A pipeline into ``store`` that offers what it stores to ``stage``, both running."""
    pipeline = IngestPipeline(store.telemetry, max_delay_ms=1, processing=stage)
    await stage.start()
    try:
        async with pipeline:
            yield pipeline
    finally:
        await stage.stop()


async def test_a_handler_sees_each_stored_batch_once_after_durability() -> None:
    store = FakeStore()
    recorder = Recorder(store)
    stage = ProcessingStage([recorder])
    async with running(store, stage) as pipeline:
        await pipeline.submit(positions(CTX, [3000, 1000, 2000]), [])
        await pipeline.submit(positions(CTX, [4000]), [])
        await stage.settle(TIMEOUT)
    assert recorder.not_yet_stored == 0
    seen = [p.time_ms for batch in recorder.seen for p in batch.positions]
    assert seen == [1000, 2000, 3000, 4000]  # each once, in device time order


async def test_a_resend_is_stored_once_and_processed_once() -> None:
    store = FakeStore()
    recorder = Recorder(store)
    stage = ProcessingStage([recorder])
    async with running(store, stage) as pipeline:
        await pipeline.submit(positions(CTX, [1000, 2000]), [])
        # The box missed the ACK and resends the frame, with one new record behind it.
        await pipeline.submit(positions(CTX, [1000, 2000, 3000]), [])
        await stage.settle(TIMEOUT)
    seen = [p.time_ms for batch in recorder.seen for p in batch.positions]
    assert seen == [1000, 2000, 3000]


async def test_a_failed_flush_reaches_no_handler() -> None:
    store = FakeStore()
    recorder = Recorder(store)
    stage = ProcessingStage([recorder])
    store.telemetry.unavailable = True
    async with running(store, stage) as pipeline:
        with pytest.raises(Exception, match="down"):
            await pipeline.submit(positions(CTX, [1000]), [])
        store.telemetry.unavailable = False
        await pipeline.submit(positions(CTX, [1000]), [])
        await stage.settle(TIMEOUT)
    assert [[p.time_ms for p in b.positions] for b in recorder.seen] == [[1000]]


async def test_derived_events_are_stored_and_not_processed_again() -> None:
    store = FakeStore()

    @dataclass
    class Deriver:
        name: str = "deriver"
        calls: int = 0

        async def handle(self, batch: DeviceBatch) -> Sequence[Event]:
            self.calls += 1
            live = batch.live
            if live is None:
                return ()
            return [
                Event(
                    live.fleet_id,
                    live.device_id,
                    live.vehicle_id,
                    live.time_ms,
                    live.received_ms,
                    "test_derived",
                    0,
                    live,
                )
            ]

    async def submit(ps: Sequence[Position], es: Sequence[Event]) -> None:
        await pipeline.submit(ps, es, process=False)

    deriver = Deriver()
    stage = ProcessingStage([deriver], submit=submit)
    async with running(store, stage) as pipeline:
        await pipeline.submit(positions(CTX, [1000, 2000]), [])
        await eventually(lambda: len(store.telemetry.events) == 1)
        await stage.settle(TIMEOUT)
    assert deriver.calls == 1
    ((_, time_ms, code),) = store.telemetry.events
    assert (time_ms, code) == (2000, "test_derived")
    assert stage.counters["derived"] == 1


async def test_signals_reach_the_handlers_after_the_one_that_made_them() -> None:
    @dataclass
    class Crossing:
        name: str = "crossing"

        async def handle(self, batch: DeviceBatch) -> Sequence[Event | Signal]:
            live = batch.live
            if live is None:
                return ()
            signal = Signal("geofence_enter", live.fleet_id, live.device_id, None, live.time_ms)
            return [replace(signal, position=live, ref="geo_1")]

    before, after = Recorder(), Recorder()
    stage = ProcessingStage([before, Crossing(), after])
    await stage.start()
    stage.offer(positions(CTX, [1000, 2000]), [])
    await stage.settle(TIMEOUT)
    await stage.stop()
    assert before.seen[0].signals == ()
    (signal,) = after.seen[0].signals
    assert (signal.kind, signal.ref, signal.time_ms) == ("geofence_enter", "geo_1", 2000)
    assert stage.counters["derived"] == 0  # signals are not stored by the stage


# --- through a real TCP gateway ----------------------------------------------------------------


async def test_a_stuck_handler_delays_no_ack_and_loses_no_record(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    stuck = Stuck()
    recorder = Recorder(store)
    gw: TcpGateway = await make_gateway(store, handlers=[stuck, recorder])
    box = new_box(store, gw)
    await box.connect()
    async with asyncio.timeout(TIMEOUT):
        await box.send_positions(track(20))  # returns once every record is ACKed
        await box.send_positions(track(5, start_ms=track(1)[0].time_ms + 60_000))
    assert len(store.telemetry.positions) == 25
    assert stuck.calls == 1 and recorder.seen == []  # the chain is held, the box is not
    stuck.release.set()
    await gw.processing.settle(TIMEOUT)
    assert sum(len(b.positions) for b in recorder.seen) == 25
    await box.close()


async def test_a_failing_handler_does_not_stop_the_others(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    failing = Stuck(fail=True)
    recorder = Recorder(store)
    gw: TcpGateway = await make_gateway(store, handlers=[failing, recorder])
    box = new_box(store, gw)
    await box.connect()
    await box.send_positions(track(10))
    await gw.processing.settle(TIMEOUT)
    assert sum(len(b.positions) for b in recorder.seen) == 10
    assert gw.metrics.processing["failed"] >= 1
    assert gw.health()["processing"]["failed"] >= 1  # type: ignore[index]
    await box.close()


async def test_a_handler_that_times_out_is_counted(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    stuck = Stuck()
    gw: TcpGateway = await make_gateway(store, handlers=[stuck])
    gw.processing._handler_timeout_s = 0.05
    box = new_box(store, gw)
    await box.connect()
    await box.send_positions(track(3))
    await eventually(lambda: gw.metrics.processing["timeout"] == 1)
    await box.close()
