"""Boxes, their fitting history and connection state on SQLite."""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import sqlite3
from collections.abc import Callable
from typing import Any

from storage.errors import Conflict, NotFound
from storage.models import (
    AccessLogEntry,
    Device,
    DeviceConnection,
    DeviceModel,
    DeviceProtocol,
    DeviceStatus,
    Fitting,
    Page,
    naming_box,
    new_id,
    now_ms,
)
from storage.pagination import id_key, make_page, page_limit
from storage.secrets import SecretBox, device_context
from storage.sqlite import rows
from storage.sqlite.db import Database
from storage.sqlite.query import (
    after,
    equal_filters,
    fetch_all,
    fetch_one,
    get_one,
    require_fleet,
)
from storage.sqlite.resources import get_vehicle, log_in


class SqliteDevices:
    """The LOGIN secret is sealed in the row (storage/secrets.py) and opened here, on read."""

    def __init__(self, db: Database, secrets: SecretBox) -> None:
        self._db = db
        self._secrets = secrets

    def _to_device(self, row: rows.Row) -> Device:
        device = rows.to_device(row)
        return dataclasses.replace(
            device, secret=self._secrets.open(device.secret, device_context(device.id))
        )

    async def create(
        self,
        fleet_id: str,
        *,
        imei: str,
        model: DeviceModel,
        secret: str,
        protocol: DeviceProtocol = DeviceProtocol.GP8,
        log: AccessLogEntry | None = None,
    ) -> Device:
        device = Device(
            id=new_id("dev"),
            fleet_id=fleet_id,
            imei=imei,
            model=model,
            secret=secret,
            created_ms=now_ms(),
            status=DeviceStatus.ACTIVE,
            protocol=protocol,
        )
        sealed = self._secrets.seal(device.secret, device_context(device.id))
        if log is not None:
            log = dataclasses.replace(log, resource_id=device.id)
        await self._db.write(_insert_device, dataclasses.replace(device, secret=sealed), log)
        return device

    async def get(self, fleet_id: str, device_id: str) -> Device:
        sql = f"SELECT {rows.DEVICE_COLUMNS} FROM devices WHERE id = ? AND fleet_id = ?"
        return await self._db.read(
            get_one, sql, (device_id, fleet_id), self._to_device, f"device {device_id}"
        )

    async def get_by_imei(self, imei: str) -> Device | None:
        sql = f"SELECT {rows.DEVICE_COLUMNS} FROM devices WHERE imei = ?"
        found = await self._db.read(fetch_all, sql, (imei,))
        return self._to_device(found[0]) if found else None

    async def list(
        self,
        fleet_id: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        imei: str | None = None,
        model: DeviceModel | None = None,
        fitted: bool | None = None,
        protocol: DeviceProtocol | None = None,
    ) -> Page[Device]:
        limit = page_limit(limit)
        where = ["fleet_id = ?"]
        params: list[Any] = [fleet_id]
        equal_filters(where, params, imei=imei, model=model, protocol=protocol)
        if fitted is not None:
            where.append("vehicle_id IS NOT NULL" if fitted else "vehicle_id IS NULL")
        cond, after_params = after(["id"], id_key(cursor, "device"))
        sql = (
            f"SELECT {rows.DEVICE_COLUMNS} FROM devices WHERE {' AND '.join(where)}{cond}"
            " ORDER BY id LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page([self._to_device(r) for r in found], limit, "device", lambda d: (d.id,))

    async def fit(
        self,
        fleet_id: str,
        vehicle_id: str,
        imei: str,
        at_ms: int,
        *,
        log: AccessLogEntry | None = None,
    ) -> Fitting:
        # A partial, not a closure: it pickles, for the writer process.
        fit = functools.partial(
            _fit, fleet_id=fleet_id, vehicle_id=vehicle_id, imei=imei, at_ms=at_ms
        )
        return await self._db.write(_logged, log, fit)

    async def unfit(
        self, fleet_id: str, vehicle_id: str, at_ms: int, *, log: AccessLogEntry | None = None
    ) -> Fitting:
        unfit = functools.partial(_unfit, fleet_id=fleet_id, vehicle_id=vehicle_id, at_ms=at_ms)
        return await self._db.write(_logged, log, unfit)

    # builtins.list: inside this class body "list" names the method above.
    async def fittings(self, device_id: str) -> builtins.list[Fitting]:
        # Fittings that begin in the same millisecond: the ended one came first (as on Mongo),
        # then insertion order.
        sql = (
            f"SELECT {rows.FITTING_COLUMNS} FROM fittings WHERE device_id = ?"
            " ORDER BY from_ms, to_ms IS NULL, to_ms, seq"
        )
        return [rows.to_fitting(r) for r in await self._db.read(fetch_all, sql, (device_id,))]

    async def set_connection(self, connection: DeviceConnection) -> None:
        await self.set_connections([connection])

    async def set_connections(self, connections: builtins.list[DeviceConnection]) -> None:
        if connections:
            await self._db.write(_set_connections, connections)

    async def touch_connections(
        self, gateway_id: str, device_ids: builtins.list[str], seen_ms: int
    ) -> dict[str, str]:
        if not device_ids:
            return {}
        return await self._db.write(_touch_connections, gateway_id, device_ids, seen_ms)

    async def connection(self, device_id: str) -> DeviceConnection | None:
        sql = f"SELECT {rows.CONNECTION_COLUMNS} FROM connections WHERE device_id = ?"
        found = await self._db.read(fetch_all, sql, (device_id,))
        return rows.to_connection(found[0]) if found else None


# --- run on the writer thread ------------------------------------------------------------


def _insert_device(
    conn: sqlite3.Connection, device: Device, log: AccessLogEntry | None = None
) -> None:
    require_fleet(conn, device.fleet_id)
    values = dataclasses.astuple(device)
    conn.execute(
        f"INSERT INTO devices ({rows.DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        tuple(
            v.value if isinstance(v, DeviceModel | DeviceStatus | DeviceProtocol) else v
            for v in values
        ),
    )
    log_in(conn, log)


