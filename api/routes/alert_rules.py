"""Alert rules (/v1/alert-rules), the fleet's recognised driver badges (/v1/badge-policy) and
acknowledging an alert (POST /v1/alerts/{id}/ack). docs/alerts.md, "Alerts" and "Alert rules".

A fleet's default rules are created the first time its rules are read (here or by the
processing stage), so every fleet, old or new, starts protected.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, status

from api.deps import Admin, AuditDep, Manager, StoreDep, Viewer
from api.params import Id
from api.problems import invalid, problem_responses
from api.schemas.alerts import (
    AlertAck,
    AlertRuleCreate,
    AlertRulePublic,
    AlertRulesPublic,
    AlertRuleUpdate,
    BadgePolicyPublic,
    BadgePolicyUpdate,
    parameter_problem,
)
from api.schemas.commands import AlertPublic
from api.services.privacy import stored_badge
from storage.errors import NotFound
from storage.models import AlertRule, TrackingPolicy, new_id, now_ms
from storage.repository import Store
from tracking.rules import ensure_defaults, load

router = APIRouter(tags=["alerts"], responses=problem_responses(401, 403, 404, 422, 429, 503))
_BODY_ERRORS = problem_responses(400, 413, 415)


def _invalidate(request: Request, fleet_id: str) -> None:
    """The processing stage of this process uses the change at once (others within 5 s)."""
    rule_book = getattr(request.app.state, "rule_book", None)
    if rule_book is not None:
        rule_book.invalidate(fleet_id)


async def _check_refs(store: Store, fleet_id: str, rule: AlertRule) -> None:
    """Muted vehicles and fences named by a rule must be the fleet's (422 otherwise)."""
    for vehicle_id in rule.muted_vehicle_ids:
        try:
            await store.vehicles.get(fleet_id, vehicle_id)
        except NotFound:
            raise invalid(
                ("body", "muted_vehicle_ids"), f"no vehicle {vehicle_id} in this fleet"
            ) from None
    for fence_id in rule.geofence_ids or ():
        try:
            await store.geofences.get(fleet_id, fence_id)
        except NotFound:
            where = ("body", "geofence_ids")
            raise invalid(where, f"no geofence {fence_id} in this fleet") from None


@router.get("/v1/alert-rules", response_model=AlertRulesPublic)
async def list_alert_rules(caller: Viewer, store: StoreDep) -> AlertRulesPublic:
    """The fleet's alert rules, in creation order (the default ones first, made on first read)."""
    fleet = await load(store.alert_rules, caller.fleet_id, now_ms())
    return AlertRulesPublic(data=[AlertRulePublic.of(r) for r in fleet.rules])


@router.post(
    "/v1/alert-rules",
    status_code=status.HTTP_201_CREATED,
    response_model=AlertRulePublic,
    responses=_BODY_ERRORS,
)
async def create_alert_rule(
    request: Request, body: AlertRuleCreate, caller: Admin, store: StoreDep, audit: AuditDep
) -> AlertRulePublic:
    """Add an alert rule (admin)."""
    now = now_ms()
    await ensure_defaults(store.alert_rules, caller.fleet_id, now)
    rule = AlertRule(
        id=new_id("arl"),
        fleet_id=caller.fleet_id,
        type=body.type,
        name=body.name or body.type.value.replace("_", " "),
        created_ms=now,
        updated_ms=now,
        enabled=body.enabled,
        severity=body.severity,
        muted_vehicle_ids=tuple(body.muted_vehicle_ids),
        updated_by=caller.key.id,
        codes=tuple(body.codes) if body.codes is not None else None,
        geofence_ids=tuple(body.geofence_ids) if body.geofence_ids is not None else None,
        speed_limit_kmh=body.speed_limit_kmh,
        min_duration_s=body.min_duration_s,
        min_speed_kmh=body.min_speed_kmh,
        offline_minutes=body.offline_minutes,
        schedule=body.schedule.model() if body.schedule is not None else None,
        radius_m=body.radius_m,
        park_minutes=body.park_minutes,
    )
    await _check_refs(store, caller.fleet_id, rule)
    await store.alert_rules.create(rule)
    await audit("create", "alert_rule", rule.id, detail=rule.type.value)
    _invalidate(request, caller.fleet_id)
    return AlertRulePublic.of(rule)


