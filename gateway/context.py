"""Who a logged-in box is, and which vehicle it was fitted to at each record's time.

A box is fitted to a vehicle for a period (storage.models.Fitting); a late record sent after the
box moved to another vehicle still belongs to the vehicle it was in when the fix was taken. A
session loads the box's fitting history once (TCP: at LOGIN; MQTT: cached per box) and every
protocol adapter resolves each record's vehicle in memory with it.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.ports import DeviceDirectory
from storage.models import Fitting

# A box keeps its session for days (TCP) or is cached per IMEI (MQTT); its fitting history is
# re-read this often so a box fitted to a vehicle meanwhile has its records attributed to it.
FITTINGS_MAX_AGE_S = 60.0
# Reads of the store for a box's context (device, fittings) give up after this long.
LOOKUP_TIMEOUT_S = 10.0
# Before any record's time (u64 milliseconds): with no fitting, every time has no vehicle.
_NO_TIME = -(2**63)


@dataclass(frozen=True, slots=True)
class Fittings:
    """A box's fitting history, searchable by time (O(log n) per record)."""

    history: tuple[Fitting, ...] = ()
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # Every time from `tail_from_ms` on belongs to `tail_vehicle` (None: to no vehicle): the
    # answer for nearly every record, which a converter reads without a call (`vehicle_at`).
    tail_from_ms: int = field(init=False, repr=False, compare=False)
    tail_vehicle: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.history, key=lambda f: f.from_ms))
        object.__setattr__(self, "history", ordered)
        object.__setattr__(self, "_starts", tuple(f.from_ms for f in ordered))
        tail_from, tail_vehicle = _NO_TIME, None
        if ordered:
            last = ordered[-1]
            if last.to_ms is None:
                tail_from, tail_vehicle = last.from_ms, last.vehicle_id
            else:  # the box was removed: no vehicle from then on
                tail_from = max(last.from_ms, last.to_ms)
        object.__setattr__(self, "tail_from_ms", tail_from)
        object.__setattr__(self, "tail_vehicle", tail_vehicle)

    @classmethod
    def of(cls, history: Sequence[Fitting]) -> Fittings:
        return cls(tuple(history))

    def vehicle_at(self, time_ms: int) -> str | None:
        """The vehicle fitted at ``time_ms`` (from_ms inclusive, to_ms exclusive), or None."""
        starts = self._starts
        # Most records are recent: they fall in the last fitting, no search needed.
        if starts and time_ms >= starts[-1]:
            i = len(starts) - 1
        else:
            i = bisect_right(starts, time_ms) - 1
        if i < 0:
            return None
        fitting = self.history[i]
        if fitting.to_ms is not None and time_ms >= fitting.to_ms:
            return None
        return fitting.vehicle_id


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """Who a logged-in box is: what every stored record of the session is stamped with."""

    fleet_id: str
    device_id: str
    imei: str
    fittings: Fittings = Fittings()


async def load_fittings(devices: DeviceDirectory, device_id: str, timeout_s: float) -> Fittings:
    """A box's fitting history from the store, bounded in time."""
    async with asyncio.timeout(timeout_s):
        return Fittings.of(await devices.fittings(device_id))