def _logged(
    conn: sqlite3.Connection,
    log: AccessLogEntry | None,
    change: Callable[[sqlite3.Connection], Fitting],
) -> Fitting:
    """A fitting's ``change`` and its access-log entry, which names the box, in one transaction."""
    fitting = change(conn)
    if log is not None:
        log_in(conn, naming_box(log, fitting))
    return fitting


def _open_fitting(conn: sqlite3.Connection, column: str, value: str) -> Fitting | None:
    row = fetch_one(
        conn,
        f"SELECT {rows.FITTING_COLUMNS} FROM fittings WHERE {column} = ? AND to_ms IS NULL",
        (value,),
    )
    return None if row is None else rows.to_fitting(row)


def _end_fitting(conn: sqlite3.Connection, fitting: Fitting, at_ms: int) -> Fitting:
    if at_ms < fitting.from_ms:
        # Ending before it began would make the history overlap itself.
        raise Conflict(f"fitting of {fitting.device_id} began at {fitting.from_ms} > {at_ms}")
    conn.execute(
        "UPDATE fittings SET to_ms = ? WHERE device_id = ? AND vehicle_id = ? AND to_ms IS NULL",
        (at_ms, fitting.device_id, fitting.vehicle_id),
    )
    conn.execute("UPDATE vehicles SET device_id = NULL WHERE id = ?", (fitting.vehicle_id,))
    conn.execute("UPDATE devices SET vehicle_id = NULL WHERE id = ?", (fitting.device_id,))
    return dataclasses.replace(fitting, to_ms=at_ms)


