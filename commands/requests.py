"""The API's use cases: request, cancel and approve commands; fleet policies, the kill switch,
clearing alerts (docs/commands.md, "API" and "Safety").

Every refusal raises a `commands.errors.CommandError`; a refusal by a safety rule (freeze, kill
switch, cap) is written to the audit log first, because a blocked immobilization attempt is
worth a line too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from commands import rules
from commands.alerts import HOUR_MS, Alerts
from commands.audit import describe, key_actor
from commands.context import CommandContext
from commands.delivery import Delivery
from commands.errors import (
    CommandError,
    EngineStartCapReached,
    ImmobilizationSuspended,
    InvalidCommand,
    NoBoxFitted,
    NotAllowed,
    VehicleFrozen,
    WrongState,
)
from commands.kill_switch import KillSwitchView
from commands.locks import KeyedLocks
from storage.errors import NotFound, StorageError
from storage.models import (
    Alert,
    AuditEntry,
    CommandChanges,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    Device,
    KillSwitch,
    Role,
    Vehicle,
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


@dataclass(frozen=True, slots=True)
class BulkRequest:
    """One command type for many vehicles (POST /v1/commands/bulk)."""

    kind: CommandKind
    vehicle_ids: Sequence[str] | None  # None: every vehicle of the fleet
    params: Mapping[str, object] = field(default_factory=dict)
    ttl_s: int = rules.DEFAULT_TTL_S
    reason: str = ""
    theft_case_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """One vehicle's part of a bulk order: its command (``created`` False: a replay) or the
    refusal that stopped it (a CommandError, or NotFound for a vehicle not in the fleet)."""

    vehicle_id: str
    command: CommandRecord | None = None
    created: bool = False
    refusal: CommandError | NotFound | None = None


Refusal = Callable[[str], Awaitable[None]]
_NO_LOCK = contextlib.nullcontext()
# Vehicles one bulk order may name (or "all" may cover): a fleet-wide order of this size is
# answered within the API's timeouts; a bigger fleet is commanded in several orders.
MAX_BULK_VEHICLES = 10_000
# Vehicles read per page when an order covers the whole fleet.
PAGE = 1000


def _checked(requester: Requester, request: CommandRequest) -> int:
    """The checks of the order itself, whatever the vehicle: the key's role may send this
    kind; parameters, TTL and texts are valid. Returns the wire parameter."""
    kind = request.kind
    if not rules.role_allows(requester.role, kind):
        raise NotAllowed(f"{kind.value} needs the {rules.required_role(kind)} role")
    param = rules.wire_param(kind, request.params)
    rules.check_ttl(request.ttl_s)
    rules.check_texts(request.reason, request.theft_case_id, request.idempotency_key)
    return param


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
        param = _checked(requester, request)
        replay = await self._replay(fleet_id, request, vehicle.id, param)
        if replay is not None:
            return replay, False
        if vehicle.device_id is None:
            raise NoBoxFitted(f"vehicle {vehicle.id} has no box fitted")
        # Independent reads in one round: each is a hop to the storage thread, and on a busy
        # loop every hop waits its turn (a third of a command's latency was these, one by one).
        policy, device, open_alerts = await asyncio.gather(
            store.policies.get(fleet_id),
            store.devices.get(fleet_id, vehicle.device_id),
            store.alerts.open_alerts(device_id=vehicle.device_id),
        )
        capped = kind in rules.ENGINE_START_KINDS and policy.engine_start_cap_per_hour is not None
        frozen = await self._alerts.freezing(device, open_alerts)
        switch = await self._switch(kind)
        # A capped command is counted and stored under the fleet's lock: the shared count
        # (storage counters) holds across processes; the lock keeps this process's order.
        async with self._fleets.hold(fleet_id) if capped else _NO_LOCK:
            record, requested = await self._prepare(
                requester, request, vehicle, device, frozen, param, policy, switch
            )
            # The box is here (the usual case): queued and sent in one write.
            direct = (
                self._delivery.create_and_send(record, requested, device, open_alerts)
                if record.status is CommandState.QUEUED
                else None
            )
            answer = None if direct is None else await direct.stored
            if answer is None:
                direct = None
                answer = await store.commands.create(record, requested)
        stored, created = answer
        if not created:
            rules.check_same_order(stored, vehicle.id, kind, param)
            return stored, False
        if direct is None:
            self._ctx.stored(stored)  # a direct command's versions are announced already
        elif stored.status is CommandState.SENT:
            await self._delivery.written(direct)  # the fleet's lock released first
        if stored.status is CommandState.QUEUED:
            stored = await self._delivery.dispatch(stored, device, open_alerts)
        return stored, True

    async def create_bulk(self, requester: Requester, bulk: BulkRequest) -> list[BulkOutcome]:
        """One order for many vehicles: every rule of `create` per vehicle, the commands
        stored together (`CommandRepo.create_many`: one transaction), then delivered.

        A refusal of the whole order (role, parameters, TTL, texts, too many vehicles) raises
        as `create` does; what refuses one vehicle (not found, no box, frozen, kill switch,
        cap, a key reused for another order) is that vehicle's outcome. The Idempotency-Key
        covers the order: each vehicle's command is stored under ``<key>#<vehicle id>``, so a
        retry answers the same command per vehicle and creates none twice.
        """
        store = self._ctx.store
        fleet_id = requester.fleet_id
        kind = bulk.kind
        base = CommandRequest(
            vehicle_id="",
            kind=kind,
            params=bulk.params,
            ttl_s=bulk.ttl_s,
            reason=bulk.reason,
            theft_case_id=bulk.theft_case_id,
            idempotency_key=bulk.idempotency_key,
        )
        param = _checked(requester, base)
        targets = await self._bulk_targets(fleet_id, bulk.vehicle_ids)
        policy = await store.policies.get(fleet_id)
        switch = await self._switch(kind)
        capped = kind in rules.ENGINE_START_KINDS and policy.engine_start_cap_per_hour is not None
        key = bulk.idempotency_key
        keys = {} if key is None else {vehicle_id: f"{key}#{vehicle_id}" for vehicle_id in targets}
        replays = await store.commands.by_idempotency_keys(fleet_id, keys.values()) if keys else {}
        fitted = [v.device_id for v in targets.values() if v is not None and v.device_id]
        devices = await self._devices(fleet_id, fitted)
        frozen = await self._alerts.freezing_many(fleet_id, devices.values())
        outcomes: dict[str, BulkOutcome] = {}
        batch: list[tuple[CommandRecord, AuditEntry, Device]] = []
        async with self._fleets.hold(fleet_id) if capped else _NO_LOCK:
            for vehicle_id, vehicle in targets.items():
                request = dataclasses.replace(
                    base, vehicle_id=vehicle_id, idempotency_key=keys.get(vehicle_id)
                )
                try:
                    if vehicle is None:
                        raise NotFound(f"vehicle {vehicle_id}")
                    replay = replays.get(keys.get(vehicle_id, ""))
                    if replay is not None:
                        rules.check_same_order(replay, vehicle_id, kind, param)
                        outcomes[vehicle_id] = BulkOutcome(vehicle_id, replay)
                        continue
                    if vehicle.device_id is None:
                        raise NoBoxFitted(f"vehicle {vehicle.id} has no box fitted")
                    device = devices.get(vehicle.device_id)
                    if device is None:  # unfitted and deleted since the vehicle was read
                        raise NoBoxFitted(f"vehicle {vehicle.id} has no box fitted")
                    record, requested = await self._prepare(
                        requester,
                        request,
                        vehicle,
                        device,
                        frozen.get(device.id, []),
                        param,
                        policy,
                        switch,
                    )
                except (CommandError, NotFound) as exc:
                    outcomes[vehicle_id] = BulkOutcome(vehicle_id, refusal=exc)
                    continue
                batch.append((record, requested, device))
            answers = await store.commands.create_many([(r, a) for r, a, _ in batch])
        for (record, _, device), (stored, created) in zip(batch, answers, strict=True):
            if not created:
                # Stored meanwhile under the same key (a concurrent retry of this order).
                try:
                    rules.check_same_order(stored, record.vehicle_id, kind, param)
                    outcomes[record.vehicle_id] = BulkOutcome(record.vehicle_id, stored)
                except CommandError as exc:
                    outcomes[record.vehicle_id] = BulkOutcome(record.vehicle_id, refusal=exc)
                continue
            self._ctx.stored(stored)
            outcomes[stored.vehicle_id] = BulkOutcome(stored.vehicle_id, stored, created=True)
            if stored.status is CommandState.QUEUED:
                # In the background: the order is answered once stored (each command
                # "queued"), and the boxes are written side by side, each on its own link.
                # The fleet's open alerts were read for the order: none of them froze this box.
                self._ctx.spawn(self._delivery.dispatch(stored, device, open_alerts=()))
        return [outcomes[vehicle_id] for vehicle_id in targets]

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

    async def _replay(
        self, fleet_id: str, request: CommandRequest, vehicle_id: str, param: int
    ) -> CommandRecord | None:
        """The command an earlier request with this Idempotency-Key created, if any."""
        key = request.idempotency_key
        if key is None:
            return None
        existing = await self._ctx.store.commands.by_idempotency_key(fleet_id, key)
        if existing is not None:
            rules.check_same_order(existing, vehicle_id, request.kind, param)
        return existing

    async def _switch(self, kind: CommandKind) -> KillSwitch | None:
        """The kill switch, read only for the kinds it suspends."""
        if kind in rules.IMMOBILIZATION_KINDS:
            return await self._kill_switch.current()
        return None

    async def _prepare(
        self,
        requester: Requester,
        request: CommandRequest,
        vehicle: Vehicle,
        device: Device,
        frozen: list[str],
        param: int,
        policy: CommandPolicy,
        switch: KillSwitch | None,
    ) -> tuple[CommandRecord, AuditEntry]:
        """The per-vehicle rules (duplicate-box freeze: ``frozen``, the alerts freezing
        ``device``; kill switch; hourly cap), then the command to store and its request's
        audit line. A capped kind: the caller holds the fleet's lock."""
        kind = request.kind
        fleet_id = requester.fleet_id
        now = self._ctx.clock.now_ms()
        refuse = self._refusal(requester, request, vehicle.id)
        if frozen:
            await refuse("frozen by a duplicate-box alert")
            raise VehicleFrozen(
                "commands to this vehicle are frozen: a second box claimed its IMEI while it was"
                " online; an admin must clear the alert",
                frozen,
            )
        if switch is not None and switch.engaged:
            await refuse("immobilizations suspended by the platform kill switch")
            raise ImmobilizationSuspended("immobilization commands are suspended platform-wide")
        if kind in rules.ENGINE_START_KINDS and policy.engine_start_cap_per_hour is not None:
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
            idempotency_key=request.idempotency_key,
        )
        requested = self._ctx.lines.about(
            record,
            "command.requested",
            actor=key_actor(requester.key_id),
            key_id=requester.key_id,
            detail=describe(record),
        )
        return record, requested

    async def _devices(self, fleet_id: str, device_ids: Sequence[str]) -> dict[str, Device]:
        """The fleet's boxes of ``device_ids`` by id: read one by one for a few, by pages of
        the whole fleet for many (fewer round trips than one per box)."""
        devices = self._ctx.store.devices
        if len(device_ids) < PAGE // 10:
            found: dict[str, Device] = {}
            for device_id in device_ids:
                with contextlib.suppress(NotFound):  # deleted since: "no box fitted"
                    found[device_id] = await devices.get(fleet_id, device_id)
            return found
        wanted = set(device_ids)
        found = {}
        cursor: str | None = None
        while True:
            page = await devices.list(fleet_id, cursor=cursor, limit=PAGE)
            found.update((d.id, d) for d in page.items if d.id in wanted)
            cursor = page.next_cursor
            if cursor is None:
                return found

    async def _bulk_targets(
        self, fleet_id: str, vehicle_ids: Sequence[str] | None
    ) -> dict[str, Vehicle | None]:
        """The order's vehicles by id, in the order asked (None: not in this fleet); with
        ``vehicle_ids`` None, every vehicle of the fleet."""
        vehicles = self._ctx.store.vehicles
        targets: dict[str, Vehicle | None] = {}
        if vehicle_ids is None:
            cursor: str | None = None
            while True:
                page = await vehicles.list(fleet_id, cursor=cursor, limit=PAGE)
                targets.update((v.id, v) for v in page.items)
                if len(targets) > MAX_BULK_VEHICLES:
                    raise InvalidCommand(
                        f"the fleet has more than {MAX_BULK_VEHICLES} vehicles: name them in"
                        " several orders"
                    )
                cursor = page.next_cursor
                if cursor is None:
                    return targets
        if len(vehicle_ids) > MAX_BULK_VEHICLES:
            raise InvalidCommand(f"at most {MAX_BULK_VEHICLES} vehicles per order")
        asked = dict.fromkeys(vehicle_ids)  # each vehicle once, in the order asked
        if len(asked) < PAGE // 10:
            for vehicle_id in asked:
                try:
                    targets[vehicle_id] = await vehicles.get(fleet_id, vehicle_id)
                except NotFound:
                    targets[vehicle_id] = None
            return targets
        # Many: the fleet's vehicles by pages (fewer round trips than one read per vehicle),
        # until every vehicle asked for is found.
        found: dict[str, Vehicle] = {}
        cursor = None
        while len(found) < len(asked):
            page = await vehicles.list(fleet_id, cursor=cursor, limit=PAGE)
            found.update((v.id, v) for v in page.items if v.id in asked)
            cursor = page.next_cursor
            if cursor is None:
                break
        return {vehicle_id: found.get(vehicle_id) for vehicle_id in asked}

    async def _check_cap(
        self, policy: CommandPolicy, vehicle_id: str, now: int, refuse: Refusal
    ) -> None:
        cap = policy.engine_start_cap_per_hour
        if cap is None:
            return
        commands = self._ctx.store.commands
        since = now - HOUR_MS
        kinds = rules.ENGINE_START_KINDS
        # Counted in storage, atomically for every process (a read-then-insert here could
        # let two processes overrun the cap together); one count per command created.
        taken = await self._ctx.store.counters.take(
            rules.engine_start_counter(policy.fleet_id),
            fleet_id=policy.fleet_id,
            limit=cap,
            window=rules.ENGINE_START_WINDOW,
            now_ms=now,
        )
        if taken is not None:
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
