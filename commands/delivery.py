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
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

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
    NUMBER_TOKEN,
    Alert,
    AuditEntry,
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


@dataclass(frozen=True, slots=True)
class Direct:
    """A command stored and written at once (`Delivery.create_and_send`)."""

    # Once stored: the command and whether it is new, as `CommandRepo.create`; None when it
    # could not go this way after all (the box frozen, or the kill switch holding it).
    stored: asyncio.Future[tuple[CommandRecord, bool] | None]
    writing: asyncio.Task[None]  # storing, then the frame, under the box's lock


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
        # Commands written to each box on its current session, by number, as this process
        # last stored them: not written again on that session unless the resend timer says
        # so, and the box's answers to them need no read (`known`).
        self._session_sent: dict[str, dict[int, CommandRecord]] = {}
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
        self._session_sent[imei] = {}
        self.later(imei)

    def resend(self, imei: str, seq: int) -> None:
        """Write command ``seq`` again on this session (the box asked: NACK BAD_CRC)."""
        self._session_sent.get(imei, {}).pop(seq, None)
        self.later(imei)

    def release_held(self) -> None:
        """The kill switch was released: held immobilizations of boxes here go out now."""
        for imei in list(self._session_sent):
            self.later(imei)

    def later(
        self,
        imei: str,
        device: Device | None = None,
        open_alerts: Sequence[Alert] | None = None,
    ) -> asyncio.Task[list[CommandRecord]]:
        """Deliver to ``imei`` in the background; a failure is logged and retried later."""
        return self._ctx.spawn(self._deliver_logged(imei, device, open_alerts))

    async def dispatch(
        self,
        command: CommandRecord,
        device: Device | None = None,
        open_alerts: Sequence[Alert] | None = None,
    ) -> CommandRecord:
        """Send a command just queued (or approved) if its box is here; fail a "now or never"
        command whose box is connected nowhere. Returns the command as it is now.
        ``device``, ``open_alerts``: the box's record and open alerts, if just read."""
        if self.sender_for(command.imei) is not None:
            task = self.later(command.imei, device, open_alerts)
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

    def create_and_send(
        self,
        record: CommandRecord,
        requested: AuditEntry,
        device: Device,
        open_alerts: Sequence[Alert],
    ) -> Direct | None:
        """A new command for a box connected here: stored queued and sent in one write (both
        audit lines), then written, in the background under the box's lock (`Direct`); it
        stays queued, for `dispatch`, when another command of the box waits before it. None
        when it cannot go this way (the box is not here, or busy with another delivery, whose
        order must hold and whose stalled link must not hold the request): the caller stores
        it.
        """
        sender = self.sender_for(record.imei)
        on_session = self._session_sent.get(record.imei)
        if sender is None or on_session is None or self._boxes.busy(record.imei):
            return None
        stored: asyncio.Future[tuple[CommandRecord, bool] | None] = (
            asyncio.get_running_loop().create_future()
        )
        work = self._create_and_write(
            record, requested, device, open_alerts, sender, on_session, stored
        )
        return Direct(stored, self._ctx.spawn(work))

    async def written(self, direct: Direct) -> None:
        """Wait for a direct command's frame, at most as long as `dispatch` waits."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(direct.writing), self._delivery_wait_s)

    async def _create_and_write(
        self,
        record: CommandRecord,
        requested: AuditEntry,
        device: Device,
        open_alerts: Sequence[Alert],
        sender: Sender,
        on_session: dict[int, CommandRecord],
        stored: asyncio.Future[tuple[CommandRecord, bool] | None],
    ) -> None:
        ctx = self._ctx
        try:
            async with self._boxes.hold(record.imei):
                held = record.kind in rules.IMMOBILIZATION_KINDS
                if await self._alerts.freezing(device, open_alerts) or (
                    held and (await self._kill_switch.current()).engaged
                ):
                    stored.set_result(None)  # stored queued by the caller, and held
                    return
                now = ctx.clock.now_ms()
                sent_step = ctx.step(
                    record,
                    CommandState.SENT,
                    expected={CommandState.QUEUED},
                    at_ms=now,
                    action="command.sent",
                    actor=ctx.lines.gateway_actor,
                    detail=f"attempt 1, command number {NUMBER_TOKEN}",
                    changes={"sent_ms": now, "gateway_id": ctx.gateway_id},
                    attempts_delta=1,
                )
                # Checked in the write itself: one numbered before it and stored meanwhile
                # counts, as every live one not written on this session yet.
                sent_step = dataclasses.replace(sent_step, overtakes=frozenset(on_session))
                versions, created = await ctx.store.commands.create_then(
                    record, requested, [sent_step]
                )
                if created:
                    ctx.announce(None, versions)
                stored.set_result((versions[-1], created))
                if created and versions[-1].status is CommandState.SENT:
                    try:
                        await self._write(sender, versions[-1], on_session)
                    except RETRYABLE as exc:  # it stays sent: it goes again, as `deliver`'s
                        ctx.stats["delivery_errors"] += 1
                        log.warning("imei=%s: command write failed: %r", record.imei, exc)
        except Exception as exc:
            if stored.done():
                raise
            stored.set_exception(exc)  # the request's error, as a create's would be
        finally:
            if not stored.done():
                stored.cancel()

    async def _write(
        self, sender: Sender, sent: CommandRecord, on_session: dict[int, CommandRecord]
    ) -> bool:
        """Write ``sent`` to its box (it is stored as sent already); False if that failed."""
        ctx = self._ctx
        on_session[sent.seq] = sent  # before the write: the box may answer before it returns
        ok = await sender.send(sent.imei, rules.wire_command(sent))
        ctx.metrics.wrote(ok)
        if not ok:
            # Gone: it stays sent and goes again, same number, at the next login.
            on_session.pop(sent.seq, None)
            ctx.stats["send_failed"] += 1
            return False
        ctx.stats["frames_sent"] += 1
        return True

    def known(self, imei: str, seq: int) -> CommandRecord | None:
        """Command ``seq`` of ``imei`` as this process last stored it, if it was written on the
        box's current session here (its answers need no read; storage's compare-and-set
        still decides)."""
        return self._session_sent.get(imei, {}).get(seq)

    def remember(self, command: CommandRecord) -> None:
        """``command`` as just stored by an answer: kept while it waits for more, forgotten
        once final."""
        on_session = self._session_sent.get(command.imei)
        if on_session is None or command.seq not in on_session:
            return
        if command.status is CommandState.SENT:
            on_session[command.seq] = command
        else:
            del on_session[command.seq]

    # --- the delivery itself ------------------------------------------------------------

    async def deliver(
        self,
        imei: str,
        device: Device | None = None,
        open_alerts: Sequence[Alert] | None = None,
    ) -> list[CommandRecord]:
        """Write the box's pending commands it has not had on this session, in number order.

        Returns the commands written. Does nothing when the box is not connected here or is
        frozen; an immobilization is held while the kill switch is on. ``device``: the box's
        record if the caller has just read it, ``open_alerts`` its open alerts.
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
                device, open_alerts = await ctx.store.devices.get_by_imei(imei), None
            if await self._alerts.freezing(device, open_alerts):
                ctx.stats["held_frozen"] += len(pending)
                return []
            kill = await self._kill_switch.current()
            on_session = self._session_sent.setdefault(imei, {})
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
                if not await self._write(sender, sent, on_session):
                    break
                written.append(sent)
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
                    self._session_sent.get(command.imei, {}).pop(command.seq, None)
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

    async def _deliver_logged(
        self, imei: str, device: Device | None, open_alerts: Sequence[Alert] | None
    ) -> list[CommandRecord]:
        try:
            return await self.deliver(imei, device, open_alerts)
        except RETRYABLE as exc:
            self._ctx.stats["delivery_errors"] += 1
            log.warning("imei=%s: command delivery failed, retried later: %r", imei, exc)
            return []

    async def _online_elsewhere(self, device_id: str) -> bool:
        connection = await self._ctx.store.devices.connection(device_id)
        return connection is not None and connection.online
