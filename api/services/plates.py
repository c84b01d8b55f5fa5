"""Plate search: a plate is matched ignoring case, spaces, dashes and dots (``js-829-wh`` finds
``JS829WH``), as people type plates the way they remember them, not as they were registered.

Stored plates keep the owner's spelling, so the match is made here over the fleet's vehicles
(at most a few thousand rows, read in pages) rather than by an exact query.
"""

from __future__ import annotations

import re

from storage.models import Page, Vehicle
from storage.pagination import encode_cursor
from storage.repository import VehicleRepo

_SEPARATORS = re.compile(r"[\s\-._·]+")
# Rows read per storage page while scanning: the storage layer's largest cheap page.
_SCAN_PAGE = 1000


def plate_key(plate: str) -> str:
    """The comparable form of a plate: upper case without separators."""
    return _SEPARATORS.sub("", plate).upper()


async def find_by_plate(
    vehicles: VehicleRepo,
    fleet_id: str,
    plate: str,
    *,
    cursor: str | None,
    limit: int,
    vin: str | None,
    fitted: bool | None,
) -> Page[Vehicle]:
    """The fleet's vehicles whose plate matches ``plate`` (see `plate_key`), paged like the
    storage listing (in id order, with the same cursors)."""
    wanted = plate_key(plate)
    found: list[Vehicle] = []
    while True:
        page = await vehicles.list(
            fleet_id, cursor=cursor, limit=_SCAN_PAGE, vin=vin, fitted=fitted
        )
        for vehicle in page.items:
            if plate_key(vehicle.plate) == wanted:
                if len(found) == limit:
                    # One more match exists: the page ends at the last one returned.
                    return Page(found, encode_cursor("vehicle", (found[-1].id,)))
                found.append(vehicle)
        if page.next_cursor is None:
            return Page(found, None)
        cursor = page.next_cursor
