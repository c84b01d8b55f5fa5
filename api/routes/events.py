from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from api.deps import AuditDep, StoreDep, Viewer
from api.params import DAY_MS, Cursor, Limit, Order, OrderQuery, TimeRange, time_range
from api.problems import problem_responses
from api.schemas.events import EventsPublic, EventType
from api.services import formats
from api.services.exports import CSV_CONTENT, ListFormat, attachment, csv_download, list_format
from api.services.privacy import privacy_view
from api.times import iso_ms
from storage.models import Event, Page

router = APIRouter(
    prefix="/v1/events",
    tags=["events"],
    responses=problem_responses(400, 401, 403, 404, 422, 429, 503),
)

# The CSV export's columns: the event, then where it happened (the position's main fields).
CSV_COLUMNS = (
    "time",
    "type",
    "detail",
    "detail_decoded",
    "vehicle_id",
    "device_id",
    "received_at",
    "lat",
    "lon",
    "speed_kmh",
    "odometer_m",
)
# Events read per storage page while exporting.
_EXPORT_PAGE = 1000


def _csv_row(e: Event) -> dict[str, Any]:
    row = formats.event_dict(e)
    position = row.pop("position")
    return {**row, **{name: position[name] for name in ("lat", "lon", "speed_kmh", "odometer_m")}}


@router.get("", response_model=EventsPublic, responses={200: {"content": CSV_CONTENT}})
async def list_events(
    request: Request,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(DAY_MS))],
    vehicle_id: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[EventType | None, Query(description="Event code")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    format: Annotated[
        ListFormat | None,
        Query(description="json (a page) or csv (every event of the range); overrides Accept"),
    ] = None,
    order: OrderQuery = Order.ASC,
) -> Any:
    """Events and alarms, oldest first unless ``order=desc``, each with the position where it
    happened; as CSV, every event of the range as a download (in the same order)."""
    if vehicle_id is not None:
        await store.vehicles.get(caller.fleet_id, vehicle_id)  # 404 for another fleet's id
    fmt = list_format(format, request.headers.get("accept"))

    async def read(after: str | None, size: int) -> Page[Event]:
        return await store.telemetry.events(
            caller.fleet_id,
            vehicle_id=vehicle_id,
            code=type.value if type else None,
            from_ms=span.from_ms,
            to_ms=span.to_ms,
            cursor=after,
            limit=size,
            newest_first=order.newest_first,
        )

    # The first page is read before answering: a bad cursor is still a proper problem.
    page = await read(cursor, limit if fmt is ListFormat.JSON else _EXPORT_PAGE)
    await audit("read", "events", vehicle_id, detail=f"{fmt} {len(page.items)} events")
    # An event carries where it happened: in privacy mode it is hidden as its fix is
    # (docs/privacy.md). A page may then hold fewer items than asked; its cursor still goes on.
    view = await privacy_view(store, caller, request, audit, vehicle_id, resource="events")

    def shown(events: list[Event]) -> list[Event]:
        return [e for e in events if view.visible(e.position, span.from_ms, span.to_ms)]

    if fmt is ListFormat.JSON:
        return {
            "data": [formats.event_dict(e) for e in shown(page.items)],
            "next_cursor": page.next_cursor,
        }

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        current = page
        while True:
            yield [_csv_row(e) for e in shown(current.items)]
            if current.next_cursor is None:
                return
            current = await read(current.next_cursor, _EXPORT_PAGE)

    name = attachment(
        "events", vehicle_id or "fleet", iso_ms(span.from_ms), iso_ms(span.to_ms), extension="csv"
    )
    response: Response = csv_download(CSV_COLUMNS, pages(), name)
    return response
