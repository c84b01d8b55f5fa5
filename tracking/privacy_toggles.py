"""Privacy mode by the driver's action, on the processing stage (docs/privacy.md).

A driver presenting the fleet's privacy badge (a GP8 ``DRIVER_BADGE`` event, or a Teltonika
record whose event IO is 78 iButton: both stored as the event ``driver_badge``) toggles the
vehicle's private state at the event's time. `PrivacyToggleHandler` only records those times
(`PrivacyRepo.add_toggles`, idempotent, so a resent event or a batch seen again after a
restart is one toggle); which fixes are private is decided at read time (tracking/privacy.py).

Late events count too: a toggle is a fact at its own time, not a change of live state, so a
presentation buffered offline makes the fixes after it private as if it had arrived at once.
The fleet's privacy badge is read through a cache of ``ttl_s`` (a change reaches the handler
within it); a batch with no badge event costs one scan of its events and no I/O.

A privacy *switch* (a box input, where the device profile has one: the event
`PRIVACY_SWITCH_EVENT`, detail 1 on, 0 off) is a state, not a presentation: it toggles only
when it disagrees with the toggles before it, so a switch reported on again (a resend, a box
that reports the input on every change of another element) changes nothing, and a switch and
the badge can be used on one vehicle. A box replays what it buffered in order; a switch event
arriving after later toggles of its vehicle were recorded is judged against those before it.
"""

from __future__ import annotations

import time
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Sequence

from processing import DeviceBatch, Signal
from storage.errors import NotFound, StorageError
from storage.models import Event
from storage.privacy import PRIVACY_SWITCH_EVENT
from storage.repository import PrivacyRepo
from tracking.privacy import BADGE_EVENT, toggle_times

_CODES = frozenset({BADGE_EVENT, PRIVACY_SWITCH_EVENT})
# The fleet's privacy badge is read again after this long.
BADGE_TTL_S = 5.0


class PrivacyToggleHandler:
    name = "privacy_toggles"

    def __init__(
        self,
        privacy: PrivacyRepo,
        *,
        ttl_s: float = BADGE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._privacy = privacy
        self._ttl_s = ttl_s
        self._clock = clock
        self._badges: dict[str, tuple[float, int | None]] = {}  # fleet → (until, pseudonym)
        self.counters: Counter[str] = Counter()

    async def handle(self, batch: DeviceBatch) -> Sequence[Event | Signal]:
        by_vehicle: dict[str, list[Event]] = {}
        for event in batch.events:
            if event.vehicle_id is not None and event.code in _CODES:
                by_vehicle.setdefault(event.vehicle_id, []).append(event)
        if not by_vehicle:
            return ()
        badge = None
        if any(e.code == BADGE_EVENT for events in by_vehicle.values() for e in events):
            badge = await self._badge(batch.fleet_id)
        for vehicle_id, events in by_vehicle.items():
            times = toggle_times(badge, events)
            switches = [e for e in events if e.code == PRIVACY_SWITCH_EVENT]
            if switches:
                times = await self._switch_toggles(batch.fleet_id, vehicle_id, times, switches)
            if times:
                self.counters["recorded"] += await self._privacy.add_toggles(
                    batch.fleet_id, vehicle_id, times
                )
        return ()

    async def _switch_toggles(
        self, fleet_id: str, vehicle_id: str, badge_times: list[int], switches: list[Event]
    ) -> list[int]:
        """``badge_times`` and the toggles the switch positions need (module docstring)."""
        try:
            facts = await self._privacy.fleet(fleet_id, vehicle_id)
        except NotFound:  # erased while its boxes still report
            return badge_times
        toggles = sorted({*facts.toggles.get(vehicle_id, ()), *badge_times})
        times = list(badge_times)
        for event in sorted(switches, key=lambda e: e.time_ms):
            # Private just before the switch: an odd number of toggles before its time.
            private = bisect_left(toggles, event.time_ms) % 2 == 1
            if private != (event.detail == 1):
                insort(toggles, event.time_ms)
                times.append(event.time_ms)
        return times

    def invalidate(self, fleet_id: str) -> None:
        """The fleet's privacy badge changed (PUT /v1/privacy-badge in this process)."""
        self._badges.pop(fleet_id, None)

    async def _badge(self, fleet_id: str) -> int | None:
        cached = self._badges.get(fleet_id)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        try:
            badge = await self._privacy.badge(fleet_id)
        except NotFound:  # erased while its boxes still report
            badge = None
        except StorageError:
            if cached is None:
                raise
            badge = cached[1]  # the one in hand, until storage answers again
        self._badges[fleet_id] = (self._clock() + self._ttl_s, badge)
        return badge
