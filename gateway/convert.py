"""Wire records → storage models, with the vehicle the box was fitted to at each record's time.

A box is fitted to a vehicle for a period (storage.models.Fitting); a late record sent after the
box moved to another vehicle still belongs to the vehicle it was in when the fix was taken. The
connection loads the box's fitting history at LOGIN and resolves every record in memory.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.gp8 import Event as WireEvent
from protocol.gp8 import PositionRecord, RecordFlags
from storage.models import Event, Fitting, Position

_FIX_VALID = int(RecordFlags.FIX_VALID)
_IGNITION = int(RecordFlags.IGNITION)
_DOORS_LOCKED = int(RecordFlags.DOORS_LOCKED)
_INHIBITED = int(RecordFlags.ENGINE_START_INHIBITED)
_EXTERNAL_POWER = int(RecordFlags.EXTERNAL_POWER)
_BUFFERED = int(RecordFlags.BUFFERED)


@dataclass(frozen=True, slots=True)
class Fittings:
    """A box's fitting history, searchable by time (O(log n) per record)."""

    history: tuple[Fitting, ...] = ()
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.history, key=lambda f: f.from_ms))
        object.__setattr__(self, "history", ordered)
        object.__setattr__(self, "_starts", tuple(f.from_ms for f in ordered))

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


def to_position(record: PositionRecord, ctx: DeviceContext, received_ms: int) -> Position:
    # The ingest hot path (one call per record): the record is unpacked once and Position is
    # built positionally, which is about a third cheaper than keywords. The argument order is
    # storage.models.Position's field order; tests/gateway/test_convert.py pins it.
    (
        time_ms,
        lat_e7,
        lon_e7,
        altitude_m,
        speed_dkmh,
        heading_ddeg,
        satellites,
        hdop_d,
        flags,
        odometer_m,
        ext_power_mv,
        battery_mv,
        gsm_signal,
        warnings,
        badge,
    ) = record
    return Position(
        ctx.fleet_id,
        ctx.device_id,
        ctx.fittings.vehicle_at(time_ms),
        time_ms,
        received_ms,
        lat_e7 / 1e7,
        lon_e7 / 1e7,
        altitude_m,
        speed_dkmh / 10,
        heading_ddeg / 10,
        satellites,
        hdop_d / 10,
        bool(flags & _FIX_VALID),
        bool(flags & _IGNITION),
        bool(flags & _DOORS_LOCKED),
        bool(flags & _INHIBITED),
        bool(flags & _EXTERNAL_POWER),
        odometer_m,
        ext_power_mv,
        battery_mv,
        gsm_signal,
        warnings,
        badge or None,
        bool(flags & _BUFFERED),
    )


def to_event(event: WireEvent, ctx: DeviceContext, received_ms: int) -> Event:
    position = to_position(event.record, ctx, received_ms)
    return Event(
        fleet_id=ctx.fleet_id,
        device_id=ctx.device_id,
        vehicle_id=position.vehicle_id,
        time_ms=position.time_ms,
        received_ms=received_ms,
        code=event.code.name.lower(),
        detail=event.detail,
        position=position,
    )
