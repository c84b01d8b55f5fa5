from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import Admin, AuditDep, StoreDep, Viewer
from api.params import Cursor, Id, Limit
from api.problems import problem_responses
from api.schemas.devices import DeviceCreate, DeviceCreated, DevicePublic, DevicesPublic
from api.schemas.vehicles import FittingPublic, FittingsPublic
from storage.models import DeviceModel, DeviceProtocol

router = APIRouter(
    prefix="/v1/devices",
    tags=["devices"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)

# 24 random bytes are 32 URL-safe characters: 192 bits, far beyond guessing, and short enough
# to type into a box's configuration tool.
SECRET_BYTES = 24


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DeviceCreated,
    responses=problem_responses(400, 409, 413, 415),
)
async def create_device(
    body: DeviceCreate, caller: Admin, store: StoreDep, audit: AuditDep, response: Response
) -> DeviceCreated:
    """Provision a box (admin); its LOGIN secret is in this response only. 409: IMEI taken."""
    response.headers["Cache-Control"] = "no-store"  # it holds a secret
    device = await store.devices.create(
        caller.fleet_id,
        imei=body.imei,
        model=body.model,
        # A Teltonika box logs in with its IMEI alone: there is no secret to give it.
        secret=secrets.token_urlsafe(SECRET_BYTES) if body.protocol is DeviceProtocol.GP8 else "",
        protocol=body.protocol,
        log=audit.entry("create", "device", detail=body.imei),  # its resource_id: the new box's
    )
    return DeviceCreated.created(device)


@router.get("", response_model=DevicesPublic, responses=problem_responses(400))
async def list_devices(
    caller: Viewer,
    store: StoreDep,
    cursor: Cursor = None,
    limit: Limit = 100,
    imei: Annotated[str | None, Query(max_length=15, description="Exact IMEI")] = None,
    model: Annotated[DeviceModel | None, Query(description="Box model")] = None,
    fitted: Annotated[bool | None, Query(description="Only fitted (or unfitted) boxes")] = None,
    protocol: Annotated[DeviceProtocol | None, Query(description="What the box speaks")] = None,
) -> DevicesPublic:
    """List the fleet's boxes in creation order, filtered."""
    page = await store.devices.list(
        caller.fleet_id,
        cursor=cursor,
        limit=limit,
        imei=imei,
        model=model,
        fitted=fitted,
        protocol=protocol,
    )
    return DevicesPublic(
        data=[DevicePublic.of(d) for d in page.items], next_cursor=page.next_cursor
    )


@router.get("/{device_id}", response_model=DevicePublic)
async def get_device(device_id: Id, caller: Viewer, store: StoreDep) -> DevicePublic:
    """One box of the fleet (never its secret)."""
    return DevicePublic.of(await store.devices.get(caller.fleet_id, device_id))


@router.get("/{device_id}/fittings", response_model=FittingsPublic)
async def list_device_fittings(device_id: Id, caller: Viewer, store: StoreDep) -> FittingsPublic:
    """The box's fitting history, oldest first: which vehicle it was in, when."""
    device = await store.devices.get(caller.fleet_id, device_id)  # 404 for another fleet's box
    fittings = await store.devices.fittings(device.id)
    return FittingsPublic(
        data=[FittingPublic.of(f) for f in fittings if f.fleet_id == caller.fleet_id]
    )
