"""The enter/exit decision: (state, fence, position) -> (new state, crossing or None). Pure.

The rule, for one vehicle and one fence (docs/alerts.md, "Geofences"):

1. A position is *seen* INSIDE when at least ``margin_m`` inside the fence, OUTSIDE when at least
   ``margin_m`` outside it, and neither in the band between (tracking/geofence_geometry.py).
2. The committed side changes only to a *candidate* seen beyond the margin on every position
   for ``dwell_s`` of device time: the first such position starts the candidate, the first one
   ``dwell_s`` or more later commits it (enter or exit) with its own time. A position in the
   band, or on the committed side, drops the candidate.
3. A position not newer than the newest one decided on (``checked_ms``) changes nothing: a late
   record, replayed from a box's buffer, never moves a fence's state.

So jitter narrower than the margin never leaves the band, a wilder fix is one position that
does not hold for ``dwell_s``, and a vehicle parked on the border stays on its committed side.
No stored state means OUTSIDE: a vehicle already inside a new fence gets an enter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from storage.models import FenceSide, Geofence, GeofenceEventKind, GeofenceState, Position
from tracking.geofence_geometry import FenceShape, fence_shape

_CROSSING = {FenceSide.INSIDE: GeofenceEventKind.ENTER, FenceSide.OUTSIDE: GeofenceEventKind.EXIT}


@dataclass(frozen=True, slots=True, eq=False)
class CompiledFence:
    """A fence ready for the decision: its zones and the vehicles it applies to."""

    fence: Geofence
    shape: FenceShape
    dwell_ms: int
    vehicles: frozenset[str] | None  # None: every vehicle of the fleet

    @classmethod
    def of(cls, fence: Geofence) -> CompiledFence:
        vehicles = None if fence.vehicle_ids is None else frozenset(fence.vehicle_ids)
        return cls(fence, fence_shape(fence), fence.dwell_s * 1000, vehicles)

    @property
    def id(self) -> str:
        return self.fence.id

    def applies_to(self, vehicle_id: str) -> bool:
        return self.vehicles is None or vehicle_id in self.vehicles


def step(
    state: GeofenceState, seen: FenceSide | None, time_ms: int, dwell_ms: int
) -> tuple[GeofenceState, GeofenceEventKind | None]:
    """Rules 2 and 3 for what one position was seen as (rule 1)."""
    if time_ms <= state.checked_ms:
        return state, None
    if seen is None or seen is state.side:
        if state.candidate is None:
            return replace(state, checked_ms=time_ms), None
        return replace(state, candidate=None, candidate_ms=None, checked_ms=time_ms), None
    since = (
        state.candidate_ms
        if state.candidate is seen and state.candidate_ms is not None
        else time_ms
    )
    if time_ms - since >= dwell_ms:
        committed = replace(
            state,
            side=seen,
            since_ms=time_ms,
            candidate=None,
            candidate_ms=None,
            checked_ms=time_ms,
        )
        return committed, _CROSSING[seen]
    return replace(state, candidate=seen, candidate_ms=since, checked_ms=time_ms), None


def decide(
    state: GeofenceState, fence: CompiledFence, position: Position
) -> tuple[GeofenceState, GeofenceEventKind | None]:
    """The vehicle's new state for ``fence`` after ``position``, and the crossing it commits."""
    seen = fence.shape.classify(position.lon, position.lat)
    return step(state, seen, position.time_ms, fence.dwell_ms)


def initial_state(fleet_id: str, vehicle_id: str, geofence_id: str) -> GeofenceState:
    """What no stored state means: outside, settled."""
    return GeofenceState(fleet_id=fleet_id, vehicle_id=vehicle_id, geofence_id=geofence_id)


def same_record(a: GeofenceState, b: GeofenceState) -> bool:
    """Whether ``a`` and ``b`` differ only in ``checked_ms``: what is not worth a write."""
    return (
        a.side is b.side
        and a.since_ms == b.since_ms
        and a.candidate is b.candidate
        and a.candidate_ms == b.candidate_ms
    )


def settled_outside(state: GeofenceState) -> bool:
    """The state no record stands for: nothing to check unless the vehicle comes near."""
    return state.side is FenceSide.OUTSIDE and state.candidate is None
