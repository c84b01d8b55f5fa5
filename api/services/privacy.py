"""Privacy mode on the read paths: one call per route decides what a caller may see
(docs/privacy.md).

A route asks `privacy_view` once (a few queries for the fleet or the vehicle: schedule history,
toggles, open theft cases), then filters with `PrivacyView.visible` (a bisection per fix, no
query). Viewers and managers never see a private fix. An admin sees them only when the request
states a reason in the ``Gp8-Reason`` header; the reveal is written to the access log (hash
chained, api/audit.py) with that reason before anything is answered. A vehicle with an open
theft case is never private, and the answers say so (``"privacy": "overridden_by_theft_case"``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from fastapi import Request

from api.audit import Audit
from api.deps import FleetCaller
from storage.models import Event, Position, Role, StreamEntry, TheftCaseStatus
from storage.privacy import FleetPrivacy
from storage.pseudonyms import BadgePseudonyms
from storage.repository import Store
from tracking.privacy import PrivacyState, PrivateSpans, VehiclePrivacy, vehicle_privacy

REASON_HEADER = "Gp8-Reason"
MAX_REASON_CHARS = 500
# Open theft cases listed for a fleet-wide view, at most (a fleet has a handful).
_CASES_LIMIT = 1000


@dataclass(slots=True)
class PrivacyView:
    """What one request may see of its fleet's private fixes."""

    vehicles: dict[str, VehiclePrivacy]
    reveal: bool = False  # an admin with a stated reason (logged)
    _spans: dict[tuple[str, int, int], PrivateSpans] = field(default_factory=dict)

    def spans(self, vehicle_id: str, from_ms: int, to_ms: int) -> PrivateSpans:
        vp = self.vehicles.get(vehicle_id)
        if vp is None or self.reveal:
            return PrivateSpans()
        key = (vehicle_id, from_ms, to_ms)
        found = self._spans.get(key)
        if found is None:
            found = self._spans[key] = vp.spans(from_ms, to_ms)
        return found

    def visible(self, p: Position, from_ms: int | None = None, to_ms: int | None = None) -> bool:
        """Whether the caller may see ``p`` (a fix of no vehicle is never private). Give the
        range being read: its intervals are computed once and each fix is a bisection."""
        if self.reveal or p.vehicle_id is None:
            return True
        vp = self.vehicles.get(p.vehicle_id)
        if vp is None:
            return True
        if from_ms is None or to_ms is None:
            return not vp.private_at(p.time_ms)
        return not self.spans(p.vehicle_id, from_ms, to_ms).covers(p.time_ms)

    def active_at(self, time_ms: int) -> list[str]:
        """The vehicles whose ``state`` over [time_ms, time_ms + 1) is ACTIVE (private, hidden
        from this caller), in one pass: a point question per vehicle, no intervals built."""
        if self.reveal:
            return []
        return [vid for vid, vp in self.vehicles.items() if vp.private_at(time_ms)]

    def hide(
        self, items: Sequence[Position], vehicle_id: str, from_ms: int, to_ms: int
    ) -> list[Position]:
        """``items`` (fixes of ``vehicle_id`` in [from_ms, to_ms)) without the private ones."""
        spans = self.spans(vehicle_id, from_ms, to_ms)
        return [p for p in items if not spans.covers(p.time_ms)] if spans else list(items)

    async def hide_pages(
        self,
        pages: AsyncIterator[list[Position]],
        vehicle_id: str,
        from_ms: int,
        to_ms: int,
    ) -> AsyncIterator[list[Position]]:
        """The streamed formats' pages, filtered the same way."""
        async for page in pages:
            yield self.hide(page, vehicle_id, from_ms, to_ms)

    def state(self, vehicle_id: str, from_ms: int, to_ms: int) -> PrivacyState:
        vp = self.vehicles.get(vehicle_id)
        if vp is None:
            return PrivacyState.OFF
        found = vp.state(from_ms, to_ms)
        if found is PrivacyState.ACTIVE and self.reveal:
            return PrivacyState.REVEALED
        return found


