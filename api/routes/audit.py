"""The command audit log: every step of every command, who asked, why, and what came of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import AuditDep, CurrentKey, StoreDep, forbidden
from api.params import DAY_MS, Cursor, Order, OrderQuery, TimeRange, time_range
from api.problems import problem_responses
from api.schemas.commands import AuditEntryPublic, AuditPublic
from storage.models import Role

router = APIRouter(
    prefix="/v1/audit",
    tags=["commands"],
    responses=problem_responses(400, 401, 403, 422, 429, 503),
)

_ID = Query(max_length=64)


@router.get("", response_model=AuditPublic)
async def list_audit(
    key: CurrentKey,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(30 * DAY_MS, max_span_ms=None))],
    vehicle_id: Annotated[str | None, _ID] = None,
    command_id: Annotated[str | None, _ID] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: OrderQuery = Order.ASC,
) -> AuditPublic:
    """The fleet's command audit log, oldest first unless ``order=desc`` (admin); an operator
    key reads the platform's own entries (kill switch)."""
    if key.role is Role.OPERATOR:
        fleet_id = None
    elif key.role is Role.ADMIN and key.fleet_id is not None:
        fleet_id = key.fleet_id
    else:
        raise forbidden(f"the audit log needs the admin role; the key is {key.role}")
    page = await store.audit.list(
        fleet_id,
        vehicle_id=vehicle_id,
        command_id=command_id,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        cursor=cursor,
        limit=limit,
        newest_first=order.newest_first,
    )
    # Logged in the reader's chain: the fleet's, or the platform's for the operator.
    await audit(
        "read", "command_audit", vehicle_id or command_id, detail=f"{len(page.items)} entries"
    )
    return AuditPublic(
        data=[AuditEntryPublic.of(e) for e in page.items], next_cursor=page.next_cursor
    )
