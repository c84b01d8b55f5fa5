"""The API's use cases: request, cancel and approve commands; fleet policies, the kill switch,
clearing alerts (docs/commands.md, "API" and "Safety").

Every refusal raises a `commands.errors.CommandError`; a refusal by a safety rule (freeze, kill
switch, cap) is written to the audit log first, because a blocked immobilization attempt is
worth a line too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

from commands import rules
from commands.alerts import HOUR_MS, Alerts
from commands.audit import describe, key_actor
from commands.context import CommandContext
from commands.delivery import Delivery
from commands.errors import (
    EngineStartCapReached,
    ImmobilizationSuspended,
    NoBoxFitted,
    NotAllowed,
    VehicleFrozen,
    WrongState,
)
from commands.kill_switch import KillSwitchView
from commands.locks import KeyedLocks
from storage.errors import StorageError
from storage.models import (
    Alert,
    CommandChanges,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    KillSwitch,
    Role,
    new_id,
)


@dataclass(frozen=True, slots=True)
class Requester:
    """The API key behind a request."""

    key_id: str
    fleet_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class CommandRequest:
    vehicle_id: str
    kind: CommandKind
    params: Mapping[str, object] = field(default_factory=dict)
    ttl_s: int = rules.DEFAULT_TTL_S
    reason: str = ""
    theft_case_id: str | None = None
    idempotency_key: str | None = None


Refusal = Callable[[str], Awaitable[None]]
_NO_LOCK = contextlib.nullcontext()


class Requests:
    def __init__(
        self,
        ctx: CommandContext,
        delivery: Delivery,
        alerts: Alerts,
        kill_switch: KillSwitchView,
    ) -> None:
        self._ctx = ctx
        self._delivery = delivery
        self._alerts = alerts
        self._kill_switch = kill_switch
        self._fleets = KeyedLocks()

    async def create(
        self, requester: Requester, request: CommandRequest
    ) -> tuple[CommandRecord, bool]:
        """Validate, apply the policies, store (queued, audited) and send if the box is here.

        Returns the command and whether it is new (False: an earlier request with the same
        idempotency key). Raises CommandError subclasses and storage's NotFound.
        """
        store = self._ctx.store
        kind = request.kind
        fleet_id = requester.fleet_id
        vehicle = await store.vehicles.get(fleet_id, request.vehicle_id)
        if not rules.role_allows(requester.role, kind):
            raise NotAllowed(f"{kind.value} needs the {rules.required_role(kind)} role")
        param = rules.wire_param(kind, request.params)
        rules.check_ttl(request.ttl_s)
        rules.check_texts(request.reason, request.theft_case_id, request.idempotency_key)
        key = request.idempotency_key
        if key is not None:
            existing = await store.commands.by_idempotency_key(fleet_id, key)
            if existing is not None:
                rules.check_same_order(existing, vehicle.id, kind, param)
                return existing, False
        if vehicle.device_id is None:
            raise NoBoxFitted(f"vehicle {vehicle.id} has no box fitted")
        device = await store.devices.get(fleet_id, vehicle.device_id)
        now = self._ctx.clock.now_ms()
        refuse = self._refusal(requester, request, vehicle.id)
        frozen = await self._alerts.freezing(device)
        if frozen:
            await refuse("frozen by a duplicate-box alert")
            raise VehicleFrozen(
                "commands to this vehicle are frozen: a second box claimed its IMEI while it was"
                " online; an admin must clear the alert",
                frozen,
            )
        if kind in rules.IMMOBILIZATION_KINDS and (await self._kill_switch.current()).engaged:
            await refuse("immobilizations suspended by the platform kill switch")
            raise ImmobilizationSuspended("immobilization commands are suspended platform-wide")
        policy = await store.policies.get(fleet_id)
        capped = kind in rules.ENGINE_START_KINDS and policy.engine_start_cap_per_hour is not None
        # A capped command is counted and stored under the fleet's lock, so concurrent requests
        # cannot overrun the cap together (within this process: docs/commands.md).
        async with self._fleets.hold(fleet_id) if capped else _NO_LOCK:
            if capped:
                await self._check_cap(policy, vehicle.id, now, refuse)
            status = (
                CommandState.PENDING_APPROVAL
                if policy.four_eyes and kind in rules.FOUR_EYES_KINDS
                else CommandState.QUEUED
            )
            ttl_ms = (request.ttl_s or rules.NOW_OR_NEVER_ANSWER_S) * 1000
            record = CommandRecord(
                id=new_id("cmd"),
                fleet_id=fleet_id,
                vehicle_id=vehicle.id,
                device_id=device.id,
                imei=device.imei,
                kind=kind,
                param=param,
                seq=0,
                status=status,
                created_ms=now,
                updated_ms=now,
                expires_ms=now + ttl_ms,
                ttl_s=request.ttl_s,
                requested_by=requester.key_id,
                reason=request.reason,
                theft_case_id=request.theft_case_id,
                idempotency_key=key,
            )
            requested = self._ctx.lines.about(
                record,
                "command.requested",
                actor=key_actor(requester.key_id),
                key_id=requester.key_id,
                detail=describe(record),
            )
            stored, created = await store.commands.create(record, requested)
        if not created:
            rules.check_same_order(stored, vehicle.id, kind, param)
            return stored, False
        self._ctx.stored(stored)
        if stored.status is CommandState.QUEUED:
            stored = await self._delivery.dispatch(stored, device)
        return stored, True

    async def cancel(self, requester: Requester, command_id: str) -> CommandRecord:
        """Cancel a command not sent yet (pending approval or queued); WrongState after."""
        command = await self._ctx.store.commands.get(requester.fleet_id, command_id)
        if not rules.role_allows(requester.role, command.kind):
            raise NotAllowed(f"cancelling {command.kind.value} needs the role that may send it")
        now = self._ctx.clock.now_ms()
        return await self._asked(
            requester,
            command,
            CommandState.CANCELLED,
            expected={CommandState.PENDING_APPROVAL, CommandState.QUEUED},
            action="command.cancelled",
            changes={"cancelled_by": requester.key_id, "completed_ms": now},
            at_ms=now,
            too_late=lambda status: (
                f"command is {status.value}: only a command not sent yet can be cancelled"
            ),
        )

    async def approve(self, requester: Requester, command_id: str) -> CommandRecord:
        """Four-eyes: a second admin releases a pending command, which is then delivered."""
        command = await self._ctx.store.commands.get(requester.fleet_id, command_id)
        if requester.role is not Role.ADMIN:
            raise NotAllowed("approving a command needs the admin role")
        if command.requested_by == requester.key_id:
            raise NotAllowed("the key that requested a command cannot approve it")
        now = self._ctx.clock.now_ms()
        approved = await self._asked(
            requester,
            command,
            CommandState.QUEUED,
            expected={CommandState.PENDING_APPROVAL},
            action="command.approved",
            changes={"approved_by": requester.key_id, "approved_ms": now},
            at_ms=now,
            too_late=lambda status: f"command is {status.value}, not pending approval",
        )
        return await self._delivery.dispatch(approved)

    async def set_policy(
        self, key_id: str, fleet_id: str, *, four_eyes: bool, engine_start_cap_per_hour: int | None
    ) -> CommandPolicy:
        policy = CommandPolicy(
            fleet_id=fleet_id,
            four_eyes=four_eyes,
            engine_start_cap_per_hour=engine_start_cap_per_hour,
            updated_ms=self._ctx.clock.now_ms(),
            updated_by=key_id,
        )
        await self._ctx.store.policies.put(policy)
        await self._ctx.store.audit.append(
            self._ctx.lines.plain(
                fleet_id,
                "policy.updated",
                key_id,
                detail=f"four_eyes={four_eyes} engine_start_cap_per_hour="
                f"{engine_start_cap_per_hour}",
            )
        )
        return policy

    async def kill_switch(self) -> KillSwitch:
        return await self._kill_switch.current()

    async def set_kill_switch(self, key_id: str, *, engaged: bool, reason: str) -> KillSwitch:
        switch = KillSwitch(
            engaged=engaged, reason=reason, changed_ms=self._ctx.clock.now_ms(), changed_by=key_id
        )
        await self._kill_switch.set(switch)
        await self._ctx.store.audit.append(
            self._ctx.lines.plain(
                None,
                "kill_switch.engaged" if engaged else "kill_switch.released",
                key_id,
                reason=reason,
            )
        )
        if not engaged:
            self._delivery.release_held()
        return switch

    async def clear_alert(self, requester: Requester, alert_id: str, reason: str = "") -> Alert:
        """An admin clears an alert; a duplicate-box freeze is lifted and held commands go."""
        if requester.role is not Role.ADMIN:
            raise NotAllowed("clearing an alert needs the admin role")
        store = self._ctx.store
        alert = await store.alerts.clear(
            requester.fleet_id, alert_id, by=requester.key_id, at_ms=self._ctx.clock.now_ms()
        )
        await store.audit.append(
            self._ctx.lines.plain(
                requester.fleet_id,
                "alert.cleared",
                requester.key_id,
                vehicle_id=alert.vehicle_id,
                reason=reason,
                detail=f"{alert.kind.value} alert {alert.id}",
            )
        )
        if alert.device_id is not None:
            with contextlib.suppress(StorageError):
                device = await store.devices.get(requester.fleet_id, alert.device_id)
                self._alerts.lift(device.imei)
                self._delivery.later(device.imei)
        return alert

    async def _asked(
        self,
        requester: Requester,
        command: CommandRecord,
        status: CommandState,
        *,
        expected: Collection[CommandState],
        action: str,
        changes: CommandChanges,
        at_ms: int,
        too_late: Callable[[CommandState], str],
    ) -> CommandRecord:
        """A change a key asks for; WrongState, saying where the command is now, when it is
        past ``expected`` (sent, answered, or changed by someone else first)."""
        changed = await self._ctx.transition(
            command,
            status,
            expected=expected,
            at_ms=at_ms,
            action=action,
            actor=key_actor(requester.key_id),
            key_id=requester.key_id,
            changes=changes,
        )
        if changed is None:
            current = await self._ctx.store.commands.get(requester.fleet_id, command.id)
            raise WrongState(too_late(current.status))
        return changed

    async def _check_cap(
        self, policy: CommandPolicy, vehicle_id: str, now: int, refuse: Refusal
    ) -> None:
        cap = policy.engine_start_cap_per_hour
        if cap is None:
            return
        commands = self._ctx.store.commands
        since = now - HOUR_MS
        kinds = rules.ENGINE_START_KINDS
        if await commands.count_since(policy.fleet_id, kinds, since) < cap:
            return
        recent = await commands.list(policy.fleet_id, from_ms=since, limit=1000)
        oldest = min((c.created_ms for c in recent.items if c.kind in kinds), default=since)
        retry_after_s = max(1, -(-(oldest + HOUR_MS - now) // 1000))
        await refuse(f"hourly engine-start cap of {cap} reached")
        await self._alerts.engine_start_cap(policy, vehicle_id, now)
        raise EngineStartCapReached(
            f"the fleet's cap of {cap} engine-start commands per hour is reached", retry_after_s
        )

    def _refusal(self, requester: Requester, request: CommandRequest, vehicle_id: str) -> Refusal:
        """Audits a refused request: a blocked immobilization attempt is worth a line too."""

        async def refuse(why: str) -> None:
            await self._ctx.store.audit.append(
                self._ctx.lines.plain(
                    requester.fleet_id,
                    "command.refused",
                    requester.key_id,
                    vehicle_id=vehicle_id,
                    reason=request.reason,
                    theft_case_id=request.theft_case_id,
                    detail=f"{request.kind.value}: {why}",
                )
            )

        return refuse
