"""Theft cases (docs/theft.md): open, follow, immobilise, close.

Opening a case, in this order:

1. the case and its legal hold are stored together (the repository puts the case on the live
   stream): from then on retention keeps the vehicle's data (storage `TheftRepo`);
2. the box is switched to a fast report interval by a ``set_report_interval`` command through
   the normal command lifecycle (`commands.CommandService`: audited, delivered at once if the
   box is connected, else at its next login, with a long TTL), the command carrying the case's
   id; the interval the box had (`previous_interval`) is kept in the case, to restore it;
3. the suspected-theft alert it comes from is linked to it, and an audit line is written.

The case's timeline starts at the theft, not at the report: at the first suspicious record of
its suspected_theft alert (the towing alarm, the first fix beyond the guard's radius), when
there is one (given, or the vehicle's open one).

Immobilisation is a ``disable_engine_start`` command with all its safety rules (kill switch,
four-eyes, cap, freeze): the box never cuts a running engine, it refuses the next start.
Closing restores the previous interval and sets the end of the hold to the close plus the hold
period (``hold_days``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from commands import (
    CommandError,
    CommandRequest,
    CommandService,
    NotAllowed,
    Requester,
    WrongState,
)
from commands.audit import AuditLines, key_actor
from commands.clock import SYSTEM_CLOCK, Clock
from commands.rules import REPORT_INTERVAL_MAX_S, REPORT_INTERVAL_MIN_S
from storage.errors import Conflict
from storage.models import (
    AlertKind,
    AuditEntry,
    CommandKind,
    CommandRecord,
    CommandState,
    Event,
    LegalHold,
    Position,
    Role,
    TheftCase,
    TheftCaseStatus,
    TheftOutcome,
    VehicleLockState,
    new_id,
)
from storage.repository import Store

log = logging.getLogger(__name__)

# While a case is open the box reports every 10 s: a car at 130 km/h moves 360 m in between.
FAST_INTERVAL_S = 10
# The interval restored when nothing tells what the box had (no command set it, too few
# positions to see it): the GP8 boxes' factory setting.
DEFAULT_INTERVAL_S = 30
# How long the vehicle's data stays held after the case is closed (court proceedings).
HOLD_DAYS = 90
DAY_MS = 86_400_000
# The interval commands wait this long for a box that is off the network (in a garage, a
# shielded container): they go the moment it is back.
COMMAND_TTL_S = 7 * 24 * 3600
# What the case view holds at most; the track export has everything.
TIMELINE_LIMIT = 10_000
# Positions looked at to see the box's interval when no command set it.
_INTERVAL_SAMPLE = 50


@dataclass(frozen=True, slots=True)
class Timeline:
    """A case and everything since its theft started (GET /v1/theft-cases/{id})."""

    case: TheftCase
    positions: list[Position]
    positions_truncated: bool
    events: list[Event]
    commands: list[CommandRecord]
    audit: list[AuditEntry]
    last_position: Position | None
    lock_state: VehicleLockState | None
    online: bool
    now_ms: int


class TheftService:
    def __init__(
        self,
        store: Store,
        commands: CommandService,
        *,
        fast_interval_s: int = FAST_INTERVAL_S,
        default_interval_s: int = DEFAULT_INTERVAL_S,
        hold_days: int = HOLD_DAYS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = store
        self._commands = commands
        self._fast_interval_s = fast_interval_s
        self._default_interval_s = default_interval_s
        self._hold_ms = hold_days * DAY_MS
        self._clock = clock
        self._lines = AuditLines(clock, "api")

    async def open(
        self,
        requester: Requester,
        vehicle_id: str,
        *,
        reported_ms: int | None = None,
        note: str = "",
        alert_id: str | None = None,
    ) -> TheftCase:
        """Open a case (admin). Conflict when the vehicle has one open; NotFound for an unknown
        vehicle or alert; WrongState for an alert about another vehicle."""
        store, fleet_id = self._store, requester.fleet_id
        if requester.role is not Role.ADMIN:
            raise NotAllowed("opening a theft case needs the admin role")
        vehicle = await store.vehicles.get(fleet_id, vehicle_id)
        existing = await store.theft_cases.open_case(fleet_id, vehicle.id)
        if existing is not None:
            raise Conflict(f"vehicle {vehicle.id} has an open theft case: {existing.id}")
        now = self._clock.now_ms()
        alert = None
        if alert_id is not None:
            alert = await store.alerts.get(fleet_id, alert_id)
            if alert.vehicle_id != vehicle.id:
                raise WrongState(f"alert {alert_id} is about another vehicle")
        else:
            found = await store.alerts.open_alerts(
                vehicle_id=vehicle.id, kind=AlertKind.SUSPECTED_THEFT
            )
            alert = next((a for a in reversed(found) if a.fleet_id == fleet_id), None)
        reported = reported_ms if reported_ms is not None else now
        started = reported
        if alert is not None:
            started = min(started, alert.first_ms if alert.first_ms is not None else started)
        case = TheftCase(
            id=new_id("thc"),
            fleet_id=fleet_id,
            vehicle_id=vehicle.id,
            opened_ms=now,
            reported_ms=reported,
            started_ms=started,
            device_id=vehicle.device_id,
            note=note,
            opened_by=requester.key_id,
            alert_id=alert.id if alert is not None else None,
            fast_interval_s=self._fast_interval_s,
            previous_interval_s=await self._current_interval(fleet_id, vehicle.id),
            updated_ms=now,
        )
        hold = LegalHold(case.id, fleet_id, vehicle.id, from_ms=started)
        await store.theft_cases.create(case, hold)
        await self._audit(requester, case, "theft_case.opened", note)
        command = await self._interval(requester, case, self._fast_interval_s, "fast reporting")
        if command is not None:
            case = await self._update(case, interval_command_id=command.id)
        if alert is not None:
            await store.alerts.link_theft_case(fleet_id, alert.id, case.id)
        return case

    async def immobilise(
        self, requester: Requester, case_id: str, reason: str = ""
    ) -> tuple[TheftCase, CommandRecord]:
        """``disable_engine_start`` for the case's vehicle, through all the command safety
        rules (the box refuses the next start; it never stops a running engine)."""
        case = await self._store.theft_cases.get(requester.fleet_id, case_id)
        if case.status is not TheftCaseStatus.OPEN:
            raise WrongState(f"theft case {case.id} is closed")
        command, _ = await self._commands.create(
            requester,
            CommandRequest(
                vehicle_id=case.vehicle_id,
                kind=CommandKind.DISABLE_ENGINE_START,
                ttl_s=COMMAND_TTL_S,
                reason=reason or f"theft case {case.id}",
                theft_case_id=case.id,
            ),
        )
        case = await self._update(case, immobilise_command_id=command.id)
        return case, command

    async def close(
        self, requester: Requester, case_id: str, outcome: TheftOutcome, note: str = ""
    ) -> TheftCase:
        """Close the case: the previous interval is restored, the hold ends after its period."""
        if requester.role is not Role.ADMIN:
            raise NotAllowed("closing a theft case needs the admin role")
        case = await self._store.theft_cases.get(requester.fleet_id, case_id)
        if case.status is not TheftCaseStatus.OPEN:
            raise WrongState(f"theft case {case.id} is already closed")
        now = self._clock.now_ms()
        restore = None
        if case.previous_interval_s is not None:
            restore = await self._interval(
                requester, case, case.previous_interval_s, "back to the usual interval"
            )
        until = now + self._hold_ms
        closed = dataclasses.replace(
            case,
            status=TheftCaseStatus.CLOSED,
            outcome=outcome,
            closed_ms=now,
            closed_by=requester.key_id,
            close_note=note,
            hold_until_ms=until,
            restore_command_id=restore.id if restore is not None else None,
            updated_ms=now,
        )
        hold = LegalHold(case.id, case.fleet_id, case.vehicle_id, case.started_ms, until)
        await self._store.theft_cases.replace(closed, hold)
        await self._audit(requester, closed, "theft_case.closed", f"{outcome.value} {note}".strip())
        return closed

    async def timeline(
        self, fleet_id: str, case_id: str, *, limit: int = TIMELINE_LIMIT
    ) -> Timeline:
        store = self._store
        case = await store.theft_cases.get(fleet_id, case_id)
        now = self._clock.now_ms()
        end = (case.closed_ms if case.closed_ms is not None else now) + 1
        page = await store.telemetry.positions(
            fleet_id, case.vehicle_id, from_ms=case.started_ms, to_ms=end, limit=limit
        )
        events = await store.telemetry.events(
            fleet_id, vehicle_id=case.vehicle_id, from_ms=case.started_ms, to_ms=end, limit=limit
        )
        commands = await store.commands.list(
            fleet_id, vehicle_id=case.vehicle_id, from_ms=case.opened_ms, limit=1000
        )
        audit = await store.audit.list(fleet_id, vehicle_id=case.vehicle_id, from_ms=case.opened_ms)
        vehicle = await store.vehicles.get(fleet_id, case.vehicle_id)
        connection = (
            await store.devices.connection(vehicle.device_id) if vehicle.device_id else None
        )
        return Timeline(
            case=case,
            positions=page.items,
            positions_truncated=page.next_cursor is not None,
            events=events.items,
            commands=[c for c in commands.items if c.theft_case_id == case.id],
            audit=[e for e in audit.items if e.theft_case_id == case.id],
            last_position=await store.telemetry.last_position(fleet_id, case.vehicle_id),
            lock_state=await store.commands.vehicle_state(fleet_id, case.vehicle_id),
            online=bool(connection and connection.online),
            now_ms=now,
        )

    # --- the parts ------------------------------------------------------------------------

    async def _interval(
        self, requester: Requester, case: TheftCase, seconds: int, why: str
    ) -> CommandRecord | None:
        """A set_report_interval for the case; None (audited) when the service refuses it
        (no box fitted, a frozen box): the case stands without it."""
        request = CommandRequest(
            vehicle_id=case.vehicle_id,
            kind=CommandKind.SET_REPORT_INTERVAL,
            params={"seconds": seconds},
            ttl_s=COMMAND_TTL_S,
            reason=f"theft case {case.id}: {why}",
            theft_case_id=case.id,
        )
        try:
            command, _ = await self._commands.create(requester, request)
        except CommandError as exc:
            log.warning("theft case %s: report interval not changed: %s", case.id, exc)
            await self._audit(requester, case, "theft_case.interval_refused", str(exc))
            return None
        return command

    async def _current_interval(self, fleet_id: str, vehicle_id: str) -> int:
        """The box's report interval now: the last one a command outside a theft case set
        and the box acknowledged; else what its recent positions show; else the default."""
        commands = await self._store.commands.list(
            fleet_id,
            vehicle_id=vehicle_id,
            kind=CommandKind.SET_REPORT_INTERVAL,
            status=CommandState.ACKNOWLEDGED,
            limit=1000,
        )
        own = [c for c in commands.items if c.theft_case_id is None]
        if own:
            return own[-1].param
        last = await self._store.telemetry.last_position(fleet_id, vehicle_id)
        if last is not None:
            page = await self._store.telemetry.positions(
                fleet_id,
                vehicle_id,
                from_ms=last.time_ms - 6 * 3_600_000,
                to_ms=last.time_ms + 1,
                limit=10_000,
            )
            seen = interval_of(page.items[-_INTERVAL_SAMPLE:])
            if seen is not None:
                return seen
        return self._default_interval_s

    async def _update(self, case: TheftCase, **changes: object) -> TheftCase:
        updated = dataclasses.replace(case, **changes, updated_ms=self._clock.now_ms())  # type: ignore[arg-type]
        return await self._store.theft_cases.replace(updated)

    async def _audit(self, requester: Requester, case: TheftCase, action: str, detail: str) -> None:
        await self._store.audit.append(
            self._lines.plain(
                case.fleet_id,
                action,
                requester.key_id,
                actor=key_actor(requester.key_id),
                vehicle_id=case.vehicle_id,
                theft_case_id=case.id,
                detail=detail,
            )
        )


def interval_of(positions: Sequence[Position]) -> int | None:
    """The report interval recent positions show: the median gap, in whole seconds within the
    range a box accepts; None below a handful of positions."""
    times = sorted({p.time_ms for p in positions})
    if len(times) < 5:
        return None
    gap_s = round(statistics.median(b - a for a, b in itertools.pairwise(times)) / 1000)
    return max(REPORT_INTERVAL_MIN_S, min(REPORT_INTERVAL_MAX_S, gap_s))
