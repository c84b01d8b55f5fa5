"""The box_offline rule: a periodic sweep over the boxes' connections (docs/alerts.md).

Nothing arrives from a box that went silent, so no processing handler can notice it: every
``interval_s`` (60 s) this service looks at each fleet that has a box_offline rule, opens a
box_offline alert for each box disconnected for longer than the rule's ``offline_minutes``
(one per incident, first_seen = when it went offline), and closes the open ones whose box is
connected again. Every gp8 process may run it: two sweeps finding the same box make one alert
(`AlertRepo.trigger`), and closing twice closes once.

Cost: one connection read per box of a fleet with the rule, per sweep (a few thousand small
reads a minute for a large fleet); a box that never connected is not "offline".
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from runtime import Periodic
from storage.errors import StorageError
from storage.models import (
    SEVERITY_RANK,
    AlertKind,
    AlertRule,
    AlertRuleType,
    Device,
    DeviceConnection,
    now_ms,
)
from storage.repository import Store
from tracking.alerts import incident
from tracking.rules import RuleBook
from tracking.rules_logic import applies, effective

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 60.0
# A whole sweep of one fleet; a slow database makes the next sweep try again.
FLEET_TIMEOUT_S = 30.0
PAGE = 1000


@dataclass(frozen=True, slots=True)
class OfflineDecision:
    """What the sweep does about one box: raise (with the rule), close, or nothing."""

    raise_rule: AlertRule | None = None
    close: bool = False


def decide(
    rules: list[AlertRule],
    device: Device,
    connection: DeviceConnection | None,
    *,
    is_open: bool,
    now: int,
) -> OfflineDecision:
    """Pure: the box's state against the fleet's box_offline rules."""
    if connection is None:  # never connected: nothing to miss yet
        return OfflineDecision(close=is_open)
    if connection.online:
        return OfflineDecision(close=is_open)
    offline_ms = now - connection.since_ms
    reached = [
        r
        for r in (effective(r) for r in rules)
        if r.type is AlertRuleType.BOX_OFFLINE
        and applies(r, device.vehicle_id or "")
        and offline_ms >= (r.offline_minutes or 0) * 60_000
    ]
    if not reached or is_open:
        return OfflineDecision()
    return OfflineDecision(raise_rule=max(reached, key=lambda r: SEVERITY_RANK[r.severity]))


class OfflineSweep:
    def __init__(
        self,
        store: Store,
        rule_book: RuleBook,
        *,
        interval_s: float = SWEEP_INTERVAL_S,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._rules = rule_book
        self._interval_s = interval_s
        self._wall_ms = wall_ms
        self._job = Periodic("offline-sweep", self.sweep, interval_s)
        self.counters: Counter[str] = Counter()  # "raised", "closed", "failed", "sweeps"

    async def start(self) -> None:
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def sweep(self) -> None:
        """One pass over every fleet."""
        self.counters["sweeps"] += 1
        cursor = None
        while True:
            page = await self._store.fleets.list(cursor=cursor, limit=PAGE)
            for fleet in page.items:
                try:
                    async with asyncio.timeout(FLEET_TIMEOUT_S):
                        await self.sweep_fleet(fleet.id)
                except (StorageError, TimeoutError) as exc:
                    self.counters["failed"] += 1
                    log.warning("offline sweep of fleet %s: %r", fleet.id, exc)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def sweep_fleet(self, fleet_id: str) -> None:
        store = self._store
        rules = [r for r in (await self._rules.get(fleet_id)).rules if r.enabled]
        offline_rules = [r for r in rules if r.type is AlertRuleType.BOX_OFFLINE]
        open_alerts = await store.alerts.list(
            fleet_id, kinds=[AlertKind.BOX_OFFLINE], open_only=True, limit=10_000
        )
        open_devices = {a.device_id for a in open_alerts.items}
        if not offline_rules and not open_devices:
            return
        now = self._wall_ms()
        cursor = None
        while True:
            page = await store.devices.list(fleet_id, cursor=cursor, limit=PAGE)
            for device in page.items:
                is_open = device.id in open_devices
                if not offline_rules and not is_open:
                    continue
                connection = await store.devices.connection(device.id)
                decision = decide(offline_rules, device, connection, is_open=is_open, now=now)
                if decision.raise_rule is not None and connection is not None:
                    await self._raise(device, connection, decision.raise_rule, now)
                elif decision.close:
                    await self._close(device, now)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _raise(
        self, device: Device, connection: DeviceConnection, rule: AlertRule, now: int
    ) -> None:
        hours = (now - connection.since_ms) / 3_600_000
        alert = incident(
            device.fleet_id,
            device.vehicle_id,
            device.id,
            AlertKind.BOX_OFFLINE,
            at_ms=now,
            time_ms=connection.since_ms,
            detail=f"box {device.imei} offline for {hours:.1f} h",
            severity=rule.severity,
            rule_id=rule.id,
        )
        await self._store.alerts.trigger(alert)
        self.counters["raised"] += 1

    async def _close(self, device: Device, now: int) -> None:
        closed = await self._store.alerts.close_incident(
            device.fleet_id,
            vehicle_id=device.vehicle_id,
            device_id=device.id,
            kind=AlertKind.BOX_OFFLINE,
            ref=None,
            at_ms=now,
            reason="box back online",
        )
        if closed is not None:
            self.counters["closed"] += 1
