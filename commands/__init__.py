"""Remote commands: from the API request to the box's answer (docs/commands.md).

A package of its own between `api/` and the transports: it depends on `protocol/` (the COMMAND
frame and the answers) and `storage/` only, never on `gateway/` or `api/`. Transports reach it
through the `Sender` Protocol and the `CommandService` hooks.

Modules: `service` (the facade a process wires), `requests` (the API's use cases), `delivery`
(writing commands, resends, polling, expiry), `replies` (the box's answers), `alerts`
(duplicate-box freeze, cap alerts), `audit` (audit lines), `rules` (pure checks and the wire
mapping), `errors`, `metrics` (a prometheus-client collector), `clock`, `ports`.
"""

from __future__ import annotations

from commands import rules
from commands.clock import SYSTEM_CLOCK, Clock, SystemClock
from commands.errors import (
    CommandError,
    CommandRefused,
    EngineStartCapReached,
    IdempotencyMismatch,
    ImmobilizationSuspended,
    InvalidCommand,
    NoBoxFitted,
    NotAllowed,
    VehicleFrozen,
    WrongState,
)
from commands.metrics import CommandMetrics
from commands.ports import CommandStore, Listener, Sender
from commands.replies import BoxReply
from commands.requests import BulkOutcome, BulkRequest, CommandRequest, Requester
from commands.service import CommandService

__all__ = [
    "SYSTEM_CLOCK",
    "BoxReply",
    "BulkOutcome",
    "BulkRequest",
    "Clock",
    "CommandError",
    "CommandMetrics",
    "CommandRefused",
    "CommandRequest",
    "CommandService",
    "CommandStore",
    "EngineStartCapReached",
    "IdempotencyMismatch",
    "ImmobilizationSuspended",
    "InvalidCommand",
    "Listener",
    "NoBoxFitted",
    "NotAllowed",
    "Requester",
    "Sender",
    "SystemClock",
    "VehicleFrozen",
    "WrongState",
    "rules",
]
