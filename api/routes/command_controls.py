"""The controls around commands: fleet policies, the platform kill switch, alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from api.deps import Admin, AuditDep, CurrentKey, Operator, StoreDep, Viewer, forbidden
from api.params import Cursor, Id, Limit
from api.problems import problem_responses
from api.schemas.alerts import AlertFilters, alert_filters
from api.schemas.commands import (
    AlertClear,
    AlertPublic,
    AlertsPublic,
    KillSwitchPublic,
    KillSwitchUpdate,
    PolicyPublic,
    PolicyUpdate,
)
from api.services.commands import CommandsDep
from api.services.exports import CSV_CONTENT, ListFormat, attachment, csv_download, list_format
from commands import Requester
from storage.errors import NotFound
from storage.models import Alert, ApiKey, Page, Role

router = APIRouter(tags=["commands"], responses=problem_responses(401, 403, 404, 422, 429, 503))
_BODY_ERRORS = problem_responses(400, 413, 415)


async def _policy_fleet(fleet_id: str, key: ApiKey, store: StoreDep) -> str:
    """The operator, or an admin of that fleet; another fleet's key gets 404."""
    if key.role is not Role.OPERATOR:
        if key.fleet_id != fleet_id:
            raise NotFound("fleet not found")
        if key.role is not Role.ADMIN:
            raise forbidden(f"a fleet's command policy needs the admin role; the key is {key.role}")
    await store.fleets.get(fleet_id)
    return fleet_id


@router.get("/v1/fleets/{fleet_id}/policy", response_model=PolicyPublic)
async def get_policy(fleet_id: Id, key: CurrentKey, store: StoreDep) -> PolicyPublic:
    """The fleet's command policy (admin of the fleet, or operator)."""
    await _policy_fleet(fleet_id, key, store)
    return PolicyPublic.of(await store.policies.get(fleet_id))


@router.put("/v1/fleets/{fleet_id}/policy", response_model=PolicyPublic, responses=_BODY_ERRORS)
async def put_policy(
    fleet_id: Id,
    body: PolicyUpdate,
    key: CurrentKey,
    store: StoreDep,
    service: CommandsDep,
    audit: AuditDep,
) -> PolicyPublic:
    """Replace the fleet's command policy: four-eyes approval, hourly engine-start cap."""
    await _policy_fleet(fleet_id, key, store)
    policy = await service.set_policy(
        key.id,
        fleet_id,
        four_eyes=body.four_eyes,
        engine_start_cap_per_hour=body.engine_start_cap_per_hour,
    )
    # In the fleet's chain even when the operator sets it: the fleet's admins read it there.
    await audit(
        "update",
        "command_policy",
        fleet_id,
        fleet_id=fleet_id,
        detail=f"four_eyes={body.four_eyes} "
        f"engine_start_cap_per_hour={body.engine_start_cap_per_hour}",
    )
    return PolicyPublic.of(policy)


@router.get("/v1/platform/kill-switch", response_model=KillSwitchPublic)
async def get_kill_switch(key: CurrentKey, service: CommandsDep) -> KillSwitchPublic:
    """Whether immobilizations are suspended platform-wide (any key may look)."""
    return KillSwitchPublic.of(await service.kill_switch())


@router.put("/v1/platform/kill-switch", response_model=KillSwitchPublic, responses=_BODY_ERRORS)
async def put_kill_switch(
    body: KillSwitchUpdate, key: Operator, service: CommandsDep, audit: AuditDep
) -> KillSwitchPublic:
    """Suspend (engaged) or resume immobilization commands platform-wide (operator); audited.

    While engaged, new disable_engine_start requests get 409 and queued ones are held.
    """
    switch = await service.set_kill_switch(key.id, engaged=body.engaged, reason=body.reason)
    # An operator's key: the platform's chain (no fleet).
    await audit(
        "update",
        "kill_switch",
        None,
        detail="engaged" if body.engaged else "released",
        reason=body.reason,
    )
    return KillSwitchPublic.of(switch)


# The CSV export's columns: AlertPublic's fields, in its order.
ALERT_CSV_COLUMNS = tuple(AlertPublic.model_fields)
# Alerts read per storage page while exporting.
_EXPORT_PAGE = 1000


@router.get(
    "/v1/alerts",
    response_model=AlertsPublic,
    responses={200: {"content": CSV_CONTENT}, **problem_responses(400)},
)
async def list_alerts(
    request: Request,
    caller: Viewer,
    store: StoreDep,
    filters: Annotated[AlertFilters, Depends(alert_filters)],
    vehicle_id: Annotated[str | None, Query(max_length=64)] = None,
    open_: Annotated[bool, Query(alias="open", description="Only alerts not closed")] = False,
    cursor: Cursor = None,
    limit: Limit = 100,
    format: Annotated[
        ListFormat | None,
        Query(description="json (a page) or csv (every alert matching); overrides Accept"),
    ] = None,
) -> Any:
    """The fleet's alerts (the alert rules' incidents, the parked guard's suspected thefts,
    duplicate box, engine-start cap), oldest first unless ``order=desc``; filtered by type,
    vehicle, state and the time they were raised (docs/alerts.md). As CSV, every alert that
    matches, as a download."""
    fmt = list_format(format, request.headers.get("accept"))

    async def read(after: str | None, size: int) -> Page[Alert]:
        return await store.alerts.list(
            caller.fleet_id,
            vehicle_id=vehicle_id,
            open_only=open_,
            cursor=after,
            limit=size,
            kinds=filters.kinds,
            state=filters.state,
            from_ms=filters.from_ms,
            to_ms=filters.to_ms,
            newest_first=filters.newest_first,
        )

    page = await read(cursor, limit if fmt is ListFormat.JSON else _EXPORT_PAGE)
    if fmt is ListFormat.JSON:
        return AlertsPublic(
            data=[AlertPublic.of(a) for a in page.items], next_cursor=page.next_cursor
        )

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        current = page
        while True:
            yield [AlertPublic.of(a).model_dump(mode="json") for a in current.items]
            if current.next_cursor is None:
                return
            current = await read(current.next_cursor, _EXPORT_PAGE)

    return csv_download(ALERT_CSV_COLUMNS, pages(), attachment("alerts", extension="csv"))


@router.get("/v1/alerts/{alert_id}", response_model=AlertPublic)
async def get_alert(alert_id: Id, caller: Viewer, store: StoreDep) -> AlertPublic:
    return AlertPublic.of(await store.alerts.get(caller.fleet_id, alert_id))


@router.post("/v1/alerts/{alert_id}/clear", response_model=AlertPublic, responses=_BODY_ERRORS)
async def clear_alert(
    alert_id: Id,
    caller: Admin,
    service: CommandsDep,
    audit: AuditDep,
    body: Annotated[AlertClear | None, Body()] = None,
) -> AlertPublic:
    """Clear an alert (admin): a duplicate-box freeze is lifted and held commands go out."""
    requester = Requester(key_id=caller.key.id, fleet_id=caller.fleet_id, role=caller.role)
    reason = body.reason if body else ""
    alert = await service.clear_alert(requester, alert_id, reason)
    await audit("clear", "alert", alert.id, detail=alert.kind.value, reason=reason)
    return AlertPublic.of(alert)
