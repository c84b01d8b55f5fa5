"""Which fix becomes a last position: the rule both engines apply in `TelemetryRepo.store`.

A last position belongs to a *subject*: the vehicle the position was recorded for, or the box
itself when it was not fitted (``vehicle_id`` None). Only valid fixes count, and only the newest
one per subject in a batch is sent to the database, which then keeps it only if it is newer than
what it holds, so a late or resent record never moves a last position back in time.
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.models import Position

_VEHICLE = "v:"
_DEVICE = "d:"


def subject_key(vehicle_id: str | None, device_id: str) -> str:
    # Prefixed so a vehicle id and a box id can never share a key, whatever ids callers use.
    return _VEHICLE + vehicle_id if vehicle_id is not None else _DEVICE + device_id


def vehicle_subject(vehicle_id: str) -> str:
    return _VEHICLE + vehicle_id


def newest_valid_fixes(positions: Iterable[Position]) -> dict[str, Position]:
    """The newest valid fix of each subject in ``positions``.

    Ties on time (two boxes on one vehicle) go to the greater device id, so the choice does not
    depend on the order of the batch.
    """
    newest: dict[str, Position] = {}
    for position in positions:
        if not position.fix_valid:
            continue
        key = subject_key(position.vehicle_id, position.device_id)
        held = newest.get(key)
        if held is None or (position.time_ms, position.device_id) > (
            held.time_ms,
            held.device_id,
        ):
            newest[key] = position
    return newest
