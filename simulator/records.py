"""Position records in wire units (docs/protocol.md §4.1) from the physical values a vehicle has."""

from __future__ import annotations

from protocol.gp8 import PositionRecord, RecordFlags


def make_record(
    time_ms: int,
    lat: float,
    lon: float,
    *,
    speed_kmh: float = 0.0,
    heading_deg: float = 0.0,
    altitude_m: int = 0,
    satellites: int = 9,
    hdop: float = 0.9,
    fix_valid: bool = True,
    ignition: bool = False,
    flags: int = 0,
    odometer_m: int = 0,
    ext_power_mv: int = 12_600,
    battery_mv: int = 4_100,
    gsm_signal: int = 20,
    warnings: int = 0,
    badge: int = 0,
    buffered: bool = False,
) -> PositionRecord:
    """A position record in wire units from physical values."""
    if fix_valid:
        flags |= RecordFlags.FIX_VALID
    if ignition:
        flags |= RecordFlags.IGNITION
    if ext_power_mv:
        flags |= RecordFlags.EXTERNAL_POWER
    if buffered:
        flags |= RecordFlags.BUFFERED
    return PositionRecord(
        time_ms=time_ms,
        lat_e7=round(lat * 1e7),
        lon_e7=round(lon * 1e7),
        altitude_m=altitude_m,
        speed_dkmh=round(speed_kmh * 10),
        heading_ddeg=round(heading_deg * 10) % 3600,
        satellites=satellites,
        hdop_d=round(hdop * 10),
        flags=int(flags),
        odometer_m=odometer_m,
        ext_power_mv=ext_power_mv,
        battery_mv=battery_mv,
        gsm_signal=gsm_signal,
        warnings=warnings,
        badge=badge,
    )
