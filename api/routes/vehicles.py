from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import Admin, AuditDep, StoreDep, VehicleAdmin, Viewer
from api.params import Cursor, Id, Limit
from api.problems import invalid, problem_responses
from api.schemas.vehicles import (
    FittingCreate,
    FittingPublic,
    VehicleCreate,
    VehiclePublic,
    VehiclesPublic,
    VehicleUpdate,
)
from api.services.commands import lock_state
from api.services.fittings import (
    FITTED_AT_SKEW_MS,
    check_backdated_fitting,
    refuse_silent_move,
)
from api.services.plates import find_by_plate
from api.times import datetime_to_ms, iso_ms
from storage.models import now_ms

router = APIRouter(
    prefix="/v1/vehicles",
    tags=["vehicles"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
_BODY_ERRORS = problem_responses(400, 413, 415)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=VehiclePublic,
    responses={**_BODY_ERRORS, **problem_responses(409)},
)
async def create_vehicle(
    body: VehicleCreate, caller: Admin, store: StoreDep, audit: AuditDep
) -> VehiclePublic:
    """Register a vehicle (admin); 409 when the fleet already has this VIN."""
    vehicle = await store.vehicles.create(
        caller.fleet_id,
        vin=body.vin,
        plate=body.plate,
        label=body.label,
        log=audit.entry("create", "vehicle"),  # its resource_id: the new vehicle's
    )
    return VehiclePublic.of(vehicle)


@router.get("", response_model=VehiclesPublic, responses=problem_responses(400))
async def list_vehicles(
    caller: Viewer,
    store: StoreDep,
    cursor: Cursor = None,
    limit: Limit = 100,
    vin: Annotated[str | None, Query(max_length=17, description="Exact VIN")] = None,
    plate: Annotated[
        str | None,
        Query(
            max_length=16,
            description="Plate, ignoring case, spaces, dashes and dots (js-829-wh finds JS829WH)",
        ),
    ] = None,
    fitted: Annotated[bool | None, Query(description="Only with (or without) a box")] = None,
) -> VehiclesPublic:
    """List the fleet's vehicles in creation order, filtered."""
    vin = vin.strip().upper() if vin else vin
    if plate:
        page = await find_by_plate(
            store.vehicles,
            caller.fleet_id,
            plate,
            cursor=cursor,
            limit=limit,
            vin=vin,
            fitted=fitted,
        )
    else:
        page = await store.vehicles.list(
            caller.fleet_id, cursor=cursor, limit=limit, vin=vin, fitted=fitted
        )
    # One query for the fleet's last positions rather than one per vehicle of the page.
    last = {p.vehicle_id: p for p in await store.telemetry.last_positions(caller.fleet_id)}
    data = []
    for v in page.items:
        vehicle = VehiclePublic.of(v)
        vehicle.lock_state = await lock_state(store, caller.fleet_id, v.id, last.get(v.id))
        data.append(vehicle)
    return VehiclesPublic(data=data, next_cursor=page.next_cursor)


@router.get("/{vehicle_id}", response_model=VehiclePublic)
async def get_vehicle(vehicle_id: Id, caller: Viewer, store: StoreDep) -> VehiclePublic:
    """One vehicle of the fleet, with its doors and engine-start inhibit state."""
    vehicle = VehiclePublic.of(await store.vehicles.get(caller.fleet_id, vehicle_id))
    vehicle.lock_state = await lock_state(store, caller.fleet_id, vehicle_id)
    return vehicle


@router.patch(
    "/{vehicle_id}",
    response_model=VehiclePublic,
    responses={**_BODY_ERRORS, **problem_responses(409)},
)
async def update_vehicle(
    vehicle_id: Id, body: VehicleUpdate, caller: VehicleAdmin, store: StoreDep, audit: AuditDep
) -> VehiclePublic:
    """Change a vehicle's VIN, plate or label (admin)."""
    changed = ",".join(sorted(body.model_dump(exclude_none=True)))
    vehicle = await store.vehicles.update(
        caller.fleet_id,
        vehicle_id,
        vin=body.vin,
        plate=body.plate,
        label=body.label,
        log=audit.entry("update", "vehicle", vehicle_id, detail=changed),
    )
    updated = VehiclePublic.of(vehicle)
    updated.lock_state = await lock_state(store, caller.fleet_id, vehicle_id)
    return updated


@router.delete("/{vehicle_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_vehicle(
    vehicle_id: Id, caller: VehicleAdmin, store: StoreDep, audit: AuditDep
) -> None:
    """Delete a vehicle (admin); its box is unfitted, its positions are kept."""
    await store.vehicles.delete(
        caller.fleet_id, vehicle_id, now_ms(), log=audit.entry("delete", "vehicle", vehicle_id)
    )


@router.put(
    "/{vehicle_id}/device",
    response_model=FittingPublic,
    responses={**_BODY_ERRORS, **problem_responses(409)},
)
async def fit_device(
    vehicle_id: Id, body: FittingCreate, caller: VehicleAdmin, store: StoreDep, audit: AuditDep
) -> FittingPublic:
    """Fit the box with this IMEI to the vehicle (admin), ending its and the vehicle's current
    fittings at that moment (a box the vehicle had is unfitted); the history is kept. 409 when
    the box is fitted to another vehicle, unless the body says ``"move": true``."""
    if not body.move:
        await refuse_silent_move(store.devices, caller.fleet_id, vehicle_id, body.imei)
    now = now_ms()
    at_ms = datetime_to_ms(body.fitted_at) if body.fitted_at is not None else now
    if at_ms > now + FITTED_AT_SKEW_MS:
        raise invalid(
            ("body", "fitted_at"),
            f"fitted_at ({iso_ms(at_ms)}) must not be in the future (now: {iso_ms(now)})",
        )
    if body.fitted_at is not None:
        await check_backdated_fitting(store.devices, caller.fleet_id, vehicle_id, body.imei, at_ms)
    # The entry's detail is the box's id, which the write finds (DeviceRepo).
    fitting = await store.devices.fit(
        caller.fleet_id, vehicle_id, body.imei, at_ms, log=audit.entry("fit", "vehicle", vehicle_id)
    )
    return FittingPublic.of(fitting)


@router.delete("/{vehicle_id}/device", status_code=status.HTTP_204_NO_CONTENT)
async def unfit_device(
    vehicle_id: Id, caller: VehicleAdmin, store: StoreDep, audit: AuditDep
) -> None:
    """Remove the vehicle's box (admin); 404 when none is fitted. The history is kept."""
    await store.devices.unfit(
        caller.fleet_id, vehicle_id, now_ms(), log=audit.entry("unfit", "vehicle", vehicle_id)
    )
