"""The geofence handler of the processing stage: enter and exit, without flapping.

For each device batch with a ``live`` fix (the newest valid one, None for a late replay, which
therefore never moves a fence's state) it decides the fix against the fleet's fences
(tracking/geofence_index.py, the rule in tracking/geofence_logic.py), stores what changed and
the crossings it committed, and returns a `processing.Signal` per crossing for the handlers
after it (the alert rules):

    Signal(kind="geofence_enter" | "geofence_exit", fleet_id, device_id, vehicle_id, time_ms,
           position=<the fix>, ref=<fence id>,
           data={"name", "speed_limit_kmh", "schedule": GeofenceSchedule | None, "event_id"})

What it holds in memory, and why that is safe:

- a fleet's fences, compiled and indexed, for ``ttl_s`` (30 s): a fence changed by another gp8
  process is used within that; `invalidate` (called by the API of this process on every fence
  write) makes it at once. Only fences whose ``updated_ms`` changed are compiled again, off the
  event loop. If a reload fails, the copy in hand is used and the reload retried shortly.
- each vehicle's states, loaded from storage the first time the vehicle is seen (bounded by a
  timeout) and written back whenever a side or a candidate changes, in the same call as the
  crossing: after a restart a vehicle inside a fence is still inside, and its exit is an exit.
  States are adopted only once stored: a failed write is retried with the next fix.

Like every handler it runs on the stage's one worker, so nothing here needs a lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from processing import DeviceBatch, Signal
from storage.models import Geofence, GeofenceEvent, GeofenceState, Position, new_id
from storage.repository import GeofenceRepo
from tracking.geofence_index import Crossing, FleetFences, observe
from tracking.geofence_logic import CompiledFence

log = logging.getLogger(__name__)

# How long a fleet's fences are used before they are read again (changes made through another
# gp8 process show within this).
FENCES_TTL_S = 30.0
# After a failed reload, the fences in hand are used this long before the next attempt.
RETRY_AFTER_S = 5.0
# One storage call of the handler; the stage bounds a whole handler call at 5 s.
LOAD_TIMEOUT_S = 2.0
SAVE_TIMEOUT_S = 2.0
# Vehicles whose states are kept in memory (least recently seen dropped first, reloaded when
# seen again): a few hundred bytes each.
MAX_CACHED_VEHICLES = 100_000
# Fences read per storage call when a fleet's fences are loaded.
FENCE_PAGE_SIZE = 1000

SIGNAL_KINDS = {"enter": "geofence_enter", "exit": "geofence_exit"}


@dataclass(slots=True)
class _FleetEntry:
    fences: FleetFences
    fresh_until: float


class GeofenceHandler:
    """A `processing.Handler` deciding geofence crossings (module docstring)."""

    name = "geofences"

    def __init__(
        self,
        repo: GeofenceRepo,
        *,
        ttl_s: float = FENCES_TTL_S,
        load_timeout_s: float = LOAD_TIMEOUT_S,
        save_timeout_s: float = SAVE_TIMEOUT_S,
        max_vehicles: int = MAX_CACHED_VEHICLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repo = repo
        self._ttl_s = ttl_s
        self._load_timeout_s = load_timeout_s
        self._save_timeout_s = save_timeout_s
        self._max_vehicles = max_vehicles
        self._clock = clock
        self._fleets: dict[str, _FleetEntry] = {}
        self._vehicles: OrderedDict[str, dict[str, GeofenceState]] = OrderedDict()
        # "crossings", "fence_loads", "fence_load_failures", "fences_invalid", "state_loads"
        self.counters: Counter[str] = Counter()

    async def handle(self, batch: DeviceBatch) -> Sequence[Signal]:
        live = batch.live
        if live is None or live.vehicle_id is None:
            return []
        fences = await self.fleet_fences(batch.fleet_id)
        if not len(fences):
            return []  # no fence in the fleet: no state to load either
        vehicle_id = live.vehicle_id
        states = await self._vehicle_states(batch.fleet_id, vehicle_id)
        _forget_gone(states, fences, vehicle_id)
        seen = observe(fences, states, batch.fleet_id, vehicle_id, live)
        events = [_event(c, live, vehicle_id) for c in seen.crossings]
        if seen.changed:
            async with asyncio.timeout(self._save_timeout_s):
                await self._repo.save(seen.changed, events)
        for state in (*seen.touched, *seen.changed):
            states[state.geofence_id] = state
        self.counters["crossings"] += len(events)
        return [_signal(c, e, live) for c, e in zip(seen.crossings, events, strict=True)]

    def invalidate(self, fleet_id: str | None = None) -> None:
        """Read the fleet's fences (every fleet's with None) again at the next fix."""
        entries = self._fleets.values() if fleet_id is None else [self._fleets.get(fleet_id)]
        for entry in entries:
            if entry is not None:
                entry.fresh_until = 0.0

    async def fleet_fences(self, fleet_id: str) -> FleetFences:
        """The fleet's fences, compiled and indexed, read again when ``ttl_s`` has passed."""
        entry = self._fleets.get(fleet_id)
        now = self._clock()
        if entry is not None and now < entry.fresh_until:
            return entry.fences
        self.counters["fence_loads"] += 1
        try:
            async with asyncio.timeout(self._load_timeout_s):
                stored = await self._load_fences(fleet_id)
        except Exception as exc:
            self.counters["fence_load_failures"] += 1
            if entry is None:
                raise
            log.warning(
                "geofences: reloading fleet %s failed (%r); using its fences", fleet_id, exc
            )
            entry.fresh_until = now + RETRY_AFTER_S
            return entry.fences
        if entry is not None and _unchanged(stored, entry.fences.by_id):
            entry.fresh_until = now + self._ttl_s
            return entry.fences
        previous = entry.fences.by_id if entry is not None else {}
        # Buffering a thousand polygons takes tens of milliseconds: not on the event loop.
        fences = await asyncio.to_thread(self._compile, stored, previous)
        self._fleets[fleet_id] = _FleetEntry(fences, now + self._ttl_s)
        return fences

    async def _load_fences(self, fleet_id: str) -> list[Geofence]:
        stored: list[Geofence] = []
        cursor: str | None = None
        while True:
            page = await self._repo.list(fleet_id, cursor=cursor, limit=FENCE_PAGE_SIZE)
            stored.extend(page.items)
            if page.next_cursor is None:
                return stored
            cursor = page.next_cursor

    def _compile(
        self, stored: list[Geofence], previous: Mapping[str, CompiledFence]
    ) -> FleetFences:
        compiled: list[CompiledFence] = []
        for fence in stored:
            known = previous.get(fence.id)
            if known is not None and known.fence.updated_ms == fence.updated_ms:
                compiled.append(known)
                continue
            try:
                compiled.append(CompiledFence.of(fence))
            except Exception:
                # The API validates every fence; one that still fails (written by hand, by an
                # older gp8) must not blind the fleet's other fences.
                self.counters["fences_invalid"] += 1
                log.exception("geofences: fence %s cannot be used", fence.id)
        return FleetFences(compiled)

    async def _vehicle_states(self, fleet_id: str, vehicle_id: str) -> dict[str, GeofenceState]:
        states = self._vehicles.get(vehicle_id)
        if states is not None:
            self._vehicles.move_to_end(vehicle_id)
            return states
        self.counters["state_loads"] += 1
        async with asyncio.timeout(self._load_timeout_s):
            loaded = await self._repo.states(fleet_id, vehicle_id)
        states = {s.geofence_id: s for s in loaded}
        self._vehicles[vehicle_id] = states
        while len(self._vehicles) > self._max_vehicles:
            self._vehicles.popitem(last=False)
        return states


