from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.deps import AuditDep, StoreDep, Viewer
from api.params import DAY_MS, Cursor, Limit, TimeRange, time_range
from api.problems import problem_responses
from api.schemas.events import EventsPublic, EventType
from api.services import formats

router = APIRouter(
    prefix="/v1/events",
    tags=["events"],
    responses=problem_responses(400, 401, 403, 404, 422, 429, 503),
)


@router.get("", response_model=EventsPublic)
async def list_events(
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(DAY_MS))],
    vehicle_id: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[EventType | None, Query(description="Event code")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Events and alarms, oldest first, each with the position where it happened."""
    if vehicle_id is not None:
        await store.vehicles.get(caller.fleet_id, vehicle_id)  # 404 for another fleet's id
    page = await store.telemetry.events(
        caller.fleet_id,
        vehicle_id=vehicle_id,
        code=type.value if type else None,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        cursor=cursor,
        limit=limit,
    )
    await audit("read", "events", vehicle_id, detail=f"{len(page.items)} events")
    return {
        "data": [formats.event_dict(e) for e in page.items],
        "next_cursor": page.next_cursor,
    }
