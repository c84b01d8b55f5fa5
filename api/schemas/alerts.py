"""Alert rules, badge policies, acknowledgements and the filters of GET /v1/alerts
(docs/alerts.md, "Alerts" and "Alert rules"; docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.params import Order, OrderQuery
from api.problems import invalid
from api.schemas.common import Name, Timestamp
from api.schemas.geofences import Schedule
from api.times import iso_ms, parse_time, understood
from storage.models import (
    AlertKind,
    AlertRule,
    AlertRuleType,
    AlertState,
    Severity,
    TrackingPolicy,
)
from tracking.rules_logic import BOX_ALARM_CODES, PARAMETERS, effective

# A fleet's lists: muted vehicles per rule, fences per rule, recognised badges.
MAX_LIST = 1000
NOTE_MAX = 500
# A driver badge is a u64 on the wire; storage keeps those below 2^63 (protocol validation).
MAX_BADGE = 2**63 - 1

Ref = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=NOTE_MAX)]
AlarmCode = Literal[
    "sos",
    "power_cut",
    "tamper",
    "gps_jamming",
    "gsm_jamming",
    "towing",
    "crash",
    "dashboard_warning",
]
assert set(AlarmCode.__args__) == set(BOX_ALARM_CODES)  # type: ignore[attr-defined]
Badge = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}$"), Field(examples=["4711"])]


# --- GET /v1/alerts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertFilters:
    kinds: list[AlertKind] | None
    state: AlertState | None
    from_ms: int
    to_ms: int
    newest_first: bool


_TIME_DOC = "RFC 3339 or epoch milliseconds (not seconds); on the time the alert was raised"


async def alert_filters(
    type_: Annotated[
        list[AlertKind] | None,
        Query(alias="type", description="Only these types (repeat the parameter for several)"),
    ] = None,
    state: Annotated[
        AlertState | None,
        Query(description="open: not acknowledged; acknowledged; closed: its condition cleared"),
    ] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=64, description=_TIME_DOC)] = None,
    to: Annotated[str | None, Query(max_length=64, description=_TIME_DOC)] = None,
    order: OrderQuery = Order.ASC,
) -> AlertFilters:
    bounds: dict[str, int] = {}
    for name, text in (("from", from_), ("to", to)):
        if text is None:
            continue
        try:
            bounds[name] = parse_time(text)
        except ValueError as exc:
            raise invalid(("query", name), str(exc)) from None
    from_ms, to_ms = bounds.get("from", 0), bounds.get("to", 2**62)
    if from_ms >= to_ms:
        # Say how each bound was read; a missing one is open.
        from_said = f"from={understood(from_, from_ms)}" if from_ is not None else "from (open)"
        to_said = f"to={understood(to, to_ms)}" if to is not None else "to (open)"
        raise invalid(("query", "from"), f"{from_said} must be before {to_said}", from_)
    return AlertFilters(type_, state, from_ms, to_ms, order.newest_first)


class AlertAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Note = Field(default="", description="What was done about it (kept with the alert)")


# --- /v1/alert-rules --------------------------------------------------------------------

_Speed = Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)]
_MinSpeed = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
_Duration = Annotated[int, Field(ge=0, le=24 * 3600)]
_OfflineMinutes = Annotated[int, Field(ge=5, le=30 * 24 * 60)]
_Radius = Annotated[float, Field(ge=50, le=10_000, allow_inf_nan=False)]
_ParkMinutes = Annotated[int, Field(ge=1, le=24 * 60)]
_Refs = Annotated[list[Ref], Field(max_length=MAX_LIST)]


class _RuleParameters(BaseModel):
    """The parameters of a rule; each type takes some (docs/alerts.md, "Alert rules")."""

    codes: list[AlarmCode] | None = Field(
        default=None,
        min_length=1,
        description="box_alarm: the alarms it raises (default: all but dashboard_warning)",
    )
    geofence_ids: _Refs | None = Field(
        default=None, description="Fence rules, overspeed, outside_hours: these fences only"
    )
    speed_limit_kmh: _Speed | None = Field(
        default=None, description="overspeed: the fleet's limit (a fence's own limit wins in it)"
    )
    min_duration_s: _Duration | None = Field(
        default=None, description="How long the condition lasts before it is an incident"
    )
    min_speed_kmh: _MinSpeed | None = Field(default=None, description="What counts as moving")
    offline_minutes: _OfflineMinutes | None = Field(
        default=None, description="box_offline: minutes without a connection (default 1440)"
    )
    schedule: Schedule | None = Field(
        default=None, description="outside_hours: allowed hours (default: the fences')"
    )
    radius_m: _Radius | None = Field(
        default=None, description="parked_guard: movement beyond this is suspect (default 150)"
    )
    park_minutes: _ParkMinutes | None = Field(
        default=None, description="parked_guard: parked this long, the guard arms (default 5)"
    )


_PARAMETER_NAMES = frozenset(_RuleParameters.model_fields)
assert frozenset().union(*PARAMETERS.values()) == _PARAMETER_NAMES


def parameter_problem(rule_type: AlertRuleType, given: set[str]) -> str | None:
    """Why parameters given with a rule do not apply to its type, or None."""
    foreign = sorted((given & _PARAMETER_NAMES) - PARAMETERS[rule_type])
    if not foreign:
        return None
    takes = ", ".join(sorted(PARAMETERS[rule_type])) or "no parameters"
    return f"a {rule_type.value} rule does not take {', '.join(foreign)} (it takes {takes})"


class AlertRuleCreate(_RuleParameters):
    model_config = ConfigDict(extra="forbid")

    type: AlertRuleType
    name: Name | None = Field(default=None, description="Default: the type")
    enabled: bool = True
    severity: Severity = Severity.WARNING
    muted_vehicle_ids: _Refs = Field(
        default_factory=list, description="Vehicles this rule raises nothing for"
    )

    @model_validator(mode="after")
    def _parameters_fit_the_type(self) -> AlertRuleCreate:
        given = {name for name in self.model_fields_set if getattr(self, name) is not None}
        problem = parameter_problem(self.type, given)
        if problem:
            raise ValueError(problem)
        return self


class AlertRuleUpdate(_RuleParameters):
    """Only the fields given change; a parameter given as null goes back to its default."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    enabled: bool | None = None
    severity: Severity | None = None
    muted_vehicle_ids: _Refs | None = None

    def changes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name in ("name", "enabled", "severity", "muted_vehicle_ids") and value is None:
                continue  # not nullable: null is "unchanged"
            if name == "schedule" and value is not None:
                value = value.model()
            elif isinstance(value, list):
                value = tuple(value)
            out[name] = value
        return out


