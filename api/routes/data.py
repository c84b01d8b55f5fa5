from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Admin, AuditDep, StoreDep
from api.problems import invalid, problem_responses
from api.schemas.common import TimeIn
from api.times import datetime_to_ms, iso_ms
from storage.models import now_ms

router = APIRouter(
    prefix="/v1/data",
    tags=["data"],
    responses=problem_responses(400, 401, 403, 413, 415, 422, 429, 503),
)


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    before: TimeIn = Field(description="Delete positions and events older than this")


class PurgeResult(BaseModel):
    deleted: int = Field(description="Positions, events and geofence crossings deleted")


@router.post("/purge", response_model=PurgeResult)
async def purge_data(
    body: PurgeRequest, caller: Admin, store: StoreDep, audit: AuditDep
) -> PurgeResult:
    """Erase the fleet's positions, events and geofence crossings older than ``before``
    (admin; GDPR erasure). Vehicles under a legal hold (theft cases) keep theirs."""
    before_ms = datetime_to_ms(body.before)
    now = now_ms()
    if before_ms > now:
        raise invalid(
            ("body", "before"),
            f"before ({iso_ms(before_ms)}) must not be in the future (now: {iso_ms(now)})",
        )
    deleted = await store.telemetry.purge_before(caller.fleet_id, before_ms)
    # Geofence crossings are location data too.
    deleted += await store.geofences.purge_before(caller.fleet_id, before_ms)
    await audit("delete", "telemetry", None, detail=f"before {iso_ms(before_ms)}: {deleted}")
    return PurgeResult(deleted=deleted)
