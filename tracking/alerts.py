"""The alert rules handler of the processing stage (after the geofence handler, whose crossing
signals it acts on): it decides each vehicle's batch with tracking/rules_logic.py and stores
the incidents, one open alert per incident (`AlertRepo.trigger` updates the open one, and
`close_incident` closes it when its condition clears). The repository puts every change on the
live stream, so alerts reach stream clients and webhooks with no further step.

What it holds in memory, per vehicle: the rules' context (when a sustained condition began,
the fences the vehicle is in: read back from the geofence states the first time the vehicle is
seen) and which incidents it believes open (read from storage then too), so a fix that clears
nothing costs no write. A belief gone stale (a user closed the alert) costs one write that
finds nothing, or makes the next trigger open a new alert, which is what a closed alert means.

Like every handler it runs on the stage's one worker, so nothing here needs a lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

from processing import DeviceBatch, Signal
from storage.errors import StorageError
from storage.models import (
    Alert,
    AlertKind,
    Event,
    FenceSide,
    Position,
    Severity,
    new_id,
    now_ms,
)
from storage.repository import Store
from tracking.rules import RuleBook
from tracking.rules_logic import Clear, FenceInfo, Trigger, VehicleContext, coalesce, evaluate

log = logging.getLogger(__name__)

# One storage call of the handler; the stage bounds a whole handler call at 5 s.
CALL_TIMEOUT_S = 2.0
# Vehicles whose context is kept (least recently seen dropped first, read again when seen).
MAX_CACHED_VEHICLES = 100_000

OpenSet = set[tuple[AlertKind, str | None]]


def incident(
    fleet_id: str,
    vehicle_id: str | None,
    device_id: str | None,
    kind: AlertKind,
    *,
    at_ms: int,
    time_ms: int,
    detail: str,
    severity: Severity,
    rule_id: str | None = None,
    ref: str | None = None,
    position: Position | None = None,
    count: int = 1,
    first_ms: int | None = None,
) -> Alert:
    """The alert a trigger stores: new, or folded into the open one by `AlertRepo.trigger`."""
    return Alert(
        id=new_id("alr"),
        fleet_id=fleet_id,
        kind=kind,
        raised_ms=at_ms,
        device_id=device_id,
        vehicle_id=vehicle_id,
        detail=detail,
        severity=severity,
        rule_id=rule_id,
        ref=ref,
        count=count,
        first_ms=first_ms if first_ms is not None else time_ms,
        last_ms=time_ms,
        lat=position.lat if position is not None else None,
        lon=position.lon if position is not None else None,
        speed_kmh=position.speed_kmh if position is not None else None,
        updated_ms=at_ms,
    )


def fresh_fixes(batch: DeviceBatch, checked_ms: int) -> list[Position]:
    """The batch's valid fixes newer than every fix decided before; none for a late replay
    (``live`` None), so a record buffered for hours never decides the vehicle's state now."""
    live = batch.live
    if live is None:
        return []
    return [p for p in batch.positions if p.fix_valid and checked_ms < p.time_ms <= live.time_ms]


