"""Why the command service refuses a request: one tree, grouped by what the caller can do.

`CommandError` is the root of the commands layer, as `StorageError` is of storage: a caller
catches it (or one kind below it) and never needs to know which rule spoke. The API turns each
class into an RFC 9457 problem with one handler registered for the root, looking the class up
along its hierarchy (api/problems.py), so a new refusal under a kind inherits its answer.

    CommandError
    ├── InvalidCommand            the request itself is wrong; resending it never helps
    │   └── IdempotencyMismatch
    ├── NotAllowed                the key may not do this
    └── CommandRefused            a safety rule or the command's state says no, for now
        ├── NoBoxFitted
        ├── VehicleFrozen
        ├── ImmobilizationSuspended
        ├── WrongState
        └── EngineStartCapReached
"""

from __future__ import annotations


class CommandError(Exception):
    """Base class of every refusal of the command service."""


class InvalidCommand(CommandError):
    """Parameters, TTL or texts that no command of this type accepts (422)."""


class IdempotencyMismatch(InvalidCommand):
    """An Idempotency-Key reused for a different command (422)."""


class NotAllowed(CommandError):
    """The key's role may not do this, or it approves its own request (403)."""


class CommandRefused(CommandError):
    """A valid request that the platform's rules or the command's state refuse now (409)."""


class NoBoxFitted(CommandRefused):
    """The vehicle has no box to send to (409)."""


class VehicleFrozen(CommandRefused):
    """An open duplicate-box alert freezes commands to this vehicle (409)."""

    def __init__(self, message: str, alert_ids: list[str]) -> None:
        super().__init__(message)
        self.alert_ids = alert_ids


class ImmobilizationSuspended(CommandRefused):
    """The platform kill switch is engaged (409)."""


class WrongState(CommandRefused):
    """Cancel or approve a command that is past that point (409)."""


class EngineStartCapReached(CommandRefused):
    """The fleet used its hourly engine-start commands (429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
