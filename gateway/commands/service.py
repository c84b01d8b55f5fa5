"""`CommandService`: remote commands from the API request to the box's answer (docs/commands.md).

One object per process, shared by the API (create, cancel, approve, policies) and the
transports (TCP gateway now, MQTT bridge later), which call its box hooks:

* ``on_box_online(imei)`` once the box's login was answered: its queued and sent-but-
  unanswered commands go out, in command-number order;
* ``on_box_reply(imei, message)`` for every COMMAND_RESULT, ACK and NACK the box sends;
* ``on_duplicate_login(imei, ...)`` when a second login claims an IMEI whose session is live.

Storage is the source of truth and every status change is a compare-and-set with its audit
entry, so several processes (API-only, several gateways) can share one database: a process
delivers only to boxes connected to it, and picks up commands another process queued by
polling. A command is written to a box only after the transition to ``sent`` and its audit
entry are stored, so a crash at any point leaves it queued or sent, never lost: sent commands
are sent again (same number) at the box's next login, and the box never executes a number
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.commands import rules
from gateway.commands.errors import (
    EngineStartCapReached,
    IdempotencyMismatch,
    ImmobilizationSuspended,
    InvalidCommand,
    NoBoxFitted,
    NotAllowed,
    VehicleFrozen,
    WrongState,
)
from protocol.gp8 import Ack, Command, CommandResult, CommandStatus, Nack, NackReason, RecordFlags
from storage.errors import StorageError
from storage.models import (
    LIVE_COMMAND_STATES,
    Alert,
    AlertKind,
    AuditEntry,
    CommandChanges,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    Device,
    KillSwitch,
    Role,
    VehicleLockState,
    new_id,
    now_ms,
)
from storage.repository import (
    AlertRepo,
    AuditRepo,
    CommandRepo,
    DeviceRepo,
    PolicyRepo,
    VehicleRepo,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

HOUR_MS = 3_600_000
# How often expired commands are marked, and how long a command queued by another process
# (an API-only process, or a box connected here while the request hit another gateway) waits
# at most before this gateway sends it.
SWEEP_INTERVAL_S = 1.0
# Queued commands are polled by their last transition time; the overlap covers clock skew and
# commit lag between processes (a command seen twice is harmless: the CAS sends it once).
POLL_OVERLAP_MS = 5_000
# A COMMAND neither ACKed nor answered by a connected box is written again after this long
# (docs/protocol.md §5.5: resent until ACKed); the box answers a repeat from its memory.
RESEND_AFTER_S = 30.0
# Commands handled per sweep or poll, so one pass stays short whatever the backlog.
SWEEP_BATCH = 500
# How long an API request waits for the delivery of its command before answering "queued";
# the delivery goes on in the background. A stalled box socket must not hold the API.
DELIVERY_WAIT_S = 2.0
# Everything a box hook does is bounded: the connection waits for it before ACKing.
HOOK_TIMEOUT_S = 10.0
# A box reconnects within seconds of an acknowledged REBOOT while its old socket may still
# look live: not a duplicate.
REBOOT_GRACE_S = 300.0
# Deliveries under way when the service stops get this long to finish.
STOP_GRACE_S = 2.0
# Stands for a duplicate-box alert raised in this process and not stored yet.
UNSTORED_ALERT = "alr_unstored"
# The kill switch is read at most this often; a change made through this process applies at
# once, one made elsewhere within this delay.
KILL_SWITCH_CACHE_S = 1.0


class Sender(Protocol):
    """A transport that can reach boxes (TcpGateway; the MQTT bridge registers too)."""

    def is_online(self, imei: str) -> bool: ...

    async def send(self, imei: str, message: Command) -> bool:
        """Write the COMMAND to the box; False if it is not connected here or the write failed."""
        ...


class CommandStore(Protocol):
    """The parts of a `storage.repository.Store` the service uses."""

    @property
    def commands(self) -> CommandRepo: ...
    @property
    def audit(self) -> AuditRepo: ...
    @property
    def policies(self) -> PolicyRepo: ...
    @property
    def alerts(self) -> AlertRepo: ...
    @property
    def vehicles(self) -> VehicleRepo: ...
    @property
    def devices(self) -> DeviceRepo: ...


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


Listener = Callable[[CommandRecord], None]


_NO_LOCK = contextlib.nullcontext()


class _KeyedLocks:
    """One asyncio.Lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


