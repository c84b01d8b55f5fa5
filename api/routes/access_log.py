from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import Admin, AuditDep, StoreDep
from api.params import DAY_MS, Cursor, Order, OrderQuery, TimeRange, time_range
from api.problems import problem_responses
from api.schemas.access_log import AccessLogEntryPublic, AccessLogPublic

router = APIRouter(
    prefix="/v1/access-log",
    tags=["access log"],
    responses=problem_responses(400, 401, 403, 422, 429, 503),
)


@router.get("", response_model=AccessLogPublic)
async def list_access_log(
    caller: Admin,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(30 * DAY_MS, max_span_ms=None))],
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: OrderQuery = Order.ASC,
) -> AccessLogPublic:
    """Who wrote what and who read personal data in the fleet, oldest first unless
    ``order=desc`` (admin)."""
    page = await store.access_log.list(
        caller.fleet_id,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        cursor=cursor,
        limit=limit,
        newest_first=order.newest_first,
    )
    # Reading who did what is itself logged (after the read: this page never holds it).
    await audit("read", "access_log", None, detail=f"{len(page.items)} entries")
    return AccessLogPublic(
        data=[AccessLogEntryPublic.of(e) for e in page.items], next_cursor=page.next_cursor
    )
