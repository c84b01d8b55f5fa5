"""Why a command request is refused. The API maps each to a problem type and status."""

from __future__ import annotations


class CommandError(Exception):
    """Base class of the command service's refusals."""


class InvalidCommand(CommandError):
    """Parameters, TTL or texts that no command of this type accepts (422)."""


class NotAllowed(CommandError):
    """The key's role may not do this, or it approves its own request (403)."""


class NoBoxFitted(CommandError):
    """The vehicle has no box to send to (409)."""


class VehicleFrozen(CommandError):
    """An open duplicate-box alert freezes commands to this vehicle (409)."""

    def __init__(self, message: str, alert_ids: list[str]) -> None:
        super().__init__(message)
        self.alert_ids = alert_ids


class ImmobilizationSuspended(CommandError):
    """The platform kill switch is engaged (409)."""


class EngineStartCapReached(CommandError):
    """The fleet used its hourly engine-start commands (429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WrongState(CommandError):
    """Cancel or approve a command that is past that point (409)."""


class IdempotencyMismatch(CommandError):
    """An Idempotency-Key reused for a different command (422)."""
