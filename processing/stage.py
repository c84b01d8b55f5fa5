"""The processing stage: small handlers that run on what was just durably stored.

The ingest pipeline hands every successful flush to `ProcessingStage.offer` *after* resolving
the flush's submissions, so no ACK ever waits for processing. The stage groups the records by
device, orders each device's records by device time and gives every handler a `DeviceBatch`:

- ``positions`` and ``events`` in device time order, and
- ``live``: the batch's newest valid fix if it is newer than every fix processed before for
  that device, else None. Rules about a vehicle's *current* state (geofence membership, the
  parked guard) look at ``live`` only, so a record buffered offline and replayed hours later is
  kept in history but never flips live state.

One worker task runs the handlers batch after batch, in the order the batches were stored, so a
device's batches are seen in order. Each handler call is bounded by ``handler_timeout_s``; a
handler that fails or times out is counted and logged, and the other handlers still run on the
batch. Derived events a handler returns are submitted to the pipeline like any record (durable,
idempotent on (device, time, code)) and are not processed again, so a handler cannot loop on its
own output; derived signals (e.g. a geofence crossing) are handed, in memory, to the handlers
after it in the chain for the same batch.

Bounded memory: at most ``queue_limit`` records wait. A flush arriving beyond that is dropped
from processing and counted (``processing{result="dropped"}``): its records are stored and
acknowledged; only what handlers would have derived from them is lost. Like Traccar's handler
chain, but a handler here can delay no ACK and lose no record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Protocol

from storage.models import Event, Position, StoreResult

log = logging.getLogger(__name__)

# Records waiting for the handlers, at most: a few seconds of a busy gateway's ingest.
QUEUE_LIMIT = 200_000
# One handler call on one device's batch; a handler needing longer is broken or blocked.
HANDLER_TIMEOUT_S = 5.0
# Reading a vehicle's last stored fix (first sight of a device after a start) gives up then.
LOOKUP_TIMEOUT_S = 2.0
# stop() waits this long for the batches already queued.
STOP_GRACE_S = 5.0

_TIME = attrgetter("time_ms")


@dataclass(frozen=True, slots=True)
class Signal:
    """A fact a handler derived for the handlers after it in the chain, in memory: e.g. a
    geofence crossing, which the alert rules then act on. The stage does not store signals;
    the handler that makes one keeps whatever record of it it needs."""

    kind: str  # "geofence_enter", "geofence_exit", ...
    fleet_id: str
    device_id: str
    vehicle_id: str | None
    time_ms: int
    position: Position | None = None
    ref: str | None = None  # what it is about (a geofence id, ...)
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    """What one flush stored for one device, as a handler sees it."""

    fleet_id: str
    device_id: str
    positions: tuple[Position, ...]  # device time order
    events: tuple[Event, ...]  # device time order
    live: Position | None  # the newest valid fix, if newer than all processed before
    signals: tuple[Signal, ...] = ()  # what the handlers before this one derived

    @property
    def vehicle_id(self) -> str | None:
        """The vehicle of the newest record (a batch rarely spans a refitting)."""
        newest_p = self.positions[-1] if self.positions else None
        newest_e = self.events[-1] if self.events else None
        if newest_p is None or (newest_e is not None and newest_e.time_ms > newest_p.time_ms):
            return newest_e.vehicle_id if newest_e is not None else None
        return newest_p.vehicle_id


class Handler(Protocol):
    """One step of the chain: looks at a device's batch, returns what it derived (often
    nothing): events, which the stage stores, and signals, which the handlers after it see.

    Handlers keep no locks and do no I/O on the hot path: whatever they need (rules, fences)
    they hold in memory. A resent record (a box resending a frame whose ACK it missed) is
    stored once and reaches the handlers once; after a gp8 restart, the flush that was being
    processed may be seen again, so handlers still keep their effects idempotent.
    """

    name: str

    async def handle(self, batch: DeviceBatch) -> Sequence[Event | Signal]: ...


Submit = Callable[[Sequence[Position], Sequence[Event]], Awaitable[None]]
# (fleet_id, vehicle_id) → the time of the vehicle's newest stored fix, or None: what tells a
# late replay from live data for a device the stage has not seen since it started.
LastFix = Callable[[str, str], Awaitable[int | None]]


class ProcessingStage:
    def __init__(
        self,
        handlers: Sequence[Handler] = (),
        *,
        submit: Submit | None = None,
        counters: Counter[str] | None = None,
        queue_limit: int = QUEUE_LIMIT,
        handler_timeout_s: float = HANDLER_TIMEOUT_S,
        last_fix: LastFix | None = None,
    ) -> None:
        self.handlers = list(handlers)
        self._last_fix = last_fix
        self._submit = submit
        # results: batches "handled", handler "failed"/"timeout", flushes "dropped", and
        # "derived" events submitted
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._queue_limit = queue_limit
        self._handler_timeout_s = handler_timeout_s
        self._queue: deque[tuple[Sequence[Position], Sequence[Event]]] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._newest: dict[str, int] = {}  # device id → time of the newest fix processed
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._busy = False

    def add(self, handler: Handler) -> None:
        self.handlers.append(handler)

    @property
    def pending(self) -> int:
        """Records offered and not yet processed."""
        return self._queued

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gp8-processing")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Process what is queued (for up to ``grace_s``), then stop."""
        self._closing = True
        self._wakeup.set()
        task = self._task
        if task is None:
            return
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("processing: stop timed out with %d records queued", self._queued)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def offer(
        self,
        positions: Sequence[Position],
        events: Sequence[Event],
        result: StoreResult | None = None,
    ) -> None:
        """Called by the pipeline once these records are durable. Never blocks. Records the
        store reports as resends (``result``) were processed when first stored: left out."""
        if not self.handlers or self._closing:
            return
        if result is not None:
            positions = result.new_positions(positions)
            events = result.new_events(events)
        if not (positions or events):
            return
        size = len(positions) + len(events)
        if self._queued and self._queued + size > self._queue_limit:
            self.counters["dropped"] += 1
            log.warning("processing: queue full, %d stored records not processed", size)
            return
        self._queue.append((positions, events))
        self._queued += size
        self._wakeup.set()

    async def settle(self, timeout_s: float = 5.0) -> None:
        """Wait until everything offered so far has been processed (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._queued or self._busy:  # noqa: ASYNC110 - polling our own queue
                await asyncio.sleep(0.005)

    async def _run(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            positions, events = self._queue.popleft()
            self._busy = True
            try:
                await self._process(positions, events)
            except Exception:  # a bug here must not end processing for good
                log.exception("processing: a batch failed")
            finally:
                self._queued -= len(positions) + len(events)
                self._busy = False

    async def _process(self, positions: Sequence[Position], events: Sequence[Event]) -> None:
        derived: list[Event] = []
        await self._remember(positions)
        for batch in self.batches(positions, events):
            for handler in self.handlers:
                signals: list[Signal] = []
                for item in await self._call(handler, batch):
                    if isinstance(item, Signal):
                        signals.append(item)
                    else:
                        derived.append(item)
                if signals:
                    batch = replace(batch, signals=(*batch.signals, *signals))
            self.counters["handled"] += 1
        if derived and self._submit is not None:
            try:
                await self._submit((), derived)
            except Exception as exc:
                self.counters["derived_failed"] += len(derived)
                log.warning("processing: %d derived events not stored: %r", len(derived), exc)
            else:
                self.counters["derived"] += len(derived)

    async def _remember(self, positions: Sequence[Position]) -> None:
        """After a restart the stage knows no device's newest fix: ask the store for the
        vehicles it meets first, so a box's first batch, if it is an old replay, is not
        taken for live (the store's last position is at least the batch's newest if live)."""
        if self._last_fix is None:
            return
        unknown: dict[str, Position] = {}
        for p in positions:
            if p.fix_valid and p.vehicle_id is not None and p.device_id not in self._newest:
                held = unknown.get(p.device_id)
                if held is None or p.time_ms > held.time_ms:
                    unknown[p.device_id] = p
        for device_id, newest in unknown.items():
            assert newest.vehicle_id is not None
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                    stored = await self._last_fix(newest.fleet_id, newest.vehicle_id)
            except Exception as exc:  # unknown stays unknown: the batch counts as live
                log.info("processing: last fix of %s unavailable: %r", device_id, exc)
                continue
            if stored is not None and stored > newest.time_ms:
                self._newest[device_id] = stored

    def batches(self, positions: Sequence[Position], events: Sequence[Event]) -> list[DeviceBatch]:
        """Group a flush by device, in device time order; decide each batch's ``live`` fix."""
        by_device: dict[str, tuple[list[Position], list[Event]]] = {}
        for p in positions:
            by_device.setdefault(p.device_id, ([], []))[0].append(p)
        for e in events:
            by_device.setdefault(e.device_id, ([], []))[1].append(e)
        out = []
        for device_id, (ps, es) in by_device.items():
            ps.sort(key=_TIME)
            es.sort(key=_TIME)
            live = None
            newest = next((p for p in reversed(ps) if p.fix_valid), None)
            if newest is not None and newest.time_ms > self._newest.get(device_id, -1):
                self._newest[device_id] = newest.time_ms
                live = newest
            fleet_id = ps[0].fleet_id if ps else es[0].fleet_id
            out.append(DeviceBatch(fleet_id, device_id, tuple(ps), tuple(es), live))
        return out

    async def _call(self, handler: Handler, batch: DeviceBatch) -> Sequence[Event | Signal]:
        try:
            async with asyncio.timeout(self._handler_timeout_s):
                return await handler.handle(batch)
        except TimeoutError:
            self.counters["timeout"] += 1
            log.warning("processing: handler %s timed out on %s", handler.name, batch.device_id)
        except Exception:
            self.counters["failed"] += 1
            log.exception("processing: handler %s failed on %s", handler.name, batch.device_id)
        return ()
