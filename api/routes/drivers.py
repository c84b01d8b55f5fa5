"""Drivers (/v1/drivers): a badge's pseudonym mapped to a name, for the roles that need it
(admin, manager). Positions only ever carry the pseudonym (storage/pseudonyms.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from api.deps import AuditDep, Manager, StoreDep
from api.params import Id
from api.problems import problem_responses
from api.schemas.privacy import DriverCreate, DriverPublic, DriversPublic
from api.services.privacy import stored_badge
from api.times import ms_to_datetime
from storage.models import new_id, now_ms
from storage.privacy import Driver

router = APIRouter(tags=["drivers"], responses=problem_responses(401, 403, 404, 422, 429, 503))


def _public(d: Driver) -> DriverPublic:
    return DriverPublic(
        id=d.id, badge=str(d.badge), name=d.name, created_at=ms_to_datetime(d.created_ms)
    )


@router.get("/v1/drivers", response_model=DriversPublic)
async def list_drivers(caller: Manager, store: StoreDep, audit: AuditDep) -> DriversPublic:
    """The fleet's drivers by name (manager): who each badge pseudonym is."""
    drivers = await store.drivers.list(caller.fleet_id)
    await audit("read", "drivers", None, detail=f"{len(drivers)} drivers")
    return DriversPublic(data=[_public(d) for d in drivers], count=len(drivers))


@router.post(
    "/v1/drivers",
    response_model=DriverPublic,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(400, 409, 413, 415),
)
async def create_driver(
    body: DriverCreate,
    caller: Manager,
    store: StoreDep,
    audit: AuditDep,
    request: Request,
) -> DriverPublic:
    """Name the driver of a badge (manager); the badge is kept as its pseudonym only.
    409 when the badge has a driver already."""
    driver = Driver(
        id=new_id("drv"),
        fleet_id=caller.fleet_id,
        badge=stored_badge(request, body.badge),
        name=body.name,
        created_ms=now_ms(),
    )
    await store.drivers.create(driver)
    await audit("create", "driver", driver.id)
    return _public(driver)


@router.delete(
    "/v1/drivers/{driver_id}",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def delete_driver(driver_id: Id, caller: Manager, store: StoreDep, audit: AuditDep) -> None:
    """Remove a driver's name (manager); positions keep the pseudonym."""
    await store.drivers.delete(caller.fleet_id, driver_id)
    await audit("delete", "driver", driver_id)
