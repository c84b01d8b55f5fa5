"""Builders shared by the API tests: positions to seed, fleets with a key per role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from storage.models import Event, Position

OPERATOR_KEY = "gp8_test-operator-key-0123456789abcdefghijklmnopqrs"
VALID_VINS = ["1M8GDM9AXKP042788", "1HGCM82633A004352", "WVWZZZ1JZXW000001", "JH4KA7561PC008269"]
# Luhn-valid IMEIs (the first is the GSMA's textbook example).
VALID_IMEIS = ["490154203237518", "356938035643809", "352099001761481", "359876543210983"]
T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def luhn_imei(body14: str) -> str:
    from api.validation import luhn_check_digit

    return body14 + str(luhn_check_digit(body14))


def make_position(
    fleet_id: str,
    device_id: str,
    vehicle_id: str | None,
    time_ms: int,
    **overrides: Any,
) -> Position:
    base = Position(
        fleet_id=fleet_id,
        device_id=device_id,
        vehicle_id=vehicle_id,
        time_ms=time_ms,
        received_ms=time_ms + 500,
        lat=48.8566,
        lon=2.3522,
        altitude_m=35,
        speed_kmh=50.0,
        heading_deg=90.0,
        satellites=9,
        hdop=0.9,
        fix_valid=True,
        ignition=True,
        doors_locked=False,
        engine_start_inhibited=False,
        external_power=True,
        odometer_m=100_000,
        external_power_mv=12_600,
        battery_mv=4_100,
        gsm_signal=20,
        warnings=0,
    )
    return base._replace(**overrides)


def make_event(position: Position, code: str, detail: int = 0) -> Event:
    return Event(
        fleet_id=position.fleet_id,
        device_id=position.device_id,
        vehicle_id=position.vehicle_id,
        time_ms=position.time_ms,
        received_ms=position.received_ms,
        code=code,
        detail=detail,
        position=position,
    )


@dataclass
class FleetFixture:
    """A fleet created through the API, with one key per role and a fitted box."""

    id: str
    keys: dict[str, str]  # role -> secret
    key_ids: dict[str, str]
    vehicle_id: str
    device_id: str
    imei: str
    extra: dict[str, Any] = field(default_factory=dict)

    def h(self, role: str = "admin") -> dict[str, str]:
        return bearer(self.keys[role])


async def create_fleet(client: httpx.AsyncClient, name: str, vin: str, imei: str) -> FleetFixture:
    op = bearer(OPERATOR_KEY)
    r = await client.post("/v1/fleets", json={"name": name}, headers=op)
    assert r.status_code == 201, r.text
    fleet_id = r.json()["id"]
    keys: dict[str, str] = {}
    key_ids: dict[str, str] = {}
    for role in ("admin", "manager", "viewer"):
        r = await client.post(
            f"/v1/fleets/{fleet_id}/keys",
            json={"role": role, "name": role, "email": f"{role}@example.com"},
            headers=op,
        )
        assert r.status_code == 201, r.text
        keys[role] = r.json()["key"]
        key_ids[role] = r.json()["id"]
    admin = bearer(keys["admin"])
    r = await client.post(
        "/v1/vehicles", json={"vin": vin, "plate": f"{name}-1", "label": "van"}, headers=admin
    )
    assert r.status_code == 201, r.text
    vehicle_id = r.json()["id"]
    r = await client.post("/v1/devices", json={"imei": imei, "model": "GP8000"}, headers=admin)
    assert r.status_code == 201, r.text
    device_id = r.json()["id"]
    r = await client.put(f"/v1/vehicles/{vehicle_id}/device", json={"imei": imei}, headers=admin)
    assert r.status_code == 200, r.text
    return FleetFixture(fleet_id, keys, key_ids, vehicle_id, device_id, imei)
