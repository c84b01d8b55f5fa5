"""Remote commands: the service between the API and the boxes (docs/commands.md)."""

from __future__ import annotations

from gateway.commands.errors import (
    CommandError,
    EngineStartCapReached,
    IdempotencyMismatch,
    ImmobilizationSuspended,
    InvalidCommand,
    NoBoxFitted,
    NotAllowed,
    VehicleFrozen,
    WrongState,
)
from gateway.commands.service import (
    CommandRequest,
    CommandService,
    CommandStore,
    Listener,
    Requester,
    Sender,
)

__all__ = [
    "CommandError",
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
    "VehicleFrozen",
    "WrongState",
]