def _unchanged(stored: list[Geofence], previous: Mapping[str, CompiledFence]) -> bool:
    return len(stored) == len(previous) and all(
        (known := previous.get(f.id)) is not None and known.fence.updated_ms == f.updated_ms
        for f in stored
    )


def _forget_gone(states: dict[str, GeofenceState], fences: FleetFences, vehicle_id: str) -> None:
    """Drop the states of fences deleted or no longer applied to the vehicle (storage dropped
    them too): were the vehicle added back, it starts outside, not with a stale side."""
    for fence_id in [f for f in states if f not in fences.by_id]:
        del states[fence_id]
    for fence_id in [f for f in states if not fences.by_id[f].applies_to(vehicle_id)]:
        del states[fence_id]


def _event(crossing: Crossing, fix: Position, vehicle_id: str) -> GeofenceEvent:
    return GeofenceEvent(
        id=new_id("gfe"),
        fleet_id=fix.fleet_id,
        vehicle_id=vehicle_id,
        device_id=fix.device_id,
        geofence_id=crossing.fence.id,
        kind=crossing.kind,
        time_ms=fix.time_ms,
        lat=fix.lat,
        lon=fix.lon,
    )


def _signal(crossing: Crossing, event: GeofenceEvent, fix: Position) -> Signal:
    fence = crossing.fence.fence
    return Signal(
        kind=SIGNAL_KINDS[crossing.kind.value],
        fleet_id=fix.fleet_id,
        device_id=fix.device_id,
        vehicle_id=event.vehicle_id,
        time_ms=fix.time_ms,
        position=fix,
        ref=fence.id,
        data={
            "name": fence.name,
            "speed_limit_kmh": fence.speed_limit_kmh,
            "schedule": fence.schedule,
            "event_id": event.id,
        },
    )
