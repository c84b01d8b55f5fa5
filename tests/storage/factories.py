"""Builders for the models the contract tests store."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from storage.models import AccessLogEntry, ApiKey, Event, Position, Role, new_id


def position(
    fleet_id: str,
    device_id: str,
    vehicle_id: str | None,
    time_ms: int,
    **overrides: Any,
) -> Position:
    fields: dict[str, Any] = {
        "fleet_id": fleet_id,
        "device_id": device_id,
        "vehicle_id": vehicle_id,
        "time_ms": time_ms,
        "received_ms": time_ms + 500,
        "lat": 48.8566,
        "lon": 2.3522,
        "altitude_m": 35,
        "speed_kmh": 42.5,
        "heading_deg": 270.0,
        "satellites": 9,
        "hdop": 0.8,
        "fix_valid": True,
        "ignition": True,
        "doors_locked": False,
        "engine_start_inhibited": False,
        "external_power": True,
        "odometer_m": 123_456,
        "external_power_mv": 12_600,
        "battery_mv": 4_100,
        "gsm_signal": 21,
        "warnings": 0,
        "driver_badge": None,
        "buffered": False,
    }
    fields.update(overrides)
    return Position(**fields)


def event(
    fleet_id: str,
    device_id: str,
    vehicle_id: str | None,
    time_ms: int,
    code: str = "sos",
    detail: int = 0,
) -> Event:
    return Event(
        fleet_id=fleet_id,
        device_id=device_id,
        vehicle_id=vehicle_id,
        time_ms=time_ms,
        received_ms=time_ms + 500,
        code=code,
        detail=detail,
        position=position(fleet_id, device_id, vehicle_id, time_ms, driver_badge=77),
    )


def api_key(fleet_id: str | None, role: Role = Role.ADMIN, *, created_ms: int = 1_000) -> ApiKey:
    secret = secrets.token_urlsafe(24)
    return ApiKey(
        id=new_id("key"),
        fleet_id=fleet_id,
        role=role,
        name=f"key for {fleet_id}",
        key_hash=hashlib.sha256(secret.encode()).hexdigest(),
        prefix=secret[:8],
        created_ms=created_ms,
        expires_ms=created_ms + 86_400_000,
    )


def access_entry(fleet_id: str | None, time_ms: int, action: str = "read") -> AccessLogEntry:
    return AccessLogEntry(
        id=new_id("log"),
        time_ms=time_ms,
        key_id="key_x",
        fleet_id=fleet_id,
        action=action,
        resource="vehicle",
        resource_id="veh_x",
        detail="GET /vehicles",
    )
