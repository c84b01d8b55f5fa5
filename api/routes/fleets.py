from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import AuditDep, CurrentKey, Operator, StoreDep, forbidden
from api.params import Cursor, Id, Limit
from api.problems import problem_responses
from api.schemas.fleets import FleetCreate, FleetPublic, FleetsPublic
from storage.errors import NotFound
from storage.models import Role

router = APIRouter(
    prefix="/v1/fleets",
    tags=["fleets"],
    responses=problem_responses(401, 403, 422, 429, 503),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FleetPublic,
    responses=problem_responses(400, 413, 415),
)
async def create_fleet(
    body: FleetCreate, key: Operator, store: StoreDep, audit: AuditDep
) -> FleetPublic:
    """Create a fleet (operator key)."""
    fleet = await store.fleets.create(body.name)
    await audit("create", "fleet", fleet.id, fleet_id=fleet.id)
    return FleetPublic.of(fleet)


@router.get("", response_model=FleetsPublic, responses=problem_responses(400))
async def list_fleets(
    key: Operator, store: StoreDep, cursor: Cursor = None, limit: Limit = 100
) -> FleetsPublic:
    """List fleets in creation order (operator key)."""
    page = await store.fleets.list(cursor=cursor, limit=limit)
    return FleetsPublic(data=[FleetPublic.of(f) for f in page.items], next_cursor=page.next_cursor)


@router.get("/{fleet_id}", response_model=FleetPublic, responses=problem_responses(404))
async def get_fleet(fleet_id: Id, key: CurrentKey, store: StoreDep) -> FleetPublic:
    """One fleet: for the operator, or any key of that fleet."""
    if key.role is not Role.OPERATOR and key.fleet_id != fleet_id:
        raise NotFound("fleet not found")
    return FleetPublic.of(await store.fleets.get(fleet_id))


@router.delete(
    "/{fleet_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(404)
)
async def delete_fleet(fleet_id: Id, key: CurrentKey, store: StoreDep, audit: AuditDep) -> None:
    """Erase a fleet and every record of it: vehicles, boxes, keys, positions (operator key)."""
    if key.role is not Role.OPERATOR:
        if key.fleet_id != fleet_id:
            raise NotFound("fleet not found")
        raise forbidden(f"erasing a fleet needs an operator key; the key is {key.role}")
    await store.fleets.delete(fleet_id)
    await audit("delete", "fleet", fleet_id)
