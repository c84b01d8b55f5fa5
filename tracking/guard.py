"""The parked guard on the processing stage, and a manager's arm/disarm (docs/theft.md).

`GuardHandler` runs the state machine of tracking/guard_logic.py over each vehicle's batch
(its alarm events, whatever their age, and its fresh fixes, in device time order), stores the
guard's state when more than its ``checked_ms`` changed, and opens or updates the vehicle's
suspected_theft alert (`AlertRepo.trigger`: one alert per incident) on the first record that
shows the vehicle being taken: within one report interval of it.

Guard states are saved compare-and-set on their revision (storage `GuardRepo.save`): a
manager's disarm through the API (`set_guard`, any gp8 process) and the handler never overwrite
each other; the handler re-reads a vehicle's state every ``ttl_s`` (5 s), whenever a save
lost, and before it updates the alert of a guard that was triggered already (no save then
tells it), and decides its batch again on what it read. The alert is written after the state:
a disarm that came first means no alert.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

from processing import DeviceBatch, Signal
from storage.errors import StorageError
from storage.models import (
    SEVERITY_RANK,
    AlertKind,
    AlertRuleType,
    Event,
    GuardState,
    GuardStatus,
    Position,
    Severity,
    now_ms,
)
from storage.repository import Store
from tracking.alerts import fresh_fixes, incident
from tracking.guard_logic import GuardParams, Step, Suspicion, manual, on_alarm, on_fix
from tracking.rules import RuleBook
from tracking.rules_logic import applies

log = logging.getLogger(__name__)

# A vehicle's guard state is read again after this long (a manager's change shows within it).
GUARD_TTL_S = 5.0
# One storage call; the stage bounds a whole handler call at 5 s.
CALL_TIMEOUT_S = 2.0
# Saves tried per batch when another writer keeps coming first.
SAVE_ATTEMPTS = 3
MAX_CACHED_VEHICLES = 100_000
SYSTEM = "system"


def run(
    state: GuardState, params: GuardParams, fixes: Sequence[Position], events: Sequence[Event]
) -> tuple[GuardState, list[Suspicion], str | None]:
    """The guard over a batch, alarms and fixes in device time order: the final state, the
    suspicions (what opens or updates the alert), and why it was resolved, if it was."""
    items: list[tuple[int, int, Position | Event]] = [
        *((e.time_ms, 0, e) for e in events),
        *((p.time_ms, 1, p) for p in fixes),
    ]
    items.sort(key=lambda item: (item[0], item[1]))
    suspicions: list[Suspicion] = []
    resolved: str | None = None
    for _, _, item in items:
        step: Step = (
            on_alarm(state, item) if isinstance(item, Event) else on_fix(state, item, params)
        )
        state = step.state
        if step.suspicion is not None:
            suspicions.append(step.suspicion)
        if step.resolved is not None:
            resolved, suspicions = step.resolved, []
    return state, suspicions, resolved


class GuardHandler:
    """A `processing.Handler` running each vehicle's parked guard (module docstring)."""

    name = "parked_guard"

    def __init__(
        self,
        store: Store,
        rule_book: RuleBook,
        *,
        ttl_s: float = GUARD_TTL_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        max_vehicles: int = MAX_CACHED_VEHICLES,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._rules = rule_book
        self._ttl_s = ttl_s
        self._timeout_s = call_timeout_s
        self._max_vehicles = max_vehicles
        self._clock = clock
        self._wall_ms = wall_ms
        self._states: OrderedDict[str, tuple[float, GuardState]] = OrderedDict()
        self.counters: Counter[str] = Counter()  # "armed", "triggered", "disarmed", "failed"

    async def handle(self, batch: DeviceBatch) -> Sequence[Event | Signal]:
        vehicle_id = batch.vehicle_id
        if vehicle_id is None:
            return ()
        fleet = await self._rules.get(batch.fleet_id)
        guards = [
            r
            for r in fleet.rules
            if r.type is AlertRuleType.PARKED_GUARD and applies(r, vehicle_id)
        ]
        if not guards:
            return ()
        rule = max(guards, key=lambda r: SEVERITY_RANK[r.severity])
        params = GuardParams.of(rule, fleet.policy)
        for attempt in range(SAVE_ATTEMPTS):
            state, read = await self._state(batch.fleet_id, vehicle_id, fresh=attempt > 0)
            fixes = fresh_fixes(batch, state.checked_ms)
            decided, suspicions, resolved = run(state, params, fixes, batch.events)
            new = await self._save(state, decided, batch.device_id)
            if new is None:
                continue  # someone else (a manager) changed it: decide again on theirs
            # Triggered already, nothing written: no compare-and-set told whether a manager
            # disarmed it meanwhile. An alert is worth one read to make sure.
            unsure = suspicions and new.revision == state.revision and not read
            if unsure and not await self._unchanged(state):
                continue
            if suspicions:
                await self._suspect(new, rule.id, rule.severity, suspicions)
            if resolved is not None:
                await self._resolve(new, resolved)
            return ()
        self.counters["failed"] += 1
        log.warning("parked guard of %s: state kept changing, batch not decided", vehicle_id)
        return ()

    async def _state(
        self, fleet_id: str, vehicle_id: str, *, fresh: bool
    ) -> tuple[GuardState, bool]:
        """The vehicle's state, and whether it was just read from storage."""
        held = self._states.get(vehicle_id)
        if held is not None and not fresh and self._clock() < held[0]:
            self._states.move_to_end(vehicle_id)
            return held[1], False
        async with asyncio.timeout(self._timeout_s):
            stored = await self._store.guards.get(fleet_id, vehicle_id)
        state = stored or GuardState(fleet_id, vehicle_id)
        if held is not None and held[1].checked_ms > state.checked_ms:
            # checked_ms alone is not saved (it changes with every fix): keep ours.
            state = dataclasses.replace(state, checked_ms=held[1].checked_ms)
        self._remember(state)
        return state, True

    async def _unchanged(self, state: GuardState) -> bool:
        """Whether the stored state is still ``state``'s revision (else the cache is dropped)."""
        async with asyncio.timeout(self._timeout_s):
            stored = await self._store.guards.get(state.fleet_id, state.vehicle_id)
        if (stored.revision if stored is not None else 0) == state.revision:
            return True
        self._states.pop(state.vehicle_id, None)
        return False

    async def _save(self, old: GuardState, new: GuardState, device_id: str) -> GuardState | None:
        """Store ``new`` if it differs from ``old`` in more than checked_ms; the state in force
        after it (with its new revision), or None when another writer came first (then the
        cached state is dropped)."""
        if dataclasses.replace(new, checked_ms=old.checked_ms) == old:
            self._remember(new)
            return new
        new = dataclasses.replace(
            new, device_id=device_id, updated_ms=self._wall_ms(), updated_by=SYSTEM
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                saved = await self._store.guards.save(new, expected_revision=old.revision)
        except (StorageError, TimeoutError) as exc:
            # Not adopted (the cache keeps the old one): the next batch decides again; the alert
            # is stored all the same, one per incident.
            self.counters["failed"] += 1
            log.warning("parked guard of %s not saved: %r", new.vehicle_id, exc)
            return new
        if saved is None:
            self._states.pop(new.vehicle_id, None)
            return None
        if saved.status is not old.status:
            self.counters[saved.status.value] += 1
            log.info("parked guard of %s: %s (%s)", saved.vehicle_id, saved.status, saved.reason)
        self._remember(saved)
        return saved

    async def _suspect(
        self, state: GuardState, rule_id: str, severity: Severity, suspicions: Sequence[Suspicion]
    ) -> None:
        first, last = suspicions[0], suspicions[-1]
        alert = incident(
            state.fleet_id,
            state.vehicle_id,
            state.device_id,
            AlertKind.SUSPECTED_THEFT,
            at_ms=self._wall_ms(),
            time_ms=last.time_ms,
            detail=last.detail if len(suspicions) > 1 else first.detail,
            severity=severity,
            rule_id=rule_id,
            position=last.position,
            count=len(suspicions),
            first_ms=first.time_ms,
        )
        if len(suspicions) > 1 and state.alert_id is None:
            alert = dataclasses.replace(alert, detail=f"{first.detail}; then {last.detail}")
        try:
            async with asyncio.timeout(self._timeout_s):
                stored, _ = await self._store.alerts.trigger(alert)
        except (StorageError, TimeoutError) as exc:
            # The guard stays triggered: its next suspicious record stores the alert.
            self.counters["failed"] += 1
            log.warning("suspected theft of %s not stored: %r", state.vehicle_id, exc)
            return
        if state.alert_id != stored.id:
            linked = dataclasses.replace(state, alert_id=stored.id)
            await self._save(state, linked, state.device_id or "")

    async def _resolve(self, state: GuardState, reason: str) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._store.alerts.close_incident(
                    state.fleet_id,
                    vehicle_id=state.vehicle_id,
                    device_id=state.device_id,
                    kind=AlertKind.SUSPECTED_THEFT,
                    ref=None,
                    at_ms=self._wall_ms(),
                    reason=reason,
                )
        except (StorageError, TimeoutError) as exc:
            self.counters["failed"] += 1
            log.warning("suspected theft of %s not closed: %r", state.vehicle_id, exc)

    def _remember(self, state: GuardState) -> None:
        self._states[state.vehicle_id] = (self._clock() + self._ttl_s, state)
        self._states.move_to_end(state.vehicle_id)
        while len(self._states) > self._max_vehicles:
            self._states.popitem(last=False)

    def invalidate(self, vehicle_id: str) -> None:
        self._states.pop(vehicle_id, None)


async def get_guard(store: Store, fleet_id: str, vehicle_id: str) -> GuardState:
    """The vehicle's guard (disarmed when never stored). NotFound for another fleet's vehicle."""
    await store.vehicles.get(fleet_id, vehicle_id)
    return await store.guards.get(fleet_id, vehicle_id) or GuardState(fleet_id, vehicle_id)


async def set_guard(
    store: Store, fleet_id: str, vehicle_id: str, *, armed: bool, by: str, at_ms: int
) -> GuardState:
    """A manager arms the guard around the vehicle's last position, or disarms it (and the
    open suspected_theft alert closes). ValueError when arming a vehicle never seen."""
    for _ in range(SAVE_ATTEMPTS):
        state = await get_guard(store, fleet_id, vehicle_id)
        where = await store.telemetry.last_position(fleet_id, vehicle_id) if armed else None
        changed = manual(state, armed=armed, at_ms=at_ms, by=by, where=where)
        saved = await store.guards.save(changed, expected_revision=state.revision)
        if saved is None:
            continue
        if not armed and state.status is GuardStatus.TRIGGERED:
            await store.alerts.close_incident(
                fleet_id,
                vehicle_id=vehicle_id,
                device_id=state.device_id,
                kind=AlertKind.SUSPECTED_THEFT,
                ref=None,
                at_ms=at_ms,
                reason=f"guard disarmed by {by}",
            )
        return saved
    raise StorageError(f"parked guard of {vehicle_id}: too many concurrent changes")