@router.get("/v1/alert-rules/{rule_id}", response_model=AlertRulePublic)
async def get_alert_rule(rule_id: Id, caller: Viewer, store: StoreDep) -> AlertRulePublic:
    return AlertRulePublic.of(await store.alert_rules.get(caller.fleet_id, rule_id))


@router.patch("/v1/alert-rules/{rule_id}", response_model=AlertRulePublic, responses=_BODY_ERRORS)
async def update_alert_rule(
    request: Request,
    rule_id: Id,
    body: AlertRuleUpdate,
    caller: Admin,
    store: StoreDep,
    audit: AuditDep,
) -> AlertRulePublic:
    """Change a rule (admin): enable or disable it, its severity, muted vehicles, parameters.
    A parameter given as null goes back to its default."""
    rule = await store.alert_rules.get(caller.fleet_id, rule_id)
    changes: dict[str, Any] = body.changes()
    problem = parameter_problem(
        rule.type, {name for name, value in changes.items() if value is not None}
    )
    if problem:
        raise invalid(("body",), problem)
    updated = dataclasses.replace(rule, **changes, updated_ms=now_ms(), updated_by=caller.key.id)
    await _check_refs(store, caller.fleet_id, updated)
    await store.alert_rules.replace(updated)
    await audit("update", "alert_rule", rule.id, detail=", ".join(sorted(changes)))
    _invalidate(request, caller.fleet_id)
    return AlertRulePublic.of(updated)


@router.delete("/v1/alert-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_alert_rule(
    request: Request, rule_id: Id, caller: Admin, store: StoreDep, audit: AuditDep
) -> None:
    """Delete a rule (admin); a deleted default rule is not made again. Open alerts it raised
    stay until their condition clears or someone closes them."""
    await store.alert_rules.delete(caller.fleet_id, rule_id)
    await audit("delete", "alert_rule", rule_id)
    _invalidate(request, caller.fleet_id)


@router.get("/v1/badge-policy", response_model=BadgePolicyPublic)
async def get_badge_policy(caller: Viewer, store: StoreDep) -> BadgePolicyPublic:
    """The fleet's recognised driver badges and whether the parked guard asks for one."""
    return BadgePolicyPublic.of(await store.alert_rules.policy(caller.fleet_id))


@router.put("/v1/badge-policy", response_model=BadgePolicyPublic, responses=_BODY_ERRORS)
async def put_badge_policy(
    request: Request, body: BadgePolicyUpdate, caller: Admin, store: StoreDep, audit: AuditDep
) -> BadgePolicyPublic:
    """Replace the fleet's badge policy (admin); badges are kept (and answered) as their
    pseudonyms, which is what the gateway stores for a box's badge."""
    policy = await store.alert_rules.put_policy(
        TrackingPolicy(
            fleet_id=caller.fleet_id,
            require_badge=body.require_badge,
            badges=tuple(sorted({stored_badge(request, b) for b in body.badges})),
            updated_ms=now_ms(),
            updated_by=caller.key.id,
        )
    )
    await audit(
        "update", "badge_policy", None, detail=f"require={body.require_badge} {len(policy.badges)}"
    )
    _invalidate(request, caller.fleet_id)
    return BadgePolicyPublic.of(policy)


@router.post("/v1/alerts/{alert_id}/ack", response_model=AlertPublic, responses=_BODY_ERRORS)
async def acknowledge_alert(
    alert_id: Id,
    caller: Manager,
    store: StoreDep,
    audit: AuditDep,
    body: Annotated[AlertAck | None, Body()] = None,
) -> AlertPublic:
    """Acknowledge an alert (manager or admin): who, when and the note are kept with it; the
    first acknowledgement stays. An acknowledged alert stays open until its condition clears."""
    alert = await store.alerts.acknowledge(
        caller.fleet_id,
        alert_id,
        by=caller.key.id,
        at_ms=now_ms(),
        note=body.note if body else "",
    )
    await audit("update", "alert", alert.id, detail="acknowledged")
    return AlertPublic.of(alert)