def stated_reason(request: Request) -> str | None:
    reason = (request.headers.get(REASON_HEADER) or "").strip()
    return reason[:MAX_REASON_CHARS] or None


async def privacy_view(
    store: Store,
    caller: FleetCaller,
    request: Request,
    audit: Audit,
    vehicle_id: str | None = None,
    *,
    resource: str = "positions",
    existing: bool = False,
    facts: FleetPrivacy | None = None,
) -> PrivacyView:
    """The caller's view of ``vehicle_id`` (or of the whole fleet, None); ``resource``: what
    the request reads, as its reveal is logged; ``existing``: of the vehicles that exist only
    (a read that names vehicles: a deleted one's facts would name it). ``facts``: the
    privacy facts of that read, when the route read them already (beside its own reads)."""
    if facts is None:
        facts = await store.privacy.fleet(caller.fleet_id, vehicle_id, existing=existing)
    configured = set(facts.changes) | set(facts.toggles)
    if vehicle_id is not None:
        configured &= {vehicle_id}
    if not configured:
        return PrivacyView({})
    if vehicle_id is not None:
        case = await store.theft_cases.open_case(caller.fleet_id, vehicle_id)
        stolen = {vehicle_id} if case is not None else set()
    else:
        page = await store.theft_cases.list(
            caller.fleet_id, status=TheftCaseStatus.OPEN, limit=_CASES_LIMIT
        )
        stolen = {case.vehicle_id for case in page.items}
    vehicles = {vid: vehicle_privacy(facts, vid, theft_case=vid in stolen) for vid in configured}
    reason = stated_reason(request)
    reveal = reason is not None and caller.role is Role.ADMIN
    if reveal:
        await audit("read_private", resource, vehicle_id, detail=f"reason: {reason}")
    return PrivacyView(vehicles, reveal=reveal)


def stored_badge(request: Request, badge: str) -> int:
    """A badge number a client names (digits), as storage keeps it and compares it: its
    pseudonym under the app's driver key, as the gateway hashes what boxes report."""
    found = getattr(request.app.state, "pseudonyms", None)
    pseudonyms = found if isinstance(found, BadgePseudonyms) else BadgePseudonyms.development()
    return pseudonyms.of(int(badge))


# The stream and the webhooks read a fleet's privacy facts at most this often (a schedule or
# badge change reaches them within this; a theft case opened overrides within it too).
FACTS_TTL_S = 5.0


class EntryPrivacy:
    """The live stream's and the webhooks' filter: stream entries (positions, events) that are
    private are left out. Neither has a caller who could state a reason, so nobody sees them
    there; an open theft case makes a vehicle's fixes flow again (a theft integration needs
    them). Facts are cached per fleet for `FACTS_TTL_S`."""

    def __init__(self, store: Store, *, ttl_s: float = FACTS_TTL_S) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, dict[str, VehiclePrivacy]]] = {}

    async def _vehicles(self, fleet_id: str) -> dict[str, VehiclePrivacy]:
        now = time.monotonic()
        cached = self._cache.get(fleet_id)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        facts = await self._store.privacy.fleet(fleet_id)
        configured = set(facts.changes) | set(facts.toggles)
        vehicles: dict[str, VehiclePrivacy] = {}
        if configured:
            page = await self._store.theft_cases.list(
                fleet_id, status=TheftCaseStatus.OPEN, limit=_CASES_LIMIT
            )
            stolen = {case.vehicle_id for case in page.items}
            vehicles = {
                vid: vehicle_privacy(facts, vid, theft_case=vid in stolen) for vid in configured
            }
        self._cache[fleet_id] = (now, vehicles)
        return vehicles

    async def __call__(self, fleet_id: str, entries: list[StreamEntry]) -> list[StreamEntry]:
        vehicles = await self._vehicles(fleet_id)
        if not vehicles:
            return entries
        view = PrivacyView(vehicles)
        return [e for e in entries if _visible(view, e.item)]


def _visible(view: PrivacyView, item: object) -> bool:
    if isinstance(item, Position):
        return view.visible(item)
    if isinstance(item, Event):
        return view.visible(item.position)
    return True
