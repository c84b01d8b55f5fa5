"""Bulk onboarding on SQLite: a file's vehicles, boxes and fittings in one transaction."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Collection, Sequence

from storage.models import Device, Fitting, Vehicle
from storage.secrets import SecretBox, device_context
from storage.sqlite import rows
from storage.sqlite.db import Database
from storage.sqlite.devices import _insert_device as insert_device
from storage.sqlite.query import require_fleet
from storage.sqlite.resources import _insert_vehicle as insert_vehicle

# Values per IN (...) lookup: well under SQLite's limit of host parameters.
_CHUNK = 500


class SqliteImports:
    def __init__(self, db: Database, secrets: SecretBox) -> None:
        self._db = db
        self._secrets = secrets

    async def taken(
        self, fleet_id: str, vins: Collection[str], imeis: Collection[str]
    ) -> tuple[set[str], set[str]]:
        return await self._db.read(_taken, fleet_id, list(vins), list(imeis))

    async def provision(
        self,
        fleet_id: str,
        vehicles: Sequence[Vehicle],
        devices: Sequence[Device],
        fittings: Sequence[Fitting],
    ) -> None:
        sealed = [
            dataclasses.replace(d, secret=self._secrets.seal(d.secret, device_context(d.id)))
            for d in devices
        ]
        await self._db.write(_provision, fleet_id, vehicles, sealed, fittings)


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


def _taken(
    conn: sqlite3.Connection, fleet_id: str, vins: list[str], imeis: list[str]
) -> tuple[set[str], set[str]]:
    found_vins: set[str] = set()
    for chunk in _chunks(vins):
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT vin FROM vehicles WHERE fleet_id = ? AND vin IN ({marks})"
        found_vins.update(vin for (vin,) in conn.execute(sql, [fleet_id, *chunk]))
    found_imeis: set[str] = set()
    for chunk in _chunks(imeis):
        marks = ", ".join("?" * len(chunk))
        # Any fleet: an IMEI is one box in the whole platform (devices.imei is UNIQUE).
        sql = f"SELECT imei FROM devices WHERE imei IN ({marks})"
        found_imeis.update(imei for (imei,) in conn.execute(sql, chunk))
    return found_vins, found_imeis


def _provision(
    conn: sqlite3.Connection,
    fleet_id: str,
    vehicles: Sequence[Vehicle],
    devices: Sequence[Device],
    fittings: Sequence[Fitting],
) -> None:
    # One transaction (the writer's): a UNIQUE violation (a VIN or IMEI taken since the file
    # was checked) rolls all of it back and comes out as Conflict.
    require_fleet(conn, fleet_id)
    # The single-row inserts the repositories use: one spelling of each row.
    for vehicle in vehicles:
        insert_vehicle(conn, vehicle)
    for device in devices:
        insert_device(conn, device)
    conn.executemany(
        f"INSERT INTO fittings ({rows.FITTING_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        ((f.fleet_id, f.device_id, f.vehicle_id, f.from_ms, f.to_ms) for f in fittings),
    )
