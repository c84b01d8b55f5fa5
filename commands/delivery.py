"""Getting commands onto the wire, and the sweeper that expires and picks them up
(docs/commands.md, "Delivery", "Resends", "TTL", "Transports and processes").

Storage is the source of truth, so several processes share one database: a process writes only
to boxes connected to it (through its `Sender`s) and finds commands another process queued by
polling. A command moves to ``sent`` (with its audit line) *before* its frame is written, so a
crash at any point leaves it queued or sent, never lost: a sent one is written again, with the
same number, at the box's next login, and the box never executes a number twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from commands import rules
from commands.alerts import Alerts
from commands.audit import SYSTEM
from commands.context import CommandContext
from commands.kill_switch import KillSwitchView
from commands.locks import KeyedLocks
from commands.ports import Sender
from storage.errors import StorageError
from storage.models import (
    LIVE_COMMAND_STATES,
    CommandRecord,
    CommandState,
    Device,
    DeviceProtocol,
)

log = logging.getLogger(__name__)

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
# What a failed delivery or sweep can run into; it is retried at the next login or sweep.
RETRYABLE = (StorageError, TimeoutError, OSError)


class Delivery:
    def __init__(
        self,
        ctx: CommandContext,
        alerts: Alerts,
        kill_switch: KillSwitchView,
        *,
        resend_after_s: float = RESEND_AFTER_S,
        delivery_wait_s: float = DELIVERY_WAIT_S,
    ) -> None:
        self._ctx = ctx
        self._alerts = alerts
        self._kill_switch = kill_switch
        self._resend_after_ms = int(resend_after_s * 1000)
        self._delivery_wait_s = delivery_wait_s
        self.senders: list[Sender] = []
        self._boxes = KeyedLocks()
        # Command numbers written to each box on its current session: not written again on
        # that session unless the resend timer says so.
        self._session_sent: dict[str, set[int]] = {}
        self._last_poll_ms = ctx.clock.now_ms()
        self._last_resend_ms = 0

    def sender_for(self, imei: str) -> Sender | None:
        for sender in self.senders:
            if sender.is_online(imei):
                return sender
        return None

    # --- what starts a delivery ---------------------------------------------------------

    def new_session(self, imei: str) -> None:
        """The box logged in and was answered: everything pending goes, sent ones again."""
        self._session_sent[imei] = set()
        self.later(imei)

    def resend(self, imei: str, seq: int) -> None:
        """Write command ``seq`` again on this session (the box asked: NACK BAD_CRC)."""
        self._session_sent.get(imei, set()).discard(seq)
        self.later(imei)

    def release_held(self) -> None:
        """The kill switch was released: held immobilizations of boxes here go out now."""
        for imei in list(self._session_sent):
            self.later(imei)

    def later(self, imei: str, device: Device | None = None) -> asyncio.Task[list[CommandRecord]]:
        """Deliver to ``imei`` in the background; a failure is logged and retried later."""
        return self._ctx.spawn(self._deliver_logged(imei, device))

    async def dispatch(self, command: CommandRecord, device: Device | None = None) -> CommandRecord:
        """Send a command just queued (or approved) if its box is here; fail a "now or never"
        command whose box is connected nowhere. Returns the command as it is now."""
        if self.sender_for(command.imei) is not None:
            task = self.later(command.imei, device)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self._delivery_wait_s)
            if task.done() and not task.cancelled():
                for sent in task.result():
                    if sent.id == command.id:
                        return sent
        elif command.ttl_s == 0 and not await self._online_elsewhere(command.device_id):
            failed = await self.fail(command, "box_offline", "ttl_s 0 and the box is not connected")
            if failed is not None:
                return failed
        return await self._ctx.store.commands.get(command.fleet_id, command.id)

    # --- the delivery itself ------------------------------------------------------------

    async def deliver(self, imei: str, device: Device | None = None) -> list[CommandRecord]:
        """Write the box's pending commands it has not had on this session, in number order.

        Returns the commands written. Does nothing when the box is not connected here or is
        frozen; an immobilization is held while the kill switch is on. ``device``: the box's
        record if the caller has just read it.
        """
        ctx = self._ctx
        async with self._boxes.hold(imei):
            sender = self.sender_for(imei)
            if sender is None:
                return []
            now = ctx.clock.now_ms()
            pending = await ctx.store.commands.pending_for_box(imei, now)
            if not pending:
                return []
            if device is None or device.imei != imei:
                device = await ctx.store.devices.get_by_imei(imei)
            if await self._alerts.freezing(device):
                ctx.stats["held_frozen"] += len(pending)
                return []
            kill = await self._kill_switch.current()
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
                    await self.fail(command, "box_refitted", "the box is no longer fitted")
                    continue
                if (
                    command.status is CommandState.SENT
                    and device.protocol is DeviceProtocol.TELTONIKA
                    and command.kind in rules.TELTONIKA_WRITTEN_ONCE
                ):
                    continue
                if kill.engaged and command.kind in rules.IMMOBILIZATION_KINDS:
                    ctx.stats["held_kill_switch"] += 1
                    continue
                sent = await ctx.transition(
                    command,
                    CommandState.SENT,
                    expected={CommandState.QUEUED, CommandState.SENT},
                    at_ms=now,
                    action="command.sent",
                    actor=ctx.lines.gateway_actor,
                    detail=f"attempt {command.attempts + 1}, command number {command.seq}",
                    changes={"sent_ms": command.sent_ms or now, "gateway_id": ctx.gateway_id},
                    attempts_delta=1,
                )
                if sent is None:
                    continue  # cancelled, expired or answered meanwhile
                ok = await sender.send(imei, rules.wire_command(sent))
                ctx.metrics.wrote(ok)
                if not ok:
                    # Gone: it stays sent and goes again, same number, at the next login.
                    ctx.stats["send_failed"] += 1
                    break
                on_session.add(sent.seq)
                written.append(sent)
            ctx.stats["frames_sent"] += len(written)
            return written

    async def fail(self, command: CommandRecord, failure: str, detail: str) -> CommandRecord | None:
        """A live command that can never be delivered: ``failed`` with ``failure``."""
        now = self._ctx.clock.now_ms()
        return await self._ctx.transition(
            command,
            CommandState.FAILED,
            expected={CommandState.QUEUED, CommandState.SENT},
            at_ms=now,
            action="command.failed",
            actor=self._ctx.lines.gateway_actor,
            detail=f"{failure}: {detail}",
            changes={"failure": failure, "completed_ms": now},
        )

    # --- periodic work ------------------------------------------------------------------

    async def expire_due(self) -> int:
        """Mark live commands whose TTL has passed as expired; returns how many."""
        ctx = self._ctx
        now = ctx.clock.now_ms()
        expired = 0
        for command in await ctx.store.commands.expiring(now, limit=SWEEP_BATCH):
            sent = command.status is CommandState.SENT
            done = await ctx.transition(
                command,
                CommandState.EXPIRED,
                expected=LIVE_COMMAND_STATES,
                at_ms=now,
                action="command.expired",
                actor=SYSTEM,
                detail=f"TTL passed {'before the box answered' if sent else 'before delivery'}",
                changes={"completed_ms": now},
            )
            expired += done is not None
        return expired

    async def poll(self) -> int:
        """Send what other processes queued for boxes connected here, and resend COMMANDs a
        connected box neither ACKed nor answered; returns how many boxes were served."""
        commands = self._ctx.store.commands
        now = self._ctx.clock.now_ms()
        since = self._last_poll_ms - POLL_OVERLAP_MS
        self._last_poll_ms = now
        recent = await commands.in_status(
            CommandState.QUEUED, updated_from_ms=since, limit=SWEEP_BATCH
        )
        boxes = {c.imei for c in recent if self.sender_for(c.imei) is not None}
        if now - self._last_resend_ms >= self._resend_after_ms // 2:
            self._last_resend_ms = now
            # Every queued command, not only recent ones: a transport without a login hook
            # (MQTT presence is implicit) still gets the queue of a box that came back.
            queued = await commands.in_status(CommandState.QUEUED, limit=SWEEP_BATCH)
            boxes.update(c.imei for c in queued if self.sender_for(c.imei) is not None)
            stale = await commands.in_status(
                CommandState.SENT, updated_to_ms=now - self._resend_after_ms, limit=SWEEP_BATCH
            )
            for command in stale:
                if command.delivered_ms is None and self.sender_for(command.imei) is not None:
                    self._session_sent.get(command.imei, set()).discard(command.seq)
                    boxes.add(command.imei)
        for imei in list(self._session_sent):
            if self.sender_for(imei) is None:
                del self._session_sent[imei]
        for imei in boxes:
            await self.deliver(imei)
        return len(boxes)

    async def sweep_forever(self, interval_s: float) -> None:
        """Expire and poll every ``interval_s`` until cancelled; errors never stop it."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.expire_due()
                await self.poll()
            except RETRYABLE as exc:
                self._ctx.stats["sweep_errors"] += 1
                log.warning("command sweep failed: %r", exc)
            except Exception:
                log.exception("command sweep failed")

    # --- internals ----------------------------------------------------------------------

    async def _deliver_logged(self, imei: str, device: Device | None) -> list[CommandRecord]:
        try:
            return await self.deliver(imei, device)
        except RETRYABLE as exc:
            self._ctx.stats["delivery_errors"] += 1
            log.warning("imei=%s: command delivery failed, retried later: %r", imei, exc)
            return []

    async def _online_elsewhere(self, device_id: str) -> bool:
        connection = await self._ctx.store.devices.connection(device_id)
        return connection is not None and connection.online
