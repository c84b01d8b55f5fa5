"""A fleet's fences behind a spatial index, and one position decided against all of them. Pure.

Testing every fence for every position costs a point-in-polygon test per fence: with 1,000
fences, milliseconds per position. Instead an STRtree holds each fence's bounding box grown by
its margin (everything that is not certainly OUTSIDE): a position outside every box is OUTSIDE
every fence, and only the few fences whose box holds it are tested precisely, on prepared
geometries. Fences the vehicle is inside of, or about to cross, are checked at every position
whatever the tree says, so a vehicle leaving at speed still leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import shapely
from shapely import STRtree

from storage.models import GeofenceEventKind, GeofenceState, Position
from tracking.geofence_logic import (
    CompiledFence,
    decide,
    initial_state,
    same_record,
    settled_outside,
)


class FleetFences:
    """A fleet's compiled fences and the index over their outer bounds."""

    def __init__(self, fences: Iterable[CompiledFence]) -> None:
        self.fences: list[CompiledFence] = list(fences)
        self.by_id: dict[str, CompiledFence] = {f.id: f for f in self.fences}
        self._tree = (
            STRtree([shapely.box(*f.shape.bounds) for f in self.fences]) if self.fences else None
        )

    def __len__(self) -> int:
        return len(self.fences)

    def near(self, lon: float, lat: float) -> list[CompiledFence]:
        """The fences whose outer bounds hold (lon, lat): all a position can be inside of."""
        if self._tree is None:
            return []
        return [self.fences[i] for i in self._tree.query(shapely.Point(lon, lat))]


@dataclass(frozen=True, slots=True)
class Crossing:
    fence: CompiledFence
    kind: GeofenceEventKind
    state: GeofenceState  # after the crossing


@dataclass(slots=True)
class Observation:
    """What one position did to a vehicle's states."""

    changed: list[GeofenceState] = field(default_factory=list)  # to store
    touched: list[GeofenceState] = field(default_factory=list)  # newer checked_ms only
    crossings: list[Crossing] = field(default_factory=list)


def observe(
    fences: FleetFences,
    states: Mapping[str, GeofenceState],
    fleet_id: str,
    vehicle_id: str,
    position: Position,
) -> Observation:
    """Decide ``position`` for every fence of the fleet that applies to the vehicle.

    ``states`` are the vehicle's known states by fence id (a missing one is settled outside).
    Nothing is changed in place: the caller stores ``changed`` and only then adopts it.
    """
    check: dict[str, CompiledFence] = {
        f.id: f for f in fences.near(position.lon, position.lat) if f.applies_to(vehicle_id)
    }
    for fence_id, state in states.items():
        if fence_id not in check and not settled_outside(state):
            fence = fences.by_id.get(fence_id)
            if fence is not None and fence.applies_to(vehicle_id):
                check[fence_id] = fence
    return _decide_all(check.values(), states, fleet_id, vehicle_id, position)


def observe_naive(
    fences: Sequence[CompiledFence],
    states: Mapping[str, GeofenceState],
    fleet_id: str,
    vehicle_id: str,
    position: Position,
) -> Observation:
    """`observe` without the index: every applicable fence tested precisely. The benchmark's
    floor, and the reference the tests compare `observe` with."""
    applicable = (f for f in fences if f.applies_to(vehicle_id))
    return _decide_all(applicable, states, fleet_id, vehicle_id, position)


def _decide_all(
    fences: Iterable[CompiledFence],
    states: Mapping[str, GeofenceState],
    fleet_id: str,
    vehicle_id: str,
    position: Position,
) -> Observation:
    out = Observation()
    for fence in fences:
        old = states.get(fence.id)
        new, kind = decide(old or initial_state(fleet_id, vehicle_id, fence.id), fence, position)
        if old is None:
            if settled_outside(new):
                continue  # still what no record means: nothing to keep
        elif new is old:
            continue  # a late position
        if old is not None and same_record(old, new):
            out.touched.append(new)
        else:
            out.changed.append(new)
        if kind is not None:
            out.crossings.append(Crossing(fence, kind, new))
    return out