class AlertRulePublic(BaseModel):
    id: str
    type: AlertRuleType
    name: str
    enabled: bool
    severity: Severity
    muted_vehicle_ids: list[str]
    default: bool = Field(description="One of the rules a fleet starts with")
    created_at: Timestamp
    updated_at: Timestamp
    updated_by: str | None
    parameters: dict[str, Any] = Field(
        description="The parameters its type takes, defaults filled in"
    )

    @classmethod
    def of(cls, rule: AlertRule) -> AlertRulePublic:
        full = effective(rule)
        parameters: dict[str, Any] = {}
        for name in sorted(PARAMETERS[rule.type]):
            value = getattr(full, name)
            if name == "schedule" and value is not None:
                value = Schedule.of(value).model_dump(by_alias=True)
            elif isinstance(value, tuple):
                value = list(value)
            parameters[name] = value
        return cls(
            id=rule.id,
            type=rule.type,
            name=rule.name,
            enabled=rule.enabled,
            severity=rule.severity,
            muted_vehicle_ids=list(rule.muted_vehicle_ids),
            default=rule.default,
            created_at=iso_ms(rule.created_ms),
            updated_at=iso_ms(rule.updated_ms),
            updated_by=rule.updated_by,
            parameters=parameters,
        )


class AlertRulesPublic(BaseModel):
    data: list[AlertRulePublic]


# --- /v1/badge-policy -------------------------------------------------------------------


class BadgePolicyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_badge: bool = Field(
        description="While parked and armed, a start without a recognised badge is a "
        "suspected theft"
    )
    badges: list[Badge] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="The recognised driver badges (empty: any badge is recognised)",
    )

    @model_validator(mode="after")
    def _in_range(self) -> BadgePolicyUpdate:
        if any(int(b) > MAX_BADGE for b in self.badges):
            raise ValueError(f"a badge is at most {MAX_BADGE}")
        return self


class BadgePolicyPublic(BaseModel):
    require_badge: bool
    badges: list[str]
    updated_at: Timestamp | None
    updated_by: str | None

    @classmethod
    def of(cls, policy: TrackingPolicy) -> BadgePolicyPublic:
        return cls(
            require_badge=policy.require_badge,
            badges=[str(b) for b in policy.badges],
            updated_at=iso_ms(policy.updated_ms) if policy.updated_ms else None,
            updated_by=policy.updated_by,
        )