class AlertRulesHandler:
    """A `processing.Handler` raising and closing the alert rules' incidents."""

    name = "alert_rules"

    def __init__(
        self,
        store: Store,
        rule_book: RuleBook,
        *,
        call_timeout_s: float = CALL_TIMEOUT_S,
        max_vehicles: int = MAX_CACHED_VEHICLES,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._rules = rule_book
        self._timeout_s = call_timeout_s
        self._max_vehicles = max_vehicles
        self._wall_ms = wall_ms
        self._vehicles: OrderedDict[str, tuple[VehicleContext, OpenSet]] = OrderedDict()
        self.counters: Counter[str] = Counter()  # "raised", "updated", "closed", "failed"

    async def handle(self, batch: DeviceBatch) -> Sequence[Event | Signal]:
        vehicle_id = batch.vehicle_id
        if vehicle_id is None:  # an unfitted box: alerts are about vehicles
            return ()
        fleet = await self._rules.get(batch.fleet_id)
        ctx, open_ = await self._vehicle(batch.fleet_id, vehicle_id)
        actions, new_ctx = evaluate(
            fleet.rules,
            fleet.policy,
            ctx,
            vehicle_id,
            fresh=fresh_fixes(batch, ctx.checked_ms),
            events=batch.events,
            signals=batch.signals,
        )
        self._remember(vehicle_id, new_ctx, open_)
        for action in coalesce(actions):
            if isinstance(action, Trigger):
                await self._trigger(batch, vehicle_id, action, open_)
            elif (action.kind, action.ref) in open_:
                await self._clear(batch, vehicle_id, action, open_)
        return ()

    async def _trigger(
        self, batch: DeviceBatch, vehicle_id: str, trigger: Trigger, open_: OpenSet
    ) -> None:
        alert = incident(
            batch.fleet_id,
            vehicle_id,
            batch.device_id,
            trigger.kind,
            at_ms=self._wall_ms(),
            time_ms=trigger.time_ms,
            detail=trigger.detail,
            severity=trigger.rule.severity,
            rule_id=trigger.rule.id,
            ref=trigger.ref,
            position=trigger.position,
            count=trigger.count,
            first_ms=trigger.first_ms,
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                _, new = await self._store.alerts.trigger(alert)
        except (StorageError, TimeoutError) as exc:
            self.counters["failed"] += 1
            log.warning("alert rules: %s for %s not stored: %r", trigger.kind, vehicle_id, exc)
            return
        open_.add((trigger.kind, trigger.ref))
        self.counters["raised" if new else "updated"] += 1

    async def _clear(
        self, batch: DeviceBatch, vehicle_id: str, clear: Clear, open_: OpenSet
    ) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._store.alerts.close_incident(
                    batch.fleet_id,
                    vehicle_id=vehicle_id,
                    device_id=batch.device_id,
                    kind=clear.kind,
                    ref=clear.ref,
                    at_ms=self._wall_ms(),
                    reason=clear.reason,
                )
        except (StorageError, TimeoutError) as exc:  # tried again at the next clearing fix
            self.counters["failed"] += 1
            log.warning("alert rules: %s for %s not closed: %r", clear.kind, vehicle_id, exc)
            return
        open_.discard((clear.kind, clear.ref))
        self.counters["closed"] += 1

    async def _vehicle(self, fleet_id: str, vehicle_id: str) -> tuple[VehicleContext, OpenSet]:
        held = self._vehicles.get(vehicle_id)
        if held is not None:
            self._vehicles.move_to_end(vehicle_id)
            return held
        async with asyncio.timeout(self._timeout_s):
            alerts = await self._store.alerts.open_alerts(vehicle_id=vehicle_id)
            inside = await self._inside(fleet_id, vehicle_id)
        open_ = {(a.kind, a.ref) for a in alerts if a.fleet_id == fleet_id}
        ctx = VehicleContext(inside=inside)
        self._remember(vehicle_id, ctx, open_)
        return ctx, open_

    async def _inside(self, fleet_id: str, vehicle_id: str) -> dict[str, FenceInfo]:
        """The fences the geofence handler has the vehicle inside, for limits and hours."""
        repo = self._store.geofences
        inside: dict[str, FenceInfo] = {}
        for state in await repo.states(fleet_id, vehicle_id):
            if state.side is not FenceSide.INSIDE:
                continue
            try:
                fence = await repo.get(fleet_id, state.geofence_id)
            except StorageError:
                continue
            inside[fence.id] = FenceInfo(
                fence.id, fence.name, fence.speed_limit_kmh, fence.schedule
            )
        return inside

    def _remember(self, vehicle_id: str, ctx: VehicleContext, open_: OpenSet) -> None:
        self._vehicles[vehicle_id] = (ctx, open_)
        self._vehicles.move_to_end(vehicle_id)
        while len(self._vehicles) > self._max_vehicles:
            self._vehicles.popitem(last=False)
