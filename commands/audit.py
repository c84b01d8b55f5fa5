"""The audit lines of commands (docs/commands.md, "Audit log").

Every line says who (``actor``, ``key_id``), when, why (the request's reason and theft case,
copied into each line so a line reads on its own) and what became of the command. Lines are
built here and stored by storage together with the change they describe.
"""

from __future__ import annotations

import itertools

from commands import rules
from commands.clock import Clock
from protocol.gp8 import RecordFlags
from storage.models import AuditEntry, CommandRecord, CommandState, random_hex

SYSTEM = "system"
# The audit log lists lines by (time, id). Lines written within one millisecond (a request and
# its send, on a fast disk) would fall in the random order of `storage.models.new_id`; a
# counter in place of half its random digits keeps this process's lines in the order written.
_WRITTEN = itertools.count()


def key_actor(key_id: str | None) -> str:
    return f"key:{key_id}"


def box_actor(imei: str) -> str:
    return f"box:{imei}"


class AuditLines:
    """Builds audit entries stamped by the service's clock, for one process (``gateway_id``)."""

    def __init__(self, clock: Clock, gateway_id: str) -> None:
        self._clock = clock
        self.gateway_actor = f"gateway:{gateway_id}"

    def _id(self) -> str:
        """Like `new_id("aud")` (12 hex digits of time, 12 more), but in writing order."""
        written = next(_WRITTEN) & 0xFFFFFF
        return f"aud_{self._clock.now_ms():012x}{written:06x}{random_hex(3)}"

    def about(
        self,
        command: CommandRecord,
        action: str,
        *,
        actor: str,
        key_id: str | None = None,
        status: CommandState | None = None,
        detail: str = "",
    ) -> AuditEntry:
        """A line about ``command``: by default the requesting key and the current status."""
        return AuditEntry(
            id=self._id(),
            time_ms=self._clock.now_ms(),
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

    def plain(
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
        """A line about no command (refusals, alerts, policies; ``fleet_id`` None: platform)."""
        return AuditEntry(
            id=self._id(),
            time_ms=self._clock.now_ms(),
            fleet_id=fleet_id,
            action=action,
            actor=actor or key_actor(key_id),
            key_id=key_id,
            vehicle_id=vehicle_id,
            reason=reason,
            theft_case_id=theft_case_id,
            detail=detail,
        )


def describe(command: CommandRecord) -> str:
    """The detail of ``command.requested``: the order as it was asked for."""
    params = rules.params_of(command.kind, command.param)
    shown = f" {params}" if params else ""
    return (
        f"{command.kind.value}{shown}, ttl {command.ttl_s} s, number {command.seq or 'pending'},"
        f" {command.status.value}"
    )


def state_text(state: int) -> str:
    """The doors and inhibit a box reported, in words."""
    flags = RecordFlags(state)
    locked = "locked" if flags & RecordFlags.DOORS_LOCKED else "unlocked"
    inhibit = "inhibited" if flags & RecordFlags.ENGINE_START_INHIBITED else "not inhibited"
    return f"doors {locked}, engine start {inhibit}"
