"""What a box says about its commands: COMMAND_RESULT, and the ACK or NACK of a COMMAND frame
(docs/commands.md, "Answer", "Late answers"; docs/protocol.md §5.5 and §5.6).

Answers are correlated by (IMEI, command number) and stored before the transport ACKs them to
the box. A status change is a compare-and-set, so a repeated answer (the box answers a resend
from its memory) changes nothing, and an answer to a command already given up on is logged as
a late result without touching the final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from commands import rules
from commands.alerts import Alerts
from commands.audit import box_actor, state_text
from commands.context import CommandContext
from commands.delivery import RETRYABLE, Delivery
from commands.ports import HOOK_TIMEOUT_S
from protocol.gp8 import Ack, CommandResult, CommandStatus, Nack, NackReason, RecordFlags
from protocol.teltonika.commands import Answer
from storage.models import (
    CommandChanges,
    CommandKind,
    CommandRecord,
    CommandState,
    CommandStep,
    VehicleLockState,
)

log = logging.getLogger(__name__)

BoxReply = CommandResult | Ack | Nack | Answer
# A Teltonika box's words kept in a failure reason (the audit line has them all).
ANSWER_IN_FAILURE = 120
# After its answer, a command in one of these took no effect from it: the answer came late.
_GAVE_UP = frozenset({CommandState.EXPIRED, CommandState.CANCELLED})


@dataclass(slots=True)
class _Receipt:
    """A box's ACK of a COMMAND not stored yet."""

    command: CommandRecord
    at_ms: int
    storing: asyncio.Task[CommandRecord | None] | None = None  # its own write, once started


class Replies:
    def __init__(self, ctx: CommandContext, delivery: Delivery, alerts: Alerts) -> None:
        self._ctx = ctx
        self._delivery = delivery
        self._alerts = alerts
        # Receipts waiting for their write, by (imei, number): an answer read right after its
        # receipt (the usual case: the box sends both at once) is stored with it in one write.
        self._receipts: dict[tuple[str, int], _Receipt] = {}
        # One handler per message type the transports hand over; nothing else reaches here.
        self._handlers: dict[type[Any], Callable[[str, Any], Awaitable[None]]] = {
            CommandResult: self._result,
            Ack: self._receipt,
            Nack: self._nack,
            Answer: self._answer,
        }

    async def on_box_reply(self, imei: str, message: BoxReply) -> None:
        """A COMMAND_RESULT, or the ACK/NACK of a COMMAND; stored before the box is ACKed."""
        async with asyncio.timeout(HOOK_TIMEOUT_S):
            await self._handlers[type(message)](imei, message)

    async def _command(self, imei: str, seq: int) -> CommandRecord | None:
        """Command ``seq`` of the box: as this process wrote it on the box's session, else
        read (the compare-and-set of the change that follows decides either way)."""
        known = self._delivery.known(imei, seq)
        return known if known is not None else await self._ctx.store.commands.by_seq(imei, seq)

    async def _result(self, imei: str, result: CommandResult) -> None:
        ctx = self._ctx
        command = await self._command(imei, result.command_seq)
        if command is None:
            ctx.stats["results_unknown"] += 1
            log.warning(
                "imei=%s answered command number %d, which it never got", imei, result.command_seq
            )
            return
        now = ctx.clock.now_ms()
        state = _reported_state(command, result, now)
        failure = rules.failure_of(result.status, result.failure)
        outcome = "done" if failure is None else f"failed: {failure}"
        done = await self._complete(
            imei,
            command,
            failure,
            now,
            detail=f"{outcome}; state {state_text(result.state)}",
            state=state,
            changes={"result_state": result.state},
        )
        if done is not None:
            if command.kind is CommandKind.REBOOT and failure is None:
                self._alerts.rebooted(imei)
            return
        current = await ctx.store.commands.by_seq(imei, result.command_seq)
        if current is None or current.status not in _GAVE_UP:
            ctx.stats["duplicate_results"] += 1  # a resend of an answer already stored
            return
        await self._late(
            imei,
            current,
            state,
            f"{outcome} after the command was {current.status.value}; "
            f"state {state_text(result.state)}",
        )

    async def _answer(self, imei: str, answer: Answer) -> None:
        """A Teltonika box's Codec 12 response, matched by the gateway to the one command it
        had outstanding (docs/teltonika.md, "Commands"): done, or failed with the box's words."""
        ctx = self._ctx
        command = None
        if answer.command_seq is not None:
            command = await ctx.store.commands.by_seq(imei, answer.command_seq)
        if command is None:
            ctx.stats["results_unknown"] += 1
            log.warning("imei=%s answered %r with no command outstanding", imei, answer.text)
            return
        now = ctx.clock.now_ms()
        failure = None if answer.ok else f"box_refused: {answer.text[:ANSWER_IN_FAILURE]}"
        state = await _answered_state(ctx, command, answer, now)
        done = await self._complete(
            imei, command, failure, now, detail=f"box: {answer.text}", state=state, changes={}
        )
        if done is not None or command.status not in _GAVE_UP:
            return
        await self._late(
            imei, command, state, f"box: {answer.text} after the command was {command.status.value}"
        )

    async def _complete(
        self,
        imei: str,
        command: CommandRecord,
        failure: str | None,
        now: int,
        *,
        detail: str,
        state: VehicleLockState | None,
        changes: CommandChanges,
    ) -> CommandRecord | None:
        """The box's answer ends the command: acknowledged, or failed with ``failure``; None
        when it was no longer waiting for one (answered already, or given up on)."""
        ctx = self._ctx
        status = CommandState.ACKNOWLEDGED if failure is None else CommandState.FAILED
        changes = {**changes, "completed_ms": now}
        if failure is not None:
            changes["failure"] = failure
        steps = []
        receipt = self._receipts.pop((imei, command.seq), None)
        if receipt is not None and receipt.storing is not None:
            # Its write is under way: after it, so the delivered line comes first.
            stored = None
            with contextlib.suppress(Exception):  # failed: logged by its task
                stored = await asyncio.shield(receipt.storing)
            command = stored or command
        elif receipt is not None:
            # The receipt read with its answer (one chunk): both lines in one write.
            steps.append(self._receipt_step(imei, receipt))
            changes["delivered_ms"] = receipt.at_ms  # the ACK's time stays the delivery's
        if command.delivered_ms is None and "delivered_ms" not in changes:
            changes["delivered_ms"] = now
        steps.append(
            ctx.step(
                command,
                status,
                expected={CommandState.SENT, CommandState.QUEUED},
                at_ms=now,
                action=f"command.{status.value}",
                actor=box_actor(imei),
                detail=detail,
                changes=changes,
                vehicle_state=state,  # stored with the status: seen together
            )
        )
        changed = await ctx.apply(command, steps)
        if changed:
            self._delivery.remember(changed[-1])
        if len(changed) == len(steps):
            return changed[-1]
        return None

    async def _late(
        self, imei: str, command: CommandRecord, state: VehicleLockState | None, detail: str
    ) -> None:
        """The box did it after we gave up on it: the log must say so, and the vehicle shows
        what the box did."""
        ctx = self._ctx
        ctx.stats["late_results"] += 1
        if state is not None:
            await ctx.store.commands.set_vehicle_state(state)
        await ctx.store.audit.append(
            ctx.lines.about(command, "command.late_result", actor=box_actor(imei), detail=detail)
        )

    async def _receipt(self, imei: str, ack: Ack) -> None:
        """The box ACKed the COMMAND frame: it has it (``delivered_at``), no resend needed.

        Stored in the background (the box waits for no answer to an ACK): when its answer
        was read with it, as usual, the answer's write takes the receipt along.
        """
        command = await self._command(imei, ack.acked_seq)
        if command is None or command.status is not CommandState.SENT or command.delivered_ms:
            return
        key = (imei, command.seq)
        if key in self._receipts:
            return  # the same ACK twice: stored once
        receipt = self._receipts[key] = _Receipt(command, self._ctx.clock.now_ms())
        self._ctx.spawn(self._store_receipt(imei, receipt))

    async def _store_receipt(self, imei: str, receipt: _Receipt) -> CommandRecord | None:
        key = (imei, receipt.command.seq)
        if self._receipts.get(key) is not receipt:
            return None  # taken by the answer's write
        receipt.storing = asyncio.current_task()
        try:
            async with asyncio.timeout(HOOK_TIMEOUT_S):
                changed = await self._ctx.apply(
                    receipt.command, [self._receipt_step(imei, receipt)]
                )
        except RETRYABLE as exc:
            self._ctx.stats["delivery_errors"] += 1
            log.warning("imei=%s: receipt of command %d not stored: %r", imei, key[1], exc)
            return None
        finally:
            if self._receipts.get(key) is receipt:
                del self._receipts[key]
        if not changed:
            return None
        self._delivery.remember(changed[-1])
        return changed[-1]

    def _receipt_step(self, imei: str, receipt: _Receipt) -> CommandStep:
        return self._ctx.step(
            receipt.command,
            CommandState.SENT,
            expected={CommandState.SENT},
            at_ms=receipt.at_ms,
            action="command.delivered",
            actor=box_actor(imei),
            changes={"delivered_ms": receipt.at_ms},
        )

    async def _nack(self, imei: str, nack: Nack) -> None:
        command = await self._command(imei, nack.nacked_seq)
        if command is None or command.status is not CommandState.SENT:
            return
        if nack.reason is NackReason.BAD_CRC:
            # Damaged on the way: the box asks for it again (docs/protocol.md §5.6).
            self._delivery.resend(imei, command.seq)
            return
        await self._delivery.fail(
            command, f"box_nack_{nack.reason.name.lower()}", "the box refused it"
        )


