"""Privacy mode and the drivers' names on SQLite (tables: privacy_schema.py)."""

from __future__ import annotations

import builtins
import sqlite3
from collections import defaultdict

import orjson

from storage.errors import Conflict, NotFound
from storage.privacy import Driver, FleetPrivacy, ScheduleChange, schedule_data, to_schedule
from storage.sqlite.db import Database
from storage.sqlite.query import fetch_all, fetch_one, require_fleet


class SqlitePrivacy:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_schedule(self, fleet_id: str, change: ScheduleChange) -> None:
        await self._db.write(_set_schedule, fleet_id, change)

    async def add_toggles(self, fleet_id: str, vehicle_id: str, times_ms: list[int]) -> int:
        return await self._db.write(_add_toggles, fleet_id, vehicle_id, times_ms)

    async def set_badge(self, fleet_id: str, badge: int | None) -> None:
        await self._db.write(_set_badge, fleet_id, badge)

    async def badge(self, fleet_id: str) -> int | None:
        row = await self._db.read(
            fetch_one, "SELECT badge FROM privacy_badges WHERE fleet_id = ?", (fleet_id,)
        )
        return None if row is None else int(row[0])

    async def fleet(
        self, fleet_id: str, vehicle_id: str | None = None, *, existing: bool = False
    ) -> FleetPrivacy:
        return await self._db.read(_fleet, fleet_id, vehicle_id, existing)


def _set_schedule(conn: sqlite3.Connection, fleet_id: str, change: ScheduleChange) -> None:
    require_fleet(conn, fleet_id)
    data = schedule_data(change.schedule)
    conn.execute(
        "INSERT OR REPLACE INTO privacy_schedules"
        " (fleet_id, vehicle_id, effective_ms, schedule, set_by) VALUES (?, ?, ?, ?, ?)",
        (
            fleet_id,
            change.vehicle_id,
            change.effective_ms,
            None if data is None else orjson.dumps(data).decode(),
            change.set_by,
        ),
    )


def _add_toggles(
    conn: sqlite3.Connection, fleet_id: str, vehicle_id: str, times_ms: list[int]
) -> int:
    # Idempotent: the same presentation (a resent event) is one toggle.
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO privacy_toggles (fleet_id, vehicle_id, time_ms) VALUES (?, ?, ?)",
        [(fleet_id, vehicle_id, t) for t in times_ms],
    )
    return conn.total_changes - before


def _set_badge(conn: sqlite3.Connection, fleet_id: str, badge: int | None) -> None:
    require_fleet(conn, fleet_id)
    if badge is None:
        conn.execute("DELETE FROM privacy_badges WHERE fleet_id = ?", (fleet_id,))
    else:
        conn.execute(
            "INSERT OR REPLACE INTO privacy_badges (fleet_id, badge) VALUES (?, ?)",
            (fleet_id, badge),
        )


# A semi-join on the vehicles' (fleet_id, id) index: one lookup per fact, no vehicle row read.
_EXISTING = " AND EXISTS (SELECT 1 FROM vehicles AS v WHERE v.fleet_id = ? AND v.id = vehicle_id)"


def _fleet(
    conn: sqlite3.Connection, fleet_id: str, vehicle_id: str | None, existing: bool
) -> FleetPrivacy:
    cond, params = (
        ("", (fleet_id,))
        if vehicle_id is None
        else (
            " AND vehicle_id = ?",
            (fleet_id, vehicle_id),
        )
    )
    if existing:
        cond, params = cond + _EXISTING, (*params, fleet_id)
    changes: dict[str, list[ScheduleChange]] = defaultdict(list)
    for vid, effective_ms, schedule, set_by in fetch_all(
        conn,
        "SELECT vehicle_id, effective_ms, schedule, set_by FROM privacy_schedules"
        f" WHERE fleet_id = ?{cond} ORDER BY vehicle_id, effective_ms",
        params,
    ):
        data = None if schedule is None else orjson.loads(schedule)
        changes[vid].append(ScheduleChange(vid, effective_ms, to_schedule(data), set_by))
    toggles: dict[str, list[int]] = defaultdict(list)
    for vid, time_ms in fetch_all(
        conn,
        f"SELECT vehicle_id, time_ms FROM privacy_toggles WHERE fleet_id = ?{cond}"
        " ORDER BY vehicle_id, time_ms",
        params,
    ):
        toggles[vid].append(time_ms)
    badge = fetch_one(conn, "SELECT badge FROM privacy_badges WHERE fleet_id = ?", (fleet_id,))
    return FleetPrivacy(
        fleet_id,
        changes={k: tuple(v) for k, v in changes.items()},
        toggles={k: tuple(v) for k, v in toggles.items()},
        badge=None if badge is None else int(badge[0]),
    )


class SqliteDrivers:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, driver: Driver) -> Driver:
        return await self._db.write(_create_driver, driver)

    async def list(self, fleet_id: str) -> builtins.list[Driver]:
        rows = await self._db.read(
            fetch_all,
            "SELECT id, fleet_id, badge, name, created_ms FROM drivers WHERE fleet_id = ?"
            " ORDER BY name, id",
            (fleet_id,),
        )
        return [Driver(*row) for row in rows]

    async def delete(self, fleet_id: str, driver_id: str) -> None:
        await self._db.write(_delete_driver, fleet_id, driver_id)

    async def delete_badge(self, fleet_id: str, badge: int) -> int:
        return await self._db.write(_delete_badge, fleet_id, badge)


def _create_driver(conn: sqlite3.Connection, driver: Driver) -> Driver:
    require_fleet(conn, driver.fleet_id)
    try:
        conn.execute(
            "INSERT INTO drivers (id, fleet_id, badge, name, created_ms) VALUES (?, ?, ?, ?, ?)",
            (driver.id, driver.fleet_id, driver.badge, driver.name, driver.created_ms),
        )
    except sqlite3.IntegrityError:
        raise Conflict("a driver with this badge exists in the fleet") from None
    return driver


def _delete_driver(conn: sqlite3.Connection, fleet_id: str, driver_id: str) -> None:
    cur = conn.execute("DELETE FROM drivers WHERE fleet_id = ? AND id = ?", (fleet_id, driver_id))
    if cur.rowcount == 0:
        raise NotFound(f"driver {driver_id}")


def _delete_badge(conn: sqlite3.Connection, fleet_id: str, badge: int) -> int:
    cur = conn.execute("DELETE FROM drivers WHERE fleet_id = ? AND badge = ?", (fleet_id, badge))
    return cur.rowcount
