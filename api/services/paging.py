"""Walking every page of a storage listing, for exports and computations over a range."""

from __future__ import annotations

from collections.abc import AsyncIterator

from storage.models import Page, Position
from storage.repository import TelemetryRepo

# Rows per storage round trip when walking a whole range: large enough that round trips do not
# dominate, small enough that one page stays a few MB.
WALK_PAGE = 5000


async def position_pages(
    telemetry: TelemetryRepo,
    fleet_id: str,
    vehicle_id: str,
    *,
    from_ms: int,
    to_ms: int,
    first: Page[Position] | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> AsyncIterator[list[Position]]:
    """Pages of the vehicle's positions in [from_ms, to_ms), oldest first.

    ``first`` is a page already fetched (the route fetches it before answering, so a bad cursor
    or an unreachable database is still a proper error response); ``limit`` caps the total.
    """
    remaining = limit
    page = first
    while True:
        if page is None:
            size = WALK_PAGE if remaining is None else min(WALK_PAGE, remaining)
            page = await telemetry.positions(
                fleet_id, vehicle_id, from_ms=from_ms, to_ms=to_ms, cursor=cursor, limit=size
            )
        items = page.items if remaining is None else page.items[:remaining]
        yield items
        if remaining is not None:
            remaining -= len(items)
            if remaining <= 0:
                return
        if page.next_cursor is None:
            return
        cursor, page = page.next_cursor, None
