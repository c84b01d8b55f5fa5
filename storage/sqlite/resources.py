"""Fleets, API keys, vehicles and the access log on SQLite."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Collection
from operator import attrgetter
from typing import Any

import orjson

from storage.latest import vehicle_subject
from storage.models import AccessLogEntry, ApiKey, Fleet, Page, Vehicle, new_id, now_ms
from storage.pagination import decode_cursor, id_key, make_page, order_kind, page_limit
from storage.sqlite import rows, schema
from storage.sqlite.audit_chain import chain_fleets, insert_chained, read_chain
from storage.sqlite.db import Database
from storage.sqlite.query import (
    after,
    equal_filters,
    fetch_all,
    get_one,
    keyset,
    require_fleet,
)


class SqliteFleets:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str) -> Fleet:
        fleet = Fleet(id=new_id("flt"), name=name, created_ms=now_ms())
        sql = f"INSERT INTO fleets ({rows.FLEET_COLUMNS}) VALUES (?, ?, ?)"
        await self._db.write(_execute, sql, (fleet.id, name, fleet.created_ms))
        return fleet

    async def get(self, fleet_id: str) -> Fleet:
        sql = f"SELECT {rows.FLEET_COLUMNS} FROM fleets WHERE id = ?"
        return await self._db.read(get_one, sql, (fleet_id,), rows.to_fleet, f"fleet {fleet_id}")

    async def list(self, *, cursor: str | None = None, limit: int = 100) -> Page[Fleet]:
        limit = page_limit(limit)
        cond, params = after(["id"], id_key(cursor, "fleet"))
        sql = f"SELECT {rows.FLEET_COLUMNS} FROM fleets WHERE 1{cond} ORDER BY id LIMIT ?"
        found = await self._db.read(fetch_all, sql, [*params, limit + 1])
        return make_page([rows.to_fleet(r) for r in found], limit, "fleet", lambda f: (f.id,))

    async def delete(self, fleet_id: str) -> None:
        await self._db.write(_erase_fleet, fleet_id)


class SqliteKeys:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, key: ApiKey) -> ApiKey:
        await self._db.write(_insert_key, key)
        return key

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        sql = f"SELECT {rows.KEY_COLUMNS} FROM api_keys WHERE key_hash = ?"
        found = await self._db.read(fetch_all, sql, (key_hash,))
        return rows.to_key(found[0]) if found else None

    async def get(self, fleet_id: str | None, key_id: str) -> ApiKey:
        # "fleet_id IS ?" also matches NULL = NULL: operator keys are reached with fleet_id None.
        sql = f"SELECT {rows.KEY_COLUMNS} FROM api_keys WHERE id = ? AND fleet_id IS ?"
        return await self._db.read(get_one, sql, (key_id, fleet_id), rows.to_key, f"key {key_id}")

    async def list(
        self, fleet_id: str | None, *, cursor: str | None = None, limit: int = 100
    ) -> Page[ApiKey]:
        limit = page_limit(limit)
        cond, params = after(["id"], id_key(cursor, "key"))
        sql = (
            f"SELECT {rows.KEY_COLUMNS} FROM api_keys WHERE fleet_id IS ?{cond} ORDER BY id LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [fleet_id, *params, limit + 1])
        return make_page([rows.to_key(r) for r in found], limit, "key", lambda k: (k.id,))

    async def touch(self, key_id: str, at_ms: int, *, every_ms: int) -> None:
        sql = (
            "UPDATE api_keys SET last_used_ms = ?"
            " WHERE id = ? AND (last_used_ms IS NULL OR last_used_ms <= ?)"
        )
        await self._db.write(_execute, sql, (at_ms, key_id, at_ms - every_ms))

    async def revoke(self, fleet_id: str | None, key_id: str, at_ms: int) -> ApiKey:
        return await self._db.write(_revoke_key, fleet_id, key_id, at_ms)


class SqliteVehicles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        fleet_id: str,
        *,
        vin: str,
        plate: str,
        label: str,
        log: AccessLogEntry | None = None,
    ) -> Vehicle:
        vehicle = Vehicle(
            id=new_id("veh"),
            fleet_id=fleet_id,
            vin=vin,
            plate=plate,
            label=label,
            created_ms=now_ms(),
        )
        if log is not None:
            log = dataclasses.replace(log, resource_id=vehicle.id)
        await self._db.write(_insert_vehicle, vehicle, log)
        return vehicle

    async def get(self, fleet_id: str, vehicle_id: str) -> Vehicle:
        return await self._db.read(get_vehicle, fleet_id, vehicle_id)

    async def get_many(self, fleet_id: str, vehicle_ids: Collection[str]) -> dict[str, Vehicle]:
        if not vehicle_ids:
            return {}
        # The ids as one JSON array: one parameter however many (SQLite caps parameters).
        sql = (
            f"SELECT {rows.VEHICLE_COLUMNS} FROM vehicles"
            " WHERE id IN (SELECT value FROM json_each(?)) AND fleet_id = ?"
        )
        ids = orjson.dumps(list(vehicle_ids)).decode()
        found = await self._db.read(fetch_all, sql, (ids, fleet_id))
        return {v.id: v for v in map(rows.to_vehicle, found)}

    async def list(
        self,
        fleet_id: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        vin: str | None = None,
        plate: str | None = None,
        fitted: bool | None = None,
    ) -> Page[Vehicle]:
        limit = page_limit(limit)
        where = ["fleet_id = ?"]
        params: list[Any] = [fleet_id]
        equal_filters(where, params, vin=vin, plate=plate)
        if fitted is not None:
            where.append("device_id IS NOT NULL" if fitted else "device_id IS NULL")
        cond, after_params = after(["id"], id_key(cursor, "vehicle"))
        sql = (
            f"SELECT {rows.VEHICLE_COLUMNS} FROM vehicles WHERE {' AND '.join(where)}{cond}"
            " ORDER BY id LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page([rows.to_vehicle(r) for r in found], limit, "vehicle", lambda v: (v.id,))

    async def update(
        self,
        fleet_id: str,
        vehicle_id: str,
        *,
        vin: str | None = None,
        plate: str | None = None,
        label: str | None = None,
        log: AccessLogEntry | None = None,
    ) -> Vehicle:
        return await self._db.write(_update_vehicle, fleet_id, vehicle_id, vin, plate, label, log)

    async def delete(
        self, fleet_id: str, vehicle_id: str, at_ms: int, *, log: AccessLogEntry | None = None
    ) -> None:
        await self._db.write(_delete_vehicle, fleet_id, vehicle_id, at_ms, log)


class SqliteAccessLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, entry: AccessLogEntry) -> None:
        await self._db.write(insert_chained, "access_log", entry)

    async def chain(
        self, fleet_id: str | None, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AccessLogEntry]:
        return await self._db.read(
            read_chain, "access_log", rows.to_access, fleet_id, after_seq, limit
        )

    async def chain_fleets(self) -> list[str | None]:
        return await self._db.read(chain_fleets, "access_log")

    async def list(
        self,
        fleet_id: str | None,
        *,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> Page[AccessLogEntry]:
        limit = page_limit(limit)
        tag = order_kind("access", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        cond, params, order = keyset(["time_ms", "id"], key, newest_first=newest_first)
        sql = (
            f"SELECT {rows.ACCESS_COLUMNS} FROM access_log"
            f" WHERE fleet_id IS ? AND time_ms >= ? AND time_ms < ?{cond}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [fleet_id, from_ms, to_ms, *params, limit + 1])
        return make_page(
            [rows.to_access(r) for r in found], limit, tag, lambda e: (e.time_ms, e.id)
        )


# --- run on the writer / reader thread ---------------------------------------------------


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    conn.execute(sql, params)


def log_in(conn: sqlite3.Connection, entry: AccessLogEntry | None) -> None:
    """The request's access-log entry, in the write's transaction (VehicleRepo): one commit
    for both, and a write that fails takes its entry with it."""
    if entry is not None:
        insert_chained(conn, "access_log", entry)


def _erase_fleet(conn: sqlite3.Connection, fleet_id: str) -> None:
    require_fleet(conn, fleet_id)
    # One transaction: an erasure is never half done. It holds the write lock for as long as
    # deleting the fleet's telemetry takes, which ingest then waits for; erasures are rare.
    for table in schema.FLEET_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE fleet_id = ?", (fleet_id,))
    conn.execute("DELETE FROM fleets WHERE id = ?", (fleet_id,))


def _insert_key(conn: sqlite3.Connection, key: ApiKey) -> None:
    if key.fleet_id is not None:
        require_fleet(conn, key.fleet_id)
    placeholders = ", ".join("?" * 11)
    conn.execute(
        f"INSERT INTO api_keys ({rows.KEY_COLUMNS}) VALUES ({placeholders})", rows.key_values(key)
    )


def _revoke_key(conn: sqlite3.Connection, fleet_id: str | None, key_id: str, at_ms: int) -> ApiKey:
    # COALESCE keeps the first revocation time: revoking twice changes nothing.
    conn.execute(
        "UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, ?) WHERE id = ? AND fleet_id IS ?",
        (at_ms, key_id, fleet_id),
    )
    sql = f"SELECT {rows.KEY_COLUMNS} FROM api_keys WHERE id = ? AND fleet_id IS ?"
    return get_one(conn, sql, (key_id, fleet_id), rows.to_key, f"key {key_id}")


def get_vehicle(conn: sqlite3.Connection, fleet_id: str, vehicle_id: str) -> Vehicle:
    sql = f"SELECT {rows.VEHICLE_COLUMNS} FROM vehicles WHERE id = ? AND fleet_id = ?"
    return get_one(conn, sql, (vehicle_id, fleet_id), rows.to_vehicle, f"vehicle {vehicle_id}")


# attrgetter builds the row in C (astuple recursed and deep-copied each field, on the writer
# thread with the GIL held).
_vehicle_attrs = attrgetter(*(f.name for f in dataclasses.fields(Vehicle)))


def _insert_vehicle(
    conn: sqlite3.Connection, vehicle: Vehicle, log: AccessLogEntry | None = None
) -> None:
    require_fleet(conn, vehicle.fleet_id)
    conn.execute(
        f"INSERT INTO vehicles ({rows.VEHICLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        _vehicle_attrs(vehicle),
    )
    log_in(conn, log)


def _update_vehicle(
    conn: sqlite3.Connection,
    fleet_id: str,
    vehicle_id: str,
    vin: str | None,
    plate: str | None,
    label: str | None,
    log: AccessLogEntry | None,
) -> Vehicle:
    vehicle = get_vehicle(conn, fleet_id, vehicle_id)
    vehicle = dataclasses.replace(
        vehicle,
        vin=vehicle.vin if vin is None else vin,
        plate=vehicle.plate if plate is None else plate,
        label=vehicle.label if label is None else label,
    )
    conn.execute(
        "UPDATE vehicles SET vin = ?, plate = ?, label = ? WHERE id = ?",
        (vehicle.vin, vehicle.plate, vehicle.label, vehicle_id),
    )
    log_in(conn, log)
    return vehicle


def _delete_vehicle(
    conn: sqlite3.Connection,
    fleet_id: str,
    vehicle_id: str,
    at_ms: int,
    log: AccessLogEntry | None,
) -> None:
    vehicle = get_vehicle(conn, fleet_id, vehicle_id)
    if vehicle.device_id is not None:
        # Ending the fitting must not fail a delete, so a clock behind the fitting start ends it
        # where it began rather than before.
        conn.execute(
            "UPDATE fittings SET to_ms = MAX(from_ms, ?) WHERE vehicle_id = ? AND to_ms IS NULL",
            (at_ms, vehicle_id),
        )
        conn.execute("UPDATE devices SET vehicle_id = NULL WHERE id = ?", (vehicle.device_id,))
    conn.execute("DELETE FROM vehicles WHERE id = ?", (vehicle_id,))
    # The last position is derived state of the vehicle; its positions stay (history).
    conn.execute("DELETE FROM last_positions WHERE subject = ?", (vehicle_subject(vehicle_id),))
    log_in(conn, log)
