"""What each command is, who may send it, and how it goes on the wire. Pure functions.

The API and the service both apply these rules: the API to answer early with the right status,
the service because it is the one place every path (API, approval, delivery) goes through.
"""

from __future__ import annotations

from collections.abc import Mapping

from commands.errors import IdempotencyMismatch, InvalidCommand
from protocol.gp8 import Command, CommandFailure, CommandStatus, CommandType
from storage.counters import CounterWindow
from storage.models import CommandKind, CommandRecord, Role

WIRE_TYPE: dict[CommandKind, CommandType] = {
    CommandKind.LOCK: CommandType.LOCK,
    CommandKind.UNLOCK: CommandType.UNLOCK,
    CommandKind.DISABLE_ENGINE_START: CommandType.DISABLE_ENGINE_START,
    CommandKind.ENABLE_ENGINE_START: CommandType.ENABLE_ENGINE_START,
    CommandKind.LOCATE: CommandType.LOCATE,
    CommandKind.SET_REPORT_INTERVAL: CommandType.SET_REPORT_INTERVAL,
    CommandKind.REBOOT: CommandType.REBOOT,
}

# A manager runs the vehicles day to day: doors and "where is it now". Everything that can
# strand a driver or change how the box behaves is for admins only.
MANAGER_KINDS = frozenset({CommandKind.LOCK, CommandKind.UNLOCK, CommandKind.LOCATE})
ENGINE_START_KINDS = frozenset({CommandKind.DISABLE_ENGINE_START, CommandKind.ENABLE_ENGINE_START})
# The hourly engine-start cap's shared count (storage/counters.py): a rolling hour in one-minute
# steps, so the hour is strict by up to a minute.
ENGINE_START_WINDOW = CounterWindow(window_ms=3_600_000, bucket_ms=60_000)
# What the platform kill switch suspends. Releasing an inhibit stays possible: the switch exists
# to stop a wave of immobilizations (a bug, a stolen key), not to keep vehicles immobilized.
IMMOBILIZATION_KINDS = frozenset({CommandKind.DISABLE_ENGINE_START})
# Under a fleet's four-eyes policy these wait for a second admin's approval.
FOUR_EYES_KINDS = frozenset({CommandKind.DISABLE_ENGINE_START, CommandKind.UNLOCK})
# A Teltonika box numbers no command, so it cannot tell a resend from a new order: these are
# written to it once, never again at a later login (a box that reboots before it answers would
# otherwise reboot at every login until the TTL). They expire if unanswered.
TELTONIKA_WRITTEN_ONCE = frozenset({CommandKind.REBOOT})

# set_report_interval: the range the box accepts (docs/protocol.md §5.5); outside it the box
# would answer FAILED / INVALID_PARAMETER, so the API refuses it up front.
REPORT_INTERVAL_MIN_S = 5
REPORT_INTERVAL_MAX_S = 3600
# ttl_s: 0 is "now or never"; a week covers a vehicle parked in an underground car park over
# a long holiday, and bounds how long a forgotten order can still fire.
MAX_TTL_S = 7 * 24 * 3600
DEFAULT_TTL_S = 300
# "Now or never" still needs a bound for the answer of a box it was sent to.
NOW_OR_NEVER_ANSWER_S = 30
# Free texts written to the audit log.
REASON_MAX = 500
THEFT_CASE_ID_MAX = 64
# IETF draft-ietf-httpapi-idempotency-key-header: a client-chosen string; 128 visible ASCII
# characters hold a UUID or a hash with room to spare.
IDEMPOTENCY_KEY_MAX = 128

_ROLE_RANK = {Role.VIEWER: 0, Role.MANAGER: 1, Role.ADMIN: 2}


def engine_start_counter(fleet_id: str) -> str:
    """The name of the fleet's engine-start count."""
    return f"engine_start:{fleet_id}"


def required_role(kind: CommandKind) -> Role:
    return Role.MANAGER if kind in MANAGER_KINDS else Role.ADMIN


def role_allows(role: Role, kind: CommandKind) -> bool:
    """May a fleet key of ``role`` issue (or cancel) a command of ``kind``? Never the operator."""
    rank = _ROLE_RANK.get(role)
    return rank is not None and rank >= _ROLE_RANK[required_role(kind)]


def wire_param(kind: CommandKind, params: Mapping[str, object]) -> int:
    """The COMMAND frame's u32 parameter for ``params``; InvalidCommand when they are wrong.

    Only typed, range-checked integers reach the frame: there is no way to pass bytes.
    """
    if kind is CommandKind.SET_REPORT_INTERVAL:
        extra = set(params) - {"seconds"}
        if extra:
            raise InvalidCommand(f"set_report_interval takes only 'seconds', not {sorted(extra)}")
        seconds = params.get("seconds")
        # type() rather than isinstance(): True is an int to Python, not to us.
        if type(seconds) is not int:
            raise InvalidCommand("set_report_interval needs params.seconds, an integer")
        if not REPORT_INTERVAL_MIN_S <= seconds <= REPORT_INTERVAL_MAX_S:
            raise InvalidCommand(
                f"params.seconds must be {REPORT_INTERVAL_MIN_S}..{REPORT_INTERVAL_MAX_S}"
            )
        return seconds
    if params:
        raise InvalidCommand(f"{kind.value} takes no params")
    return 0


def params_of(kind: CommandKind, param: int) -> dict[str, int]:
    """The API's ``params`` object for a stored command."""
    return {"seconds": param} if kind is CommandKind.SET_REPORT_INTERVAL else {}


def check_ttl(ttl_s: int) -> None:
    if type(ttl_s) is not int or not 0 <= ttl_s <= MAX_TTL_S:
        raise InvalidCommand(f"ttl_s must be an integer 0..{MAX_TTL_S}")


def check_texts(reason: str, theft_case_id: str | None, idempotency_key: str | None) -> None:
    """The free texts of a request, written to the audit log, and its Idempotency-Key."""
    if len(reason) > REASON_MAX:
        raise InvalidCommand(f"reason is at most {REASON_MAX} characters")
    if theft_case_id is not None and not 1 <= len(theft_case_id) <= THEFT_CASE_ID_MAX:
        raise InvalidCommand(f"theft_case_id is 1..{THEFT_CASE_ID_MAX} characters")
    key = idempotency_key
    if key is not None and not (
        1 <= len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()
    ):
        raise InvalidCommand(
            f"Idempotency-Key is 1..{IDEMPOTENCY_KEY_MAX} printable ASCII characters"
        )


def check_same_order(
    existing: CommandRecord, vehicle_id: str, kind: CommandKind, param: int
) -> None:
    """A replayed Idempotency-Key must carry the order it was first used for."""
    if (existing.vehicle_id, existing.kind, existing.param) != (vehicle_id, kind, param):
        raise IdempotencyMismatch(
            f"this Idempotency-Key was used for {existing.kind.value} on vehicle "
            f"{existing.vehicle_id} (command {existing.id})"
        )


def wire_command(command: CommandRecord) -> Command:
    """The COMMAND frame: its ``seq`` is the command's number (docs/protocol.md §5.5)."""
    return Command(command.seq, WIRE_TYPE[command.kind], command.param)


def failure_of(status: CommandStatus, failure: CommandFailure) -> str | None:
    """The stored failure reason of a COMMAND_RESULT, None when it says done."""
    if status is CommandStatus.DONE:
        return None
    if status is CommandStatus.UNSUPPORTED:
        return "unsupported"
    return failure.name.lower() if failure is not CommandFailure.NONE else "failed"