def _reported_state(
    command: CommandRecord, result: CommandResult, now: int
) -> VehicleLockState | None:
    """What the box reports after trying, done or not: the vehicle's truth (None: UNSUPPORTED,
    which says nothing about the vehicle)."""
    if result.status is CommandStatus.UNSUPPORTED:
        return None
    return VehicleLockState(
        fleet_id=command.fleet_id,
        vehicle_id=command.vehicle_id,
        device_id=command.device_id,
        doors_locked=bool(result.state & RecordFlags.DOORS_LOCKED),
        engine_start_inhibited=bool(result.state & RecordFlags.ENGINE_START_INHIBITED),
        updated_ms=now,
        command_id=command.id,
    )


async def _answered_state(
    ctx: CommandContext, command: CommandRecord, answer: Answer, now: int
) -> VehicleLockState | None:
    """The vehicle's state after a Teltonika answer: what it says of the outputs, the rest as
    last known (None when it says nothing of them)."""
    if answer.engine_start_inhibited is None and answer.doors_locked is None:
        return None
    known = await ctx.store.commands.vehicle_state(command.fleet_id, command.vehicle_id)
    inhibited = answer.engine_start_inhibited
    locked = answer.doors_locked
    return VehicleLockState(
        fleet_id=command.fleet_id,
        vehicle_id=command.vehicle_id,
        device_id=command.device_id,
        doors_locked=locked if locked is not None else bool(known and known.doors_locked),
        engine_start_inhibited=inhibited
        if inhibited is not None
        else bool(known and known.engine_start_inhibited),
        updated_ms=now,
        command_id=command.id,
    )
