"""Privacy mode: a vehicle's weekly private hours and the fleet's privacy badge
(docs/privacy.md). Setting either is a write audited like any policy change."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from fastapi import APIRouter, Request

from api.deps import Admin, AuditDep, StoreDep, VehicleManager, Viewer
from api.params import Id
from api.problems import invalid, problem_responses
from api.schemas.privacy import (
    PrivacyBadgePublic,
    PrivacyBadgePut,
    PrivacyPublic,
    PrivacyPut,
    PrivacySchedulePublic,
    PrivateWindow,
)
from api.services.privacy import stored_badge
from api.times import ms_to_datetime
from storage.models import now_ms
from storage.privacy import PrivacySchedule, PrivacyWindow, ScheduleChange
from tracking.privacy import PrivacyState, schedule_error, vehicle_privacy

router = APIRouter(tags=["privacy"], responses=problem_responses(401, 403, 404, 422, 429, 503))


def _schedule(body: PrivacySchedulePublic) -> PrivacySchedule:
    return PrivacySchedule(
        body.tz, tuple(PrivacyWindow(tuple(w.days), w.from_, w.to) for w in body.private)
    )


def _public(schedule: PrivacySchedule | None) -> PrivacySchedulePublic | None:
    if schedule is None:
        return None
    return PrivacySchedulePublic(
        tz=schedule.timezone,
        private=[
            PrivateWindow.model_validate({"days": list(w.days), "from": w.start, "to": w.end})
            for w in schedule.windows
        ],
    )


async def _privacy(store: StoreDep, fleet_id: str, vehicle_id: str) -> PrivacyPublic:
    facts = await store.privacy.fleet(fleet_id, vehicle_id)
    stolen = await store.theft_cases.open_case(fleet_id, vehicle_id) is not None
    vp = vehicle_privacy(facts, vehicle_id, theft_case=stolen)
    now = now_ms()
    current = vp.changes[-1] if vp.changes else None
    spans = vp.spans(now, now + 1)
    state = vp.state(now, now + 1)
    if state is PrivacyState.OFF and vp.configured and not stolen:
        state = PrivacyState.ACTIVE if vp.spans(now - 7 * 86_400_000, now + 1) else state
    return PrivacyPublic(
        vehicle_id=vehicle_id,
        schedule=_public(current.schedule) if current else None,
        effective_from=ms_to_datetime(current.effective_ms) if current else None,
        private_now=spans.covers(now),
        privacy=str(state),
        toggles=len(vp.toggles),
    )


@router.get("/v1/vehicles/{vehicle_id}/privacy", response_model=PrivacyPublic)
async def get_privacy(vehicle_id: Id, caller: Viewer, store: StoreDep) -> PrivacyPublic:
    """The vehicle's private hours in effect, whether it is private now, and whether an open
    theft case overrides its privacy."""
    await store.vehicles.get(caller.fleet_id, vehicle_id)
    return await _privacy(store, caller.fleet_id, vehicle_id)


@router.put(
    "/v1/vehicles/{vehicle_id}/privacy",
    response_model=PrivacyPublic,
    responses=problem_responses(400, 413, 415),
)
async def put_privacy(
    vehicle_id: Id, body: PrivacyPut, caller: VehicleManager, store: StoreDep, audit: AuditDep
) -> PrivacyPublic:
    """Set the vehicle's weekly private hours from now on (manager); not retroactive."""
    schedule = None if body.schedule is None else _schedule(body.schedule)
    if schedule is not None:
        problem = schedule_error(schedule)
        if problem is not None:
            raise invalid(("body", "schedule"), problem)
    change = ScheduleChange(vehicle_id, now_ms(), schedule, caller.key.id)
    await store.privacy.set_schedule(caller.fleet_id, change)
    await audit("update", "privacy", vehicle_id, detail="schedule" if schedule else "none")
    return await _privacy(store, caller.fleet_id, vehicle_id)


@router.get("/v1/privacy-badge", response_model=PrivacyBadgePublic)
async def get_privacy_badge(caller: Viewer, store: StoreDep) -> PrivacyBadgePublic:
    """The pseudonym of the fleet's privacy badge (presenting it toggles privacy)."""
    badge = await store.privacy.badge(caller.fleet_id)
    return PrivacyBadgePublic(badge=None if badge is None else str(badge))


@router.put(
    "/v1/privacy-badge",
    response_model=PrivacyBadgePublic,
    responses=problem_responses(400, 413, 415),
)
async def put_privacy_badge(
    body: PrivacyBadgePut,
    caller: Admin,
    store: StoreDep,
    audit: AuditDep,
    request: Request,
) -> PrivacyBadgePublic:
    """Set the fleet's privacy badge (admin): a box's badge event with it (GP8 DRIVER_BADGE,
    Teltonika iButton) toggles the vehicle's privacy. Stored as its pseudonym."""
    badge = None if body.badge is None else stored_badge(request, body.badge)
    await store.privacy.set_badge(caller.fleet_id, badge)
    # This process's processing stage uses it at once (the others within 5 s).
    changed = getattr(request.app.state, "privacy_badge_changed", None)
    if changed is not None:
        cast(Callable[[str], None], changed)(caller.fleet_id)
    await audit("update", "privacy_badge", None, detail="set" if badge else "none")
    return PrivacyBadgePublic(badge=None if badge is None else str(badge))