class CommandService:
    def __init__(
        self,
        store: CommandStore,
        *,
        gateway_id: str = "api",
        clock: Callable[[], int] = now_ms,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        resend_after_s: float = RESEND_AFTER_S,
        delivery_wait_s: float = DELIVERY_WAIT_S,
    ) -> None:
        self._store = store
        self.store = store
        self.gateway_id = gateway_id
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._resend_after_ms = int(resend_after_s * 1000)
        self._delivery_wait_s = delivery_wait_s
        self._senders: list[Sender] = []
        self._listeners: list[Listener] = []
        self._locks = _KeyedLocks()
        # Command numbers written to each box on its current session: not written again on
        # that session unless the resend timer says so.
        self._session_sent: dict[str, set[int]] = {}
        # Boxes frozen by a duplicate login whose alert is not stored yet (fail-safe), with
        # the alert's detail; storing it is retried at each freeze check.
        self._frozen: dict[str, str] = {}
        self._rebooted_at: dict[str, float] = {}
        self._kill: tuple[KillSwitch, float] | None = None
        self._last_poll_ms = clock()
        self._last_resend_ms = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.stats: Counter[str] = Counter()

    # --- wiring ---------------------------------------------------------------------------

    def add_sender(self, sender: Sender) -> None:
        self._senders.append(sender)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(command)`` after each stored change (benchmarks, push feeds)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._sweeper(), name="gp8-commands")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the sweeper; deliveries under way get ``grace_s`` to finish (an interrupted
        one leaves its command sent, to go again at the box's next login)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self.settle()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait until the deliveries started in the background are done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def health(self) -> dict[str, object]:
        return {"gateway_id": self.gateway_id, "senders": len(self._senders), **self.stats}

    # --- API side -------------------------------------------------------------------------

    async def create(
        self, requester: Requester, request: CommandRequest
    ) -> tuple[CommandRecord, bool]:
        """Validate, apply the policies, store (queued, audited) and send if the box is here.

        Returns the command and whether it is new (False: an earlier request with the same
        idempotency key). Raises CommandError subclasses and storage's NotFound.
        """
        kind = request.kind
        fleet_id = requester.fleet_id
        vehicle = await self._store.vehicles.get(fleet_id, request.vehicle_id)
        if not rules.role_allows(requester.role, kind):
            raise NotAllowed(f"{kind.value} needs the {rules.required_role(kind)} role")
        param = rules.wire_param(kind, request.params)
        rules.check_ttl(request.ttl_s)
        _check_texts(request)
        key = request.idempotency_key
        if key is not None:
            existing = await self._store.commands.by_idempotency_key(fleet_id, key)
            if existing is not None:
                _check_same(existing, vehicle.id, kind, param)
                return existing, False
        if vehicle.device_id is None:
            raise NoBoxFitted(f"vehicle {vehicle.id} has no box fitted")
        device = await self._store.devices.get(fleet_id, vehicle.device_id)
        now = self._clock()
        refusal = self._refusal(requester, request, vehicle.id)
        frozen = await self._freezing_alerts(device)
        if frozen:
            await refusal("frozen by a duplicate-box alert")
            raise VehicleFrozen(
                "commands to this vehicle are frozen: a second box claimed its IMEI while it was"
                " online; an admin must clear the alert",
                frozen,
            )
        if kind in rules.IMMOBILIZATION_KINDS and (await self.kill_switch()).engaged:
            await refusal("immobilizations suspended by the platform kill switch")
            raise ImmobilizationSuspended("immobilization commands are suspended platform-wide")
        policy = await self._store.policies.get(fleet_id)
        capped = kind in rules.ENGINE_START_KINDS and policy.engine_start_cap_per_hour is not None
        # A capped command is counted and stored under the fleet's lock, so concurrent requests
        # cannot overrun the cap together (within this process: docs/commands.md).
        async with self._locks.hold(f"fleet:{fleet_id}") if capped else _NO_LOCK:
            if capped:
                await self._check_cap(policy, vehicle.id, now, refusal)
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
            requested = self._entry(
                record,
                "command.requested",
                actor=f"key:{requester.key_id}",
                key_id=requester.key_id,
                detail=_describe(record),
            )
            stored, created = await self._store.commands.create(record, requested)
        if not created:
            _check_same(stored, vehicle.id, kind, param)
            return stored, False
        self._notify(stored)
        if stored.status is CommandState.QUEUED:
            stored = await self._dispatch(stored, device)
        return stored, True

    async def cancel(self, requester: Requester, command_id: str) -> CommandRecord:
        """Cancel a command not sent yet (pending approval or queued); WrongState after."""
        command = await self._store.commands.get(requester.fleet_id, command_id)
        if not rules.role_allows(requester.role, command.kind):
            raise NotAllowed(f"cancelling {command.kind.value} needs the role that may send it")
        now = self._clock()
        cancelled = await self._store.commands.transition(
            command.id,
            expected={CommandState.PENDING_APPROVAL, CommandState.QUEUED},
            status=CommandState.CANCELLED,
            at_ms=now,
            changes={"cancelled_by": requester.key_id, "completed_ms": now},
            audit=self._entry(
                command,
                "command.cancelled",
                actor=f"key:{requester.key_id}",
                key_id=requester.key_id,
                status=CommandState.CANCELLED,
            ),
        )
        if cancelled is None:
            current = await self._store.commands.get(requester.fleet_id, command_id)
            raise WrongState(
                f"command is {current.status.value}: only a command not sent yet can be cancelled"
            )
        self._notify(cancelled)
        return cancelled

    async def approve(self, requester: Requester, command_id: str) -> CommandRecord:
        """Four-eyes: a second admin releases a pending command, which is then delivered."""
        command = await self._store.commands.get(requester.fleet_id, command_id)
        if requester.role is not Role.ADMIN:
            raise NotAllowed("approving a command needs the admin role")
        if command.requested_by == requester.key_id:
            raise NotAllowed("the key that requested a command cannot approve it")
        now = self._clock()
        approved = await self._store.commands.transition(
            command.id,
            expected={CommandState.PENDING_APPROVAL},
            status=CommandState.QUEUED,
            at_ms=now,
            changes={"approved_by": requester.key_id, "approved_ms": now},
            audit=self._entry(
                command,
                "command.approved",
                actor=f"key:{requester.key_id}",
                key_id=requester.key_id,
                status=CommandState.QUEUED,
            ),
        )
        if approved is None:
            current = await self._store.commands.get(requester.fleet_id, command_id)
            raise WrongState(f"command is {current.status.value}, not pending approval")
        self._notify(approved)
        return await self._dispatch(approved)

    async def set_policy(
        self, key_id: str, fleet_id: str, *, four_eyes: bool, engine_start_cap_per_hour: int | None
    ) -> CommandPolicy:
        policy = CommandPolicy(
            fleet_id=fleet_id,
            four_eyes=four_eyes,
            engine_start_cap_per_hour=engine_start_cap_per_hour,
            updated_ms=self._clock(),
            updated_by=key_id,
        )
        await self._store.policies.put(policy)
        await self._store.audit.append(
            self._plain_entry(
                fleet_id,
                "policy.updated",
                key_id,
                detail=f"four_eyes={four_eyes} engine_start_cap_per_hour="
                f"{engine_start_cap_per_hour}",
            )
        )
        return policy

    async def kill_switch(self) -> KillSwitch:
        cached = self._kill
        if cached is not None and time.monotonic() - cached[1] < KILL_SWITCH_CACHE_S:
            return cached[0]
        switch = await self._store.policies.kill_switch()
        self._kill = (switch, time.monotonic())
        return switch

    async def set_kill_switch(self, key_id: str, *, engaged: bool, reason: str) -> KillSwitch:
        switch = KillSwitch(
            engaged=engaged, reason=reason, changed_ms=self._clock(), changed_by=key_id
        )
        await self._store.policies.set_kill_switch(switch)
        self._kill = (switch, time.monotonic())
        await self._store.audit.append(
            self._plain_entry(
                None,
                "kill_switch.engaged" if engaged else "kill_switch.released",
                key_id,
                reason=reason,
            )
        )
        if not engaged:
            # Held immobilizations of boxes connected here go out now (unless expired).
            for imei in list(self._session_sent):
                self._spawn(self._deliver_logged(imei))
        return switch

    async def clear_alert(self, requester: Requester, alert_id: str, reason: str = "") -> Alert:
        if requester.role is not Role.ADMIN:
            raise NotAllowed("clearing an alert needs the admin role")
        alert = await self._store.alerts.clear(
            requester.fleet_id, alert_id, by=requester.key_id, at_ms=self._clock()
        )
        await self._store.audit.append(
            self._plain_entry(
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
                device = await self._store.devices.get(requester.fleet_id, alert.device_id)
                self._frozen.pop(device.imei, None)
                self._spawn(self._deliver_logged(device.imei))
        return alert

    # --- box side: the transports' hooks --------------------------------------------------

    async def on_box_online(self, imei: str) -> None:
        """The box logged in and was answered: a new session, so everything pending goes."""
        self._session_sent[imei] = set()
        self._spawn(self._deliver_logged(imei))

    async def on_box_reply(self, imei: str, message: CommandResult | Ack | Nack) -> None:
        """A COMMAND_RESULT, or the ACK/NACK of a COMMAND; stored before the box is ACKed."""
        async with asyncio.timeout(HOOK_TIMEOUT_S):
            if isinstance(message, CommandResult):
                await self._on_result(imei, message)
            elif isinstance(message, Ack):
                await self._on_receipt(imei, message.acked_seq)
            else:
                await self._on_nack(imei, message)

    async def on_duplicate_login(
        self, imei: str, *, old_remote: str, new_remote: str, idle_s: float
    ) -> None:
        """A second login claimed ``imei`` while its session was live: alert and freeze."""
        rebooted = self._rebooted_at.get(imei)
        if rebooted is not None and time.monotonic() - rebooted < REBOOT_GRACE_S:
            log.info("imei=%s reconnected right after a reboot: not a duplicate", imei)
            return
        self.stats["duplicate_logins"] += 1
        # Frozen at once, before any storage round trip, and until the alert is stored.
        self._frozen[imei] = (
            f"IMEI {imei} logged in from {new_remote} while its session from {old_remote} was"
            f" live ({idle_s:.1f} s since its last frame)"
        )
        log.warning(
            "imei=%s: second live login from %s while %s was active %.1f s ago; commands frozen",
            imei,
            new_remote,
            old_remote,
            idle_s,
        )
        async with asyncio.timeout(HOOK_TIMEOUT_S):
            device = await self._store.devices.get_by_imei(imei)
            if device is not None:
                await self._store_duplicate_alert(device)

    async def _store_duplicate_alert(self, device: Device) -> str:
        """Store the duplicate-box alert held in memory for ``device`` (unless one is open);
        from then on the stored alert is the freeze, and clearing it anywhere lifts it."""
        open_ = await self._store.alerts.open_alerts(
            device_id=device.id, kind=AlertKind.DUPLICATE_BOX
        )
        if open_:
            self._frozen.pop(device.imei, None)
            return open_[0].id
        alert = Alert(
            id=new_id("alr"),
            fleet_id=device.fleet_id,
            kind=AlertKind.DUPLICATE_BOX,
            raised_ms=self._clock(),
            device_id=device.id,
            vehicle_id=device.vehicle_id,
            detail=self._frozen.get(device.imei, f"IMEI {device.imei} logged in twice"),
            freezes_commands=True,
        )
        await self._store.alerts.raise_alert(alert)
        self._frozen.pop(device.imei, None)
        await self._store.audit.append(
            self._plain_entry(
                device.fleet_id,
                "alert.raised",
                None,
                actor=f"gateway:{self.gateway_id}",
                vehicle_id=device.vehicle_id,
                detail=alert.detail,
            )
        )
        return alert.id

    # --- periodic work --------------------------------------------------------------------

    async def expire_due(self) -> int:
        """Mark live commands whose TTL has passed as expired; returns how many."""
        now = self._clock()
        expired = 0
        for command in await self._store.commands.expiring(now, limit=SWEEP_BATCH):
            when = (
                "before the box answered"
                if command.status is CommandState.SENT
                else "before delivery"
            )
            done = await self._store.commands.transition(
                command.id,
                expected=LIVE_COMMAND_STATES,
                status=CommandState.EXPIRED,
                at_ms=now,
                changes={"completed_ms": now},
                audit=self._entry(
                    command,
                    "command.expired",
                    actor="system",
                    status=CommandState.EXPIRED,
                    detail=f"TTL passed {when}",
                ),
            )
            if done is not None:
                expired += 1
                self._notify(done)
        return expired

    async def poll(self) -> int:
        """Send what other processes queued for boxes connected here, and resend COMMANDs a
        connected box neither ACKed nor answered; returns how many boxes were served."""
        now = self._clock()
        since = self._last_poll_ms - POLL_OVERLAP_MS
        self._last_poll_ms = now
        boxes = {
            c.imei
            for c in await self._store.commands.in_status(
                CommandState.QUEUED, updated_from_ms=since, limit=SWEEP_BATCH
            )
            if self._sender_for(c.imei) is not None
        }
        if now - self._last_resend_ms >= self._resend_after_ms // 2:
            self._last_resend_ms = now
            # Every queued command, not only recent ones: a transport without a login hook
            # (MQTT presence is implicit) still gets the queue of a box that came back.
            boxes.update(
                c.imei
                for c in await self._store.commands.in_status(
                    CommandState.QUEUED, limit=SWEEP_BATCH
                )
                if self._sender_for(c.imei) is not None
            )
            stale = await self._store.commands.in_status(
                CommandState.SENT, updated_to_ms=now - self._resend_after_ms, limit=SWEEP_BATCH
            )
            for command in stale:
                if command.delivered_ms is None and self._sender_for(command.imei) is not None:
                    self._session_sent.get(command.imei, set()).discard(command.seq)
                    boxes.add(command.imei)
        for imei in list(self._session_sent):
            if self._sender_for(imei) is None:
                del self._session_sent[imei]
        for imei in boxes:
            await self.deliver(imei)
        return len(boxes)

    async def deliver(self, imei: str, device: Device | None = None) -> list[CommandRecord]:
        """Write the box's pending commands it has not had on this session, in number order.

        Returns the commands written. Does nothing when the box is not connected here or is
        frozen; an immobilization is held while the kill switch is on. ``device``: the box's
        record if the caller has just read it.
        """
        async with self._locks.hold(f"box:{imei}"):
            sender = self._sender_for(imei)
            if sender is None:
                return []
            now = self._clock()
            pending = await self._store.commands.pending_for_box(imei, now)
            if not pending:
                return []
            if device is None or device.imei != imei:
                device = await self._store.devices.get_by_imei(imei)
            if await self._freezing_alerts(device):
                self.stats["held_frozen"] += len(pending)
                return []
            kill = await self.kill_switch()
            on_session = self._session_sent.setdefault(imei, set())
            written: list[CommandRecord] = []
            for command in pending:
                if command.status is CommandState.SENT and command.seq in on_session:
                    continue
                if device is None or (device.id, device.vehicle_id) != (
                    command.device_id,
                    command.vehicle_id,
                ):
                    # The box now belongs to another vehicle or fleet: the order was not for it.
                    await self._fail(command, "box_refitted", "the box is no longer fitted")
                    continue
                if kill.engaged and command.kind in rules.IMMOBILIZATION_KINDS:
                    self.stats["held_kill_switch"] += 1
                    continue
                sent = await self._store.commands.transition(
                    command.id,
                    expected={CommandState.QUEUED, CommandState.SENT},
                    status=CommandState.SENT,
                    at_ms=now,
                    changes={"sent_ms": command.sent_ms or now, "gateway_id": self.gateway_id},
                    attempts_delta=1,
                    audit=self._entry(
                        command,
                        "command.sent",
                        actor=f"gateway:{self.gateway_id}",
                        status=CommandState.SENT,
                        detail=f"attempt {command.attempts + 1}, command number {command.seq}",
                    ),
                )
                if sent is None:
                    continue  # cancelled, expired or answered meanwhile
                self._notify(sent)
                if not await sender.send(imei, rules.wire_command(sent)):
                    # Gone: it stays sent and goes again, same number, at the next login.
                    self.stats["send_failed"] += 1
                    break
                on_session.add(sent.seq)
                written.append(sent)
            self.stats["frames_sent"] += len(written)
            return written

    # --- internals ------------------------------------------------------------------------

    async def _dispatch(
        self, command: CommandRecord, device: Device | None = None
    ) -> CommandRecord:
        """Send a command just queued (or approved) if its box is here; fail a "now or never"
        command whose box is connected nowhere. Returns the command as it is now."""
        if self._sender_for(command.imei) is not None:
            task = self._spawn(self._deliver_logged(command.imei, device))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self._delivery_wait_s)
            if task.done() and not task.cancelled():
                for sent in task.result():
                    if sent.id == command.id:
                        return sent
        elif command.ttl_s == 0 and not await self._online_elsewhere(command.device_id):
            failed = await self._fail(
                command, "box_offline", "ttl_s 0 and the box is not connected"
            )
            if failed is not None:
                return failed
        return await self._store.commands.get(command.fleet_id, command.id)

    async def _online_elsewhere(self, device_id: str) -> bool:
        connection = await self._store.devices.connection(device_id)
        return connection is not None and connection.online

    async def _fail(
        self, command: CommandRecord, failure: str, detail: str
    ) -> CommandRecord | None:
        now = self._clock()
        failed = await self._store.commands.transition(
            command.id,
            expected={CommandState.QUEUED, CommandState.SENT},
            status=CommandState.FAILED,
            at_ms=now,
            changes={"failure": failure, "completed_ms": now},
            audit=self._entry(
                command,
                "command.failed",
                actor=f"gateway:{self.gateway_id}",
                status=CommandState.FAILED,
                detail=f"{failure}: {detail}",
            ),
        )
        if failed is not None:
            self._notify(failed)
        return failed

    async def _on_result(self, imei: str, result: CommandResult) -> None:
        command = await self._store.commands.by_seq(imei, result.command_seq)
        if command is None:
            self.stats["results_unknown"] += 1
            log.warning(
                "imei=%s answered command number %d, which it never got", imei, result.command_seq
            )
            return
        now = self._clock()
        state = None
        if result.status is not CommandStatus.UNSUPPORTED:
            # `state` is what the box reports after trying, done or not: the vehicle's truth.
            state = VehicleLockState(
                fleet_id=command.fleet_id,
                vehicle_id=command.vehicle_id,
                device_id=command.device_id,
                doors_locked=bool(result.state & RecordFlags.DOORS_LOCKED),
                engine_start_inhibited=bool(result.state & RecordFlags.ENGINE_START_INHIBITED),
                updated_ms=now,
                command_id=command.id,
            )
        failure = rules.failure_of(result.status, result.failure)
        status = CommandState.ACKNOWLEDGED if failure is None else CommandState.FAILED
        changes: CommandChanges = {"completed_ms": now, "result_state": result.state}
        if failure is not None:
            changes["failure"] = failure
        if command.delivered_ms is None:
            changes["delivered_ms"] = now
        outcome = "done" if failure is None else f"failed: {failure}"
        done = await self._store.commands.transition(
            command.id,
            expected={CommandState.SENT, CommandState.QUEUED},
            status=status,
            at_ms=now,
            changes=changes,
            audit=self._entry(
                command,
                f"command.{status.value}",
                actor=f"box:{imei}",
                status=status,
                detail=f"{outcome}; state {_state_text(result.state)}",
            ),
            vehicle_state=state,  # stored with the status: seen together
        )
        if done is not None:
            self._notify(done)
            if command.kind is CommandKind.REBOOT and failure is None:
                self._rebooted_at[imei] = time.monotonic()
            return
        current = await self._store.commands.by_seq(imei, result.command_seq)
        if current is not None and current.status in (
            CommandState.EXPIRED,
            CommandState.CANCELLED,
        ):
            # The box did it after we gave up on it: the log must say so, and the vehicle
            # shows what the box did.
            self.stats["late_results"] += 1
            if state is not None:
                await self._store.commands.set_vehicle_state(state)
            await self._store.audit.append(
                self._entry(
                    current,
                    "command.late_result",
                    actor=f"box:{imei}",
                    detail=f"{outcome} after the command was {current.status.value}; "
                    f"state {_state_text(result.state)}",
                )
            )
        else:
            self.stats["duplicate_results"] += 1  # a resend of an answer already stored

    async def _on_receipt(self, imei: str, seq: int) -> None:
        command = await self._store.commands.by_seq(imei, seq)
        if command is None or command.status is not CommandState.SENT or command.delivered_ms:
            return
        now = self._clock()
        delivered = await self._store.commands.transition(
            command.id,
            expected={CommandState.SENT},
            status=CommandState.SENT,
            at_ms=now,
            changes={"delivered_ms": now},
            audit=self._entry(
                command, "command.delivered", actor=f"box:{imei}", status=CommandState.SENT
            ),
        )
        if delivered is not None:
            self._notify(delivered)

    async def _on_nack(self, imei: str, nack: Nack) -> None:
        command = await self._store.commands.by_seq(imei, nack.nacked_seq)
        if command is None or command.status is not CommandState.SENT:
            return
        if nack.reason is NackReason.BAD_CRC:
            # Damaged on the way: the box asks for it again (docs/protocol.md §5.6).
            self._session_sent.get(imei, set()).discard(command.seq)
            self._spawn(self._deliver_logged(imei))
            return
        await self._fail(command, f"box_nack_{nack.reason.name.lower()}", "the box refused it")

    async def _check_cap(
        self,
        policy: CommandPolicy,
        vehicle_id: str,
        now: int,
        refusal: Callable[[str], Awaitable[None]],
    ) -> None:
        cap = policy.engine_start_cap_per_hour
        if cap is None:
            return
        since = now - HOUR_MS
        kinds = rules.ENGINE_START_KINDS
        if await self._store.commands.count_since(policy.fleet_id, kinds, since) < cap:
            return
        recent = await self._store.commands.list(policy.fleet_id, from_ms=since, limit=1000)
        oldest = min((c.created_ms for c in recent.items if c.kind in kinds), default=now - HOUR_MS)
        retry_after_s = max(1, -(-(oldest + HOUR_MS - now) // 1000))
        await refusal(f"hourly engine-start cap of {cap} reached")
        await self._cap_alert(policy, vehicle_id, now)
        raise EngineStartCapReached(
            f"the fleet's cap of {cap} engine-start commands per hour is reached", retry_after_s
        )

    async def _cap_alert(self, policy: CommandPolicy, vehicle_id: str, now: int) -> None:
        open_ = await self._store.alerts.list(policy.fleet_id, open_only=True, limit=1000)
        if any(
            a.kind is AlertKind.ENGINE_START_CAP and a.raised_ms > now - HOUR_MS
            for a in open_.items
        ):
            return  # one alert per hour of refusals is enough to call someone
        alert = Alert(
            id=new_id("alr"),
            fleet_id=policy.fleet_id,
            kind=AlertKind.ENGINE_START_CAP,
            raised_ms=now,
            vehicle_id=vehicle_id,
            detail=f"engine-start command refused: cap of {policy.engine_start_cap_per_hour}"
            " per hour reached",
        )
        await self._store.alerts.raise_alert(alert)
        await self._store.audit.append(
            self._plain_entry(
                policy.fleet_id,
                "alert.raised",
                None,
                actor="system",
                vehicle_id=vehicle_id,
                detail=alert.detail,
            )
        )

    def _refusal(
        self, requester: Requester, request: CommandRequest, vehicle_id: str
    ) -> Callable[[str], Awaitable[None]]:
        """Audits a refused request: a blocked immobilization attempt is worth a line too."""

        async def refuse(why: str) -> None:
            await self._store.audit.append(
                self._plain_entry(
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

    async def _freezing_alerts(self, device: Device | None) -> list[str]:
        """Ids of the open alerts that freeze commands to this box.

        By the box, not the vehicle: the alert is about who holds that IMEI, and a vehicle
        given another box is not frozen by the old one's clone.
        """
        if device is None:
            return []
        alerts = await self._store.alerts.open_alerts(device_id=device.id)
        frozen = [a.id for a in alerts if a.freezes_commands]
        if not frozen and device.imei in self._frozen:
            # Raised here and not stored yet (storage failed): store it now, frozen either way.
            try:
                frozen = [await self._store_duplicate_alert(device)]
            except (StorageError, TimeoutError) as exc:
                log.warning("imei=%s: duplicate-box alert still not stored: %r", device.imei, exc)
                frozen = [UNSTORED_ALERT]
        return frozen

    def _sender_for(self, imei: str) -> Sender | None:
        for sender in self._senders:
            if sender.is_online(imei):
                return sender
        return None

    def _entry(
        self,
        command: CommandRecord,
        action: str,
        *,
        actor: str,
        key_id: str | None = None,
        status: CommandState | None = None,
        detail: str = "",
    ) -> AuditEntry:
        """An audit line about ``command``; it carries the request's key, reason and case so
        each line reads on its own."""
        return AuditEntry(
            id=new_id("aud"),
            time_ms=self._clock(),
            fleet_id=command.fleet_id,
            action=action,
            actor=actor,
            key_id=key_id or command.requested_by,
            vehicle_id=command.vehicle_id,
            command_id=command.id,
            status=(status or command.status).value,
            reason=command.reason,
            theft_case_id=command.theft_case_id,
            detail=detail,
        )

    def _plain_entry(
        self,
        fleet_id: str | None,
        action: str,
        key_id: str | None,
        *,
        actor: str | None = None,
        vehicle_id: str | None = None,
        reason: str = "",
        theft_case_id: str | None = None,
        detail: str = "",
    ) -> AuditEntry:
        return AuditEntry(
            id=new_id("aud"),
            time_ms=self._clock(),
            fleet_id=fleet_id,
            action=action,
            actor=actor or f"key:{key_id}",
            key_id=key_id,
            vehicle_id=vehicle_id,
            reason=reason,
            theft_case_id=theft_case_id,
            detail=detail,
        )

    def _notify(self, command: CommandRecord) -> None:
        for listener in self._listeners:
            try:
                listener(command)
            except Exception:
                log.exception("command listener failed")

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver_logged(self, imei: str, device: Device | None = None) -> list[CommandRecord]:
        try:
            return await self.deliver(imei, device)
        except (StorageError, TimeoutError, OSError) as exc:
            self.stats["delivery_errors"] += 1
            log.warning("imei=%s: command delivery failed, retried later: %r", imei, exc)
            return []

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                await self.expire_due()
                await self.poll()
            except (StorageError, TimeoutError, OSError) as exc:
                self.stats["sweep_errors"] += 1
                log.warning("command sweep failed: %r", exc)
            except Exception:
                log.exception("command sweep failed")


def _check_same(existing: CommandRecord, vehicle_id: str, kind: CommandKind, param: int) -> None:
    if (existing.vehicle_id, existing.kind, existing.param) != (vehicle_id, kind, param):
        raise IdempotencyMismatch(
            f"this Idempotency-Key was used for {existing.kind.value} on vehicle "
            f"{existing.vehicle_id} (command {existing.id})"
        )


def _check_texts(request: CommandRequest) -> None:
    if len(request.reason) > rules.REASON_MAX:
        raise InvalidCommand(f"reason is at most {rules.REASON_MAX} characters")
    case = request.theft_case_id
    if case is not None and not 1 <= len(case) <= rules.THEFT_CASE_ID_MAX:
        raise InvalidCommand(f"theft_case_id is 1..{rules.THEFT_CASE_ID_MAX} characters")
    key = request.idempotency_key
    if key is not None and not (
        1 <= len(key) <= rules.IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()
    ):
        raise InvalidCommand(
            f"Idempotency-Key is 1..{rules.IDEMPOTENCY_KEY_MAX} printable ASCII characters"
        )


def _describe(command: CommandRecord) -> str:
    params = rules.params_of(command.kind, command.param)
    shown = f" {params}" if params else ""
    return (
        f"{command.kind.value}{shown}, ttl {command.ttl_s} s, number {command.seq or 'pending'},"
        f" {command.status.value}"
    )


def _state_text(state: int) -> str:
    flags = RecordFlags(state)
    locked = "locked" if flags & RecordFlags.DOORS_LOCKED else "unlocked"
    inhibit = "inhibited" if flags & RecordFlags.ENGINE_START_INHIBITED else "not inhibited"
    return f"doors {locked}, engine start {inhibit}"


__all__ = [
    "CommandRequest",
    "CommandService",
    "CommandStore",
    "Listener",
    "Requester",
    "Sender",
]