def _fit(
    conn: sqlite3.Connection, fleet_id: str, vehicle_id: str, imei: str, at_ms: int
) -> Fitting:
    get_vehicle(conn, fleet_id, vehicle_id)
    row = fetch_one(
        conn, "SELECT id FROM devices WHERE imei = ? AND fleet_id = ?", (imei, fleet_id)
    )
    if row is None:
        raise NotFound(f"device with IMEI {imei}")
    device_id: str = row[0]
    of_device = _open_fitting(conn, "device_id", device_id)
    if of_device is not None and of_device.vehicle_id == vehicle_id:
        return of_device  # already fitted there: keep the history as it is
    of_vehicle = _open_fitting(conn, "vehicle_id", vehicle_id)
    # The box leaves its old vehicle and the vehicle loses its old box, at the same instant.
    for current in (of_device, of_vehicle):
        if current is not None:
            _end_fitting(conn, current, at_ms)
    fitting = Fitting(fleet_id=fleet_id, device_id=device_id, vehicle_id=vehicle_id, from_ms=at_ms)
    conn.execute(
        f"INSERT INTO fittings ({rows.FITTING_COLUMNS}) VALUES (?, ?, ?, ?, NULL)",
        (fleet_id, device_id, vehicle_id, at_ms),
    )
    conn.execute("UPDATE vehicles SET device_id = ? WHERE id = ?", (device_id, vehicle_id))
    conn.execute("UPDATE devices SET vehicle_id = ? WHERE id = ?", (vehicle_id, device_id))
    return fitting


def _unfit(conn: sqlite3.Connection, fleet_id: str, vehicle_id: str, at_ms: int) -> Fitting:
    get_vehicle(conn, fleet_id, vehicle_id)
    current = _open_fitting(conn, "vehicle_id", vehicle_id)
    if current is None:
        raise NotFound(f"no box fitted to vehicle {vehicle_id}")
    return _end_fitting(conn, current, at_ms)


# The fleet comes from the box, so an erasure finds its connection rows. A box that no longer
# exists (deleted while connected) has nothing to attach the state to: no row, and no error to
# fail the gateway's disconnect path with.
# "Newest observation wins" lives here, in the statement, like the last-position upsert: several
# processes write this row, and only the database sees all their writes in order.
_UPSERT_CONNECTION = (
    "INSERT INTO connections (device_id, fleet_id, online, transport, gateway_id, since_ms,"
    " remote, version, seen_ms) SELECT id, fleet_id, ?, ?, ?, ?, ?, ?, ? FROM devices"
    " WHERE id = ?"
    " ON CONFLICT (device_id) DO UPDATE SET online = excluded.online,"
    " transport = excluded.transport, gateway_id = excluded.gateway_id,"
    " since_ms = excluded.since_ms, remote = excluded.remote, version = excluded.version,"
    " seen_ms = excluded.seen_ms"
    " WHERE excluded.version >= connections.version"
)


def _connection_params(c: DeviceConnection) -> tuple[object, ...]:
    return (
        c.online,
        None if c.transport is None else c.transport.value,
        c.gateway_id,
        c.since_ms,
        c.remote,
        c.version,
        c.seen_ms,
        c.device_id,
    )


def _set_connections(conn: sqlite3.Connection, states: list[DeviceConnection]) -> None:
    # The same statement per state: a stale one in the batch loses to the stored row alone.
    conn.executemany(_UPSERT_CONNECTION, [_connection_params(c) for c in states])


def _touch_connections(
    conn: sqlite3.Connection, gateway_id: str, device_ids: list[str], seen_ms: int
) -> dict[str, str]:
    # One statement each, the ids as one JSON array: a gateway touches all its live sessions
    # at once, and for 10,000 of them a statement per id held the writer thread (and the GIL,
    # which the event loop needs) about twice as long: 46 ms against 19 ms, measured.
    ids = json.dumps(device_ids)
    # Only rows this gateway still holds online: a row another process took over stays its.
    conn.execute(
        "UPDATE connections SET seen_ms = ? WHERE gateway_id = ? AND online"
        " AND device_id IN (SELECT value FROM json_each(?))",
        (seen_ms, gateway_id, ids),
    )
    found = conn.execute(
        "SELECT device_id, gateway_id FROM connections"
        " WHERE device_id IN (SELECT value FROM json_each(?)) AND online"
        " AND gateway_id IS NOT NULL AND gateway_id != ?",
        (ids, gateway_id),
    ).fetchall()
    return {device_id: other for device_id, other in found}
