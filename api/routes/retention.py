"""Per-fleet retention rules, and offboarding (docs/gdpr.md)."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request, status

from api.deps import AuditDep, CurrentKey, Operator, StoreDep, forbidden
from api.offboarding import offboarding_cache, refuse_writes_while_offboarding
from api.params import Id
from api.problems import problem_responses
from api.schemas.gdpr import OffboardingPublic, RetentionDays, RetentionPublic
from storage.errors import NotFound
from storage.models import ApiKey, Role, now_ms
from storage.retention import DAY_MS, DataKind, Offboarding

router = APIRouter(
    prefix="/v1/fleets",
    tags=["retention"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)

# The window in which an offboarded fleet can still recover its data (the processing
# agreement's three months); `gp8 serve` sets it from GP8_RETENTION__OFFBOARDING_DAYS.
OFFBOARDING_DAYS = 92


def fleet_admin_or_operator(key: ApiKey, fleet_id: str) -> None:
    """The operator, or an admin of that fleet; another fleet's key gets 404."""
    if key.role is Role.OPERATOR:
        return
    if key.fleet_id != fleet_id:
        raise NotFound("fleet not found")
    if key.role is not Role.ADMIN:
        raise forbidden(f"this needs the admin role or an operator key; the key is {key.role}")


@router.get("/{fleet_id}/retention", response_model=RetentionPublic)
async def get_retention(fleet_id: Id, key: CurrentKey, store: StoreDep) -> RetentionPublic:
    """The fleet's retention periods, when the last purge ran and what it deleted."""
    fleet_admin_or_operator(key, fleet_id)
    return RetentionPublic.of(await store.retention.get(fleet_id))


@router.put(
    "/{fleet_id}/retention",
    response_model=RetentionPublic,
    responses=problem_responses(400, 409, 413, 415),
)
async def put_retention(
    fleet_id: Id,
    body: RetentionDays,
    key: CurrentKey,
    store: StoreDep,
    audit: AuditDep,
    request: Request,
) -> RetentionPublic:
    """Change retention periods (days, 1 to 1,830; kinds left out keep theirs). Audited."""
    fleet_admin_or_operator(key, fleet_id)
    if key.role is not Role.OPERATOR:
        await refuse_writes_while_offboarding(request, store, fleet_id)
    days = {DataKind(k): v for k, v in body.model_dump(exclude_none=True).items()}
    changed = await store.retention.put(fleet_id, days, at_ms=now_ms(), by=key.id)
    detail = ", ".join(f"{kind}={value}" for kind, value in days.items())
    await audit("update", "retention", fleet_id, fleet_id=fleet_id, detail=detail)
    return RetentionPublic.of(changed)


@router.post(
    "/{fleet_id}/offboard",
    status_code=status.HTTP_201_CREATED,
    response_model=OffboardingPublic,
    responses=problem_responses(409),
)
async def offboard_fleet(
    fleet_id: Id, key: Operator, store: StoreDep, audit: AuditDep, request: Request
) -> OffboardingPublic:
    """Start the fleet's offboarding (operator): read-only now, every record erased at the end
    of the window (92 days by default); exports work until then."""
    fleet = await store.fleets.get(fleet_id)
    days = cast(int, getattr(request.app.state, "offboarding_days", OFFBOARDING_DAYS))
    start = now_ms()
    offboarding = await store.retention.start_offboarding(
        Offboarding(fleet.id, fleet.name, start, start + days * DAY_MS, key.id)
    )
    offboarding_cache(request).forget(fleet_id)
    await audit("offboard", "fleet", fleet_id, fleet_id=fleet_id, detail=f"{days} days")
    return OffboardingPublic.of(offboarding)


@router.get("/{fleet_id}/offboarding", response_model=OffboardingPublic)
async def get_offboarding(fleet_id: Id, key: CurrentKey, store: StoreDep) -> OffboardingPublic:
    """The fleet's offboarding: its window, then the deletion report (counts, no data), which
    the operator can still read after the fleet is erased."""
    fleet_admin_or_operator(key, fleet_id)
    found = await store.retention.offboarding(fleet_id)
    if found is None:
        raise NotFound("the fleet is not being offboarded")
    return OffboardingPublic.of(found)
