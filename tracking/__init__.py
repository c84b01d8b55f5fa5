"""Stolen-vehicle tracking: processing-stage handlers (docs/architecture.md, "Where new work
goes") and the pure decisions behind them. Geofences so far (docs/alerts.md, "Geofences"):
`GeofenceHandler` derives enter/exit signals; `decide` is its rule for one fence; the API
validates fences with `fence_problem` and `schedule_problem`; alert rules check allowed hours
with `within_schedule`.

Alerts and theft (docs/alerts.md "Alerts", docs/theft.md), imported from their modules:
`tracking.alerts.AlertRulesHandler` (after the geofences) over the pure rules of
`tracking.rules_logic`, each fleet's rules read through `tracking.rules.RuleBook` (default rules
made lazily); `tracking.guard.GuardHandler`, the parked guard, over the state machine of
`tracking.guard_logic`; `tracking.offline.OfflineSweep`, the box_offline rule; and
`tracking.theft.TheftService`, theft cases. Privacy mode (docs/privacy.md):
`tracking.privacy_toggles.PrivacyToggleHandler` records presentations of the privacy badge,
over the decisions of `tracking.privacy`.

May import `processing`, `storage`, `protocol` and `commands` only (tests/test_layers.py).
"""

from __future__ import annotations

from tracking.geofence_geometry import (
    MAX_FENCE_LATITUDE,
    MAX_FENCE_SPAN_M,
    MAX_RADIUS_M,
    MIN_FENCE_AREA_M2,
    MIN_RADIUS_M,
    FenceProblem,
    FenceShape,
    LocalFrame,
    compile_shape,
    fence_problem,
)
from tracking.geofence_index import FleetFences, Observation, observe, observe_naive
from tracking.geofence_logic import CompiledFence, decide, initial_state, step
from tracking.geofence_schedule import schedule_problem, within_schedule
from tracking.geofences import SIGNAL_KINDS, GeofenceHandler

__all__ = [
    "MAX_FENCE_LATITUDE",
    "MAX_FENCE_SPAN_M",
    "MAX_RADIUS_M",
    "MIN_FENCE_AREA_M2",
    "MIN_RADIUS_M",
    "SIGNAL_KINDS",
    "CompiledFence",
    "FenceProblem",
    "FenceShape",
    "FleetFences",
    "GeofenceHandler",
    "LocalFrame",
    "Observation",
    "compile_shape",
    "decide",
    "fence_problem",
    "initial_state",
    "observe",
    "observe_naive",
    "schedule_problem",
    "step",
    "within_schedule",
]
