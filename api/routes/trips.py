from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from api.deps import AuditDep, StoreDep, Viewer
from api.params import DAY_MS, Id, TimeRange, time_range
from api.problems import problem_responses
from api.schemas.trips import MileagePublic, TripsPublic
from api.services.paging import position_pages
from api.services.trips import MileageCounter, Place, TripBuilder
from api.times import iso_ms

router = APIRouter(
    prefix="/v1/vehicles/{vehicle_id}",
    tags=["trips"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)


def _place(place: Place) -> dict[str, Any]:
    return {"time": iso_ms(place.time_ms), "lat": place.lat, "lon": place.lon}


@router.get("/trips", response_model=TripsPublic)
async def list_trips(
    vehicle_id: Id,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(DAY_MS))],
) -> dict[str, Any]:
    """Trips (ignition on → off) in the range, with places, distance, duration and speeds."""
    await store.vehicles.get(caller.fleet_id, vehicle_id)
    builder = TripBuilder()
    async for page in position_pages(
        store.telemetry, caller.fleet_id, vehicle_id, from_ms=span.from_ms, to_ms=span.to_ms
    ):
        builder.feed(page)
    trips = builder.finish()
    await audit("read", "trips", vehicle_id, detail=f"{iso_ms(span.from_ms)}/{iso_ms(span.to_ms)}")
    return {
        "vehicle_id": vehicle_id,
        "from": iso_ms(span.from_ms),
        "to": iso_ms(span.to_ms),
        "data": [
            {
                "start": _place(t.start),
                "end": _place(t.end),
                "distance_m": t.distance_m,
                "duration_s": t.duration_s,
                "max_speed_kmh": t.max_speed_kmh,
                "avg_speed_kmh": round(t.avg_speed_kmh, 1),
                "complete": t.complete,
            }
            for t in trips
        ],
        "total_distance_m": sum(t.distance_m for t in trips),
    }


@router.get("/mileage", response_model=MileagePublic)
async def get_mileage(
    vehicle_id: Id,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(7 * DAY_MS))],
) -> dict[str, Any]:
    """Distance driven per UTC day, from the odometer (default: the last 7 days)."""
    await store.vehicles.get(caller.fleet_id, vehicle_id)
    counter = MileageCounter()
    async for page in position_pages(
        store.telemetry, caller.fleet_id, vehicle_id, from_ms=span.from_ms, to_ms=span.to_ms
    ):
        counter.feed(page)
    days = counter.days(span.from_ms, span.to_ms)
    await audit(
        "read", "mileage", vehicle_id, detail=f"{iso_ms(span.from_ms)}/{iso_ms(span.to_ms)}"
    )
    return {
        "vehicle_id": vehicle_id,
        "from": iso_ms(span.from_ms),
        "to": iso_ms(span.to_ms),
        "days": [{"date": day.isoformat(), "distance_m": distance} for day, distance in days],
        "total_distance_m": sum(distance for _, distance in days),
    }
