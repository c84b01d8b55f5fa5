"""Geofences: /v1/geofences (viewer reads, manager writes) and their crossings.

A fence of another fleet is a 404 whatever the key's role: PATCH and DELETE look the fence up
in the caller's fleet before checking the role (api/deps.py's rule for vehicles). After every
write the geofence handler of this process, if the app was given its hook
(``app.state.geofences_changed``, set by gp8/serve.py), reads the fleet's fences again at once;
other processes do within their cache's lifetime (30 s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from api.deps import AuditDep, FleetCaller, FleetKey, Manager, StoreDep, Viewer
from api.params import DAY_MS, Cursor, Id, Limit, Order, OrderQuery, TimeRange, time_range
from api.problems import problem_responses
from api.schemas.geofences import (
    GeofenceCreate,
    GeofenceEventPublic,
    GeofenceEventsPublic,
    GeofencePublic,
    GeofencesPublic,
    GeofenceUpdate,
)
from api.services.geofences import changed_fence, check_room, new_fence
from storage.models import Geofence, Role, now_ms

router = APIRouter(tags=["geofences"], responses=problem_responses(401, 403, 404, 422, 429, 503))
_BODY_ERRORS = problem_responses(400, 413, 415)
_IdQuery = Annotated[str | None, Query(max_length=64)]


@dataclass(frozen=True, slots=True)
class FenceTarget:
    caller: FleetCaller
    fence: Geofence


async def _fence_manager(geofence_id: Id, caller: FleetKey, store: StoreDep) -> FenceTarget:
    """The fence, looked up in the caller's fleet first (404), then the manager role (403)."""
    fence = await store.geofences.get(caller.fleet_id, geofence_id)
    caller.require(Role.MANAGER)
    return FenceTarget(caller, fence)


FenceManager = Annotated[FenceTarget, Depends(_fence_manager)]


def _changed(request: Request, fleet_id: str) -> None:
    hook: Callable[[str], None] | None = getattr(request.app.state, "geofences_changed", None)
    if hook is not None:
        hook(fleet_id)


@router.post(
    "/v1/geofences",
    status_code=status.HTTP_201_CREATED,
    response_model=GeofencePublic,
    responses={**_BODY_ERRORS, **problem_responses(409)},
)
async def create_geofence(
    body: GeofenceCreate, caller: Manager, store: StoreDep, audit: AuditDep, request: Request
) -> GeofencePublic:
    """Draw a geofence (manager): a polygon, or a circle (a Point and radius_m)."""
    await check_room(store, caller.fleet_id)
    fence = await store.geofences.create(await new_fence(store, caller.fleet_id, body, now_ms()))
    await audit("create", "geofence", fence.id)
    _changed(request, caller.fleet_id)
    return GeofencePublic.of(fence)


@router.get("/v1/geofences", response_model=GeofencesPublic, responses=problem_responses(400))
async def list_geofences(
    caller: Viewer, store: StoreDep, cursor: Cursor = None, limit: Limit = 100
) -> GeofencesPublic:
    """The fleet's geofences in creation order."""
    page = await store.geofences.list(caller.fleet_id, cursor=cursor, limit=limit)
    return GeofencesPublic(
        data=[GeofencePublic.of(f) for f in page.items], next_cursor=page.next_cursor
    )


@router.get("/v1/geofences/{geofence_id}", response_model=GeofencePublic)
async def get_geofence(geofence_id: Id, caller: Viewer, store: StoreDep) -> GeofencePublic:
    """One geofence of the fleet."""
    return GeofencePublic.of(await store.geofences.get(caller.fleet_id, geofence_id))


@router.patch("/v1/geofences/{geofence_id}", response_model=GeofencePublic, responses=_BODY_ERRORS)
async def update_geofence(
    geofence_id: Id,
    body: GeofenceUpdate,
    target: FenceManager,
    store: StoreDep,
    audit: AuditDep,
    request: Request,
) -> GeofencePublic:
    """Change a geofence (manager); see GeofenceUpdate for what null means."""
    fence = await changed_fence(store, target.fence, body, now_ms())
    fence = await store.geofences.replace(fence)
    await audit("update", "geofence", geofence_id, detail=",".join(sorted(body.model_fields_set)))
    _changed(request, fence.fleet_id)
    return GeofencePublic.of(fence)


@router.delete("/v1/geofences/{geofence_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_geofence(
    geofence_id: Id, target: FenceManager, store: StoreDep, audit: AuditDep, request: Request
) -> None:
    """Delete a geofence (manager); its crossings stay listed under /v1/geofence-events."""
    await store.geofences.delete(target.caller.fleet_id, geofence_id)
    await audit("delete", "geofence", geofence_id)
    _changed(request, target.caller.fleet_id)


@router.get(
    "/v1/geofences/{geofence_id}/events",
    response_model=GeofenceEventsPublic,
    responses=problem_responses(400),
)
async def list_geofence_crossings(
    geofence_id: Id,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(DAY_MS))],
    vehicle_id: _IdQuery = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = Order.ASC,
) -> GeofenceEventsPublic:
    """The geofence's enter and exit events, oldest first unless ``order=desc``."""
    await store.geofences.get(caller.fleet_id, geofence_id)  # 404 for another fleet's fence
    if vehicle_id is not None:
        await store.vehicles.get(caller.fleet_id, vehicle_id)
    return await _crossings(
        caller, store, audit, span, geofence_id, vehicle_id, cursor, limit, geofence_id, order
    )


@router.get(
    "/v1/geofence-events", response_model=GeofenceEventsPublic, responses=problem_responses(400)
)
async def list_geofence_events(
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(DAY_MS))],
    vehicle_id: _IdQuery = None,
    geofence_id: _IdQuery = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = Order.ASC,
) -> GeofenceEventsPublic:
    """Enter and exit events of the fleet's geofences (deleted ones too), oldest first unless
    ``order=desc``."""
    if vehicle_id is not None:
        await store.vehicles.get(caller.fleet_id, vehicle_id)  # 404 for another fleet's id
    return await _crossings(
        caller, store, audit, span, geofence_id, vehicle_id, cursor, limit, vehicle_id, order
    )


async def _crossings(
    caller: FleetCaller,
    store: StoreDep,
    audit: AuditDep,
    span: TimeRange,
    geofence_id: str | None,
    vehicle_id: str | None,
    cursor: str | None,
    limit: int,
    resource_id: str | None,
    order: Order,
) -> GeofenceEventsPublic:
    page = await store.geofences.events(
        caller.fleet_id,
        geofence_id=geofence_id,
        vehicle_id=vehicle_id,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        cursor=cursor,
        limit=limit,
        newest_first=order.newest_first,
    )
    # Where a vehicle was and when: personal data, so the read is logged.
    await audit("read", "geofence_events", resource_id, detail=f"{len(page.items)} events")
    return GeofenceEventsPublic(
        data=[GeofenceEventPublic.of(e) for e in page.items], next_cursor=page.next_cursor
    )
