"""What every part of the command service shares: storage, the clock, this process's name,
the announcement of stored changes (listeners, metrics) and the background tasks.

Every status change goes through `CommandContext.transition`: a compare-and-set in storage
with its audit line, then the announcement. No part of the service writes a status otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, TypeVar

from commands.audit import AuditLines
from commands.clock import Clock
from commands.metrics import CommandMetrics
from commands.ports import CommandStore, Listener
from storage.models import (
    CommandChanges,
    CommandRecord,
    CommandState,
    CommandStep,
    VehicleLockState,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class CommandContext:
    def __init__(self, store: CommandStore, clock: Clock, gateway_id: str) -> None:
        self.store = store
        self.clock = clock
        self.gateway_id = gateway_id
        self.lines = AuditLines(clock, gateway_id)
        self.metrics = CommandMetrics()
        self.stats = self.metrics.events  # GET /health shows the same numbers as /metrics
        self.listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def stored(self, command: CommandRecord, before: CommandState | None = None) -> None:
        """Announce ``command`` as just stored (``before``: its status until then)."""
        if command.status is not before:
            self.metrics.entered(command.status)
        for listener in self.listeners:
            try:
                listener(command)
            except Exception:
                log.exception("command listener failed")

    def step(
        self,
        command: CommandRecord,
        status: CommandState,
        *,
        expected: Collection[CommandState],
        at_ms: int,
        action: str,
        actor: str,
        key_id: str | None = None,
        detail: str = "",
        changes: CommandChanges | None = None,
        attempts_delta: int = 0,
        vehicle_state: VehicleLockState | None = None,
    ) -> CommandStep:
        """Moving ``command`` to ``status`` if it is in one of ``expected``, with its audit
        line (``action`` by ``actor``): to store with `transition` or `apply`."""
        return CommandStep(
            status=status,
            expected=frozenset(expected),
            at_ms=at_ms,
            audit=self.lines.about(
                command, action, actor=actor, key_id=key_id, status=status, detail=detail
            ),
            changes=changes or CommandChanges(),
            attempts_delta=attempts_delta,
            vehicle_state=vehicle_state,
        )

    async def transition(
        self,
        command: CommandRecord,
        status: CommandState,
        *,
        expected: Collection[CommandState],
        at_ms: int,
        action: str,
        actor: str,
        key_id: str | None = None,
        detail: str = "",
        changes: CommandChanges | None = None,
        attempts_delta: int = 0,
        vehicle_state: VehicleLockState | None = None,
    ) -> CommandRecord | None:
        """Move ``command`` to ``status`` if it is in one of ``expected``, with its audit line
        (``action`` by ``actor``); None when another change came first. One `step`, applied."""
        step = self.step(
            command,
            status,
            expected=expected,
            at_ms=at_ms,
            action=action,
            actor=actor,
            key_id=key_id,
            detail=detail,
            changes=changes,
            attempts_delta=attempts_delta,
            vehicle_state=vehicle_state,
        )
        changed = await self.apply(command, [step])
        return changed[0] if changed else None

    async def apply(
        self, command: CommandRecord, steps: Sequence[CommandStep]
    ) -> list[CommandRecord]:
        """Several `step`s of ``command`` in one write, each announced; the command after each
        step stored (they stop at the first whose compare-and-set fails)."""
        changed = await self.store.commands.transitions(command.id, steps)
        self.announce(command.status, changed)
        return changed

    def announce(self, before: CommandState | None, versions: Sequence[CommandRecord]) -> None:
        """`stored` for each version of one command, oldest first (``before``: its status
        before the first)."""
        for version in versions:
            self.stored(version, before)
            before = version.status

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``work`` in the background, kept until done (`settle`, `cancel_all`)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self) -> None:
        """Wait until the work started in the background is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
