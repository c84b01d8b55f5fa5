"""Erasure and rectification on a data subject's request (docs/gdpr.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import Admin, AuditDep, StoreDep, VehicleAdmin
from api.params import Id
from api.problems import problem_responses
from api.schemas.gdpr import DriverEraseRequest, EraseRequest, ErasureResult, FittingCorrection
from api.services.privacy import stored_badge
from api.times import datetime_to_ms
from storage.models import now_ms

router = APIRouter(
    tags=["erasure"],
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
)


def _detail(reason: str, counts: dict[str, int]) -> str:
    return f"{reason} ({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})"


@router.post("/v1/vehicles/{vehicle_id}/erase", response_model=ErasureResult)
async def erase_vehicle(
    vehicle_id: Id, body: EraseRequest, caller: VehicleAdmin, store: StoreDep, audit: AuditDep
) -> ErasureResult:
    """Erase the vehicle's data: positions, events, crossings, alerts, commands (admin, with a
    reason; logged). 409 while the vehicle is under a legal hold. The vehicle stays."""
    counts = await store.erasure.erase_vehicle(caller.fleet_id, vehicle_id, now_ms())
    await audit("erase", "vehicle", vehicle_id, detail=_detail(body.reason, counts))
    return ErasureResult(counts=counts)


@router.post("/v1/drivers/erase", response_model=ErasureResult)
async def erase_driver(
    body: DriverEraseRequest, caller: Admin, store: StoreDep, audit: AuditDep, request: Request
) -> ErasureResult:
    """Erase the positions and events carrying the driver's badge and the driver's name
    (/v1/drivers) (admin, with a reason; logged, under the badge's pseudonym); records of
    vehicles under a legal hold stay until it ends."""
    badge = stored_badge(request, body.driver_badge)
    counts = await store.erasure.erase_driver(caller.fleet_id, badge, now_ms())
    counts["drivers"] = await store.drivers.delete_badge(caller.fleet_id, badge)
    await audit("erase", "driver", str(badge), detail=_detail(body.reason, counts))
    return ErasureResult(counts=counts)


@router.post("/v1/vehicles/{vehicle_id}/fittings/correct", response_model=ErasureResult)
async def correct_fitting(
    vehicle_id: Id,
    body: FittingCorrection,
    caller: VehicleAdmin,
    store: StoreDep,
    audit: AuditDep,
) -> ErasureResult:
    """Rectify a wrongly assigned fitting period: the box's positions and events in
    [from, to) move to this vehicle, last positions are recomputed (admin; logged)."""
    counts = await store.erasure.move_fitting(
        caller.fleet_id,
        body.device_id,
        from_ms=datetime_to_ms(body.from_),
        to_ms=datetime_to_ms(body.to),
        vehicle_id=vehicle_id,
    )
    detail = _detail(f"device {body.device_id}: {body.reason}", counts)
    await audit("rectify", "vehicle", vehicle_id, detail=detail)
    return ErasureResult(counts=counts)
