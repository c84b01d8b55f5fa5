"""Retention, exports, erasure and offboarding on SQLite (tables: retention_schema.py).

Big deletes go in chunks of `CHUNK` rows, one write transaction each: the writer thread is
shared with ingest, and a purge of millions of positions in one transaction would hold every
box's batch (and its ACK) until it committed. A vehicle under a legal hold is left out of
every retention delete by `HELD_VEHICLES_SQL`, the same condition POST /v1/data/purge uses.
"""

from __future__ import annotations

import builtins
import dataclasses
import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson

from storage.errors import Conflict, NotFound
from storage.latest import subject_key
from storage.models import LIVE_COMMAND_STATES, Event, Page, Position
from storage.pagination import decode_cursor, make_page, page_limit
from storage.retention import (
    DataKind,
    ExportJob,
    ExportStatus,
    FleetRetention,
    Offboarding,
    PurgeRun,
    default_retention,
    driver_key,
    job_data,
    offboarding_data,
    retention_data,
    to_job,
    to_offboarding,
    to_retention,
)
from storage.sqlite import rows, schema
from storage.sqlite.db import Database
from storage.sqlite.query import after, fetch_all, fetch_one, require_fleet
from storage.sqlite.tracking_schema import HELD_VEHICLES_SQL

# Rows per delete transaction: a few milliseconds of the writer each.
CHUNK = 5_000
# Not held: parameters (fleet_id, now).
_FREE = f"(vehicle_id IS NULL OR vehicle_id NOT IN ({HELD_VEHICLES_SQL}))"
_LIVE = ", ".join(f"'{state}'" for state in sorted(LIVE_COMMAND_STATES))
# The two big tables, by their primary keys (WITHOUT ROWID: no rowid to delete by).
_KEYS = {"positions": "time_ms, device_id", "events": "device_id, time_ms, code"}


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


class SqliteRetention:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, fleet_id: str) -> FleetRetention:
        return await self._db.read(_get_retention, fleet_id)

    async def put(
        self, fleet_id: str, days: Mapping[DataKind, int], *, at_ms: int, by: str | None
    ) -> FleetRetention:
        return await self._db.write(_put_retention, fleet_id, dict(days), at_ms, by)

    async def purge(
        self, fleet_id: str, cutoffs: Mapping[DataKind, int], *, at_ms: int
    ) -> dict[str, int]:
        deleted: dict[str, int] = {}
        for table, kind in (("positions", DataKind.POSITIONS), ("events", DataKind.EVENTS)):
            deleted[table] = 0
            while True:
                n = await self._db.write(_delete_chunk, table, fleet_id, cutoffs[kind], at_ms)
                deleted[table] += n
                if n < CHUNK:
                    break
        deleted.update(await self._db.write(_purge_small, fleet_id, dict(cutoffs), at_ms))
        return deleted

    async def record_run(self, fleet_id: str, run: PurgeRun) -> None:
        await self._db.write(_record_run, fleet_id, run)

    async def start_offboarding(self, offboarding: Offboarding) -> Offboarding:
        return await self._db.write(_start_offboarding, offboarding)

    async def offboarding(self, fleet_id: str) -> Offboarding | None:
        found = await self._db.read(
            fetch_one, "SELECT data FROM offboardings WHERE fleet_id = ?", (fleet_id,)
        )
        return None if found is None else to_offboarding(orjson.loads(found[0]))

    async def due_offboardings(self, now_ms: int) -> builtins.list[Offboarding]:
        found = await self._db.read(
            fetch_all,
            "SELECT data FROM offboardings WHERE erased_ms IS NULL AND ends_ms <= ?"
            " ORDER BY ends_ms",
            (now_ms,),
        )
        return [to_offboarding(orjson.loads(r[0])) for r in found]

    async def erase_offboarded(self, fleet_id: str, at_ms: int) -> Offboarding:
        return await self._db.write(_erase_offboarded, fleet_id, at_ms)


class SqliteExports:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, job: ExportJob) -> ExportJob:
        await self._db.write(_insert_job, job)
        return job

    async def get(self, fleet_id: str, export_id: str) -> ExportJob:
        found = await self._db.read(
            fetch_one,
            "SELECT data FROM exports WHERE id = ? AND fleet_id = ?",
            (export_id, fleet_id),
        )
        if found is None:
            raise NotFound(f"export {export_id}")
        return to_job(orjson.loads(found[0]))

    async def claim(self, now_ms: int, lease_until_ms: int) -> ExportJob | None:
        return await self._db.write(_claim_job, now_ms, lease_until_ms)

    async def renew(self, export_id: str, lease_until_ms: int) -> bool:
        return await self._db.write(_renew_job, export_id, lease_until_ms)

    async def finish(self, job: ExportJob) -> bool:
        return await self._db.write(_finish_job, job)

    async def fail_stale(self, now_ms: int) -> int:
        return await self._db.write(_fail_stale, now_ms)

    async def expire(self, fleet_id: str, before_ms: int) -> builtins.list[ExportJob]:
        return await self._db.write(_expire_jobs, fleet_id, before_ms)

    async def driver_positions(
        self,
        fleet_id: str,
        badge: int,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Position]:
        limit = page_limit(limit)
        key = None if cursor is None else decode_cursor(cursor, "position", (int, str))
        cond, after_params = after(["time_ms", "device_id"], key)
        # No index on the badge (each one costs ingest throughput): the fleet's positions of the
        # period are scanned in key order. An export or erasure is a rare request.
        sql = (
            f"SELECT {rows.POSITION_COLUMNS} FROM positions WHERE fleet_id = ?"
            f" AND driver_badge = ? AND time_ms >= ? AND time_ms < ?{cond}"
            " ORDER BY time_ms, device_id LIMIT ?"
        )
        params = [fleet_id, driver_key(badge), from_ms, to_ms, *after_params, limit + 1]
        found = await self._db.read(fetch_all, sql, params)
        return make_page(
            [rows.to_position(r) for r in found],
            limit,
            "position",
            lambda p: (p.time_ms, p.device_id),
        )

    async def driver_events(
        self,
        fleet_id: str,
        badge: int,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Event]:
        limit = page_limit(limit)
        key = None if cursor is None else decode_cursor(cursor, "event", (int, str, str))
        cond, after_params = after(["time_ms", "device_id", "code"], key)
        sql = (
            f"SELECT {rows.EVENT_COLUMNS} FROM events WHERE fleet_id = ?"
            " AND json_extract(position, '$.driver_badge') = ? AND time_ms >= ? AND time_ms < ?"
            f"{cond} ORDER BY time_ms, device_id, code LIMIT ?"
        )
        params = [fleet_id, driver_key(badge), from_ms, to_ms, *after_params, limit + 1]
        found = await self._db.read(fetch_all, sql, params)
        return make_page(
            [rows.to_event(r) for r in found],
            limit,
            "event",
            lambda e: (e.time_ms, e.device_id, e.code),
        )


class SqliteErasure:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def erase_vehicle(self, fleet_id: str, vehicle_id: str, at_ms: int) -> dict[str, int]:
        return await self._db.write(_erase_vehicle, fleet_id, vehicle_id, at_ms)

    async def erase_driver(self, fleet_id: str, badge: int, at_ms: int) -> dict[str, int]:
        return await self._db.write(_erase_driver, fleet_id, driver_key(badge), at_ms)

    async def move_fitting(
        self, fleet_id: str, device_id: str, *, from_ms: int, to_ms: int, vehicle_id: str
    ) -> dict[str, int]:
        return await self._db.write(_move_fitting, fleet_id, device_id, from_ms, to_ms, vehicle_id)


# --- run on the writer (or reader) thread ---------------------------------------------------


def _get_retention(conn: sqlite3.Connection, fleet_id: str) -> FleetRetention:
    require_fleet(conn, fleet_id)
    found = fetch_one(conn, "SELECT data FROM retention WHERE fleet_id = ?", (fleet_id,))
    return (
        default_retention(fleet_id)
        if found is None
        else to_retention(fleet_id, orjson.loads(found[0]))
    )


def _save_retention(conn: sqlite3.Connection, r: FleetRetention) -> None:
    conn.execute(
        "INSERT INTO retention (fleet_id, data) VALUES (?, ?)"
        " ON CONFLICT (fleet_id) DO UPDATE SET data = excluded.data",
        (r.fleet_id, _json(retention_data(r))),
    )


def _put_retention(
    conn: sqlite3.Connection, fleet_id: str, days: dict[DataKind, int], at_ms: int, by: str | None
) -> FleetRetention:
    current = _get_retention(conn, fleet_id)
    changed = FleetRetention(
        fleet_id=fleet_id,
        days={**current.days, **days},
        updated_ms=at_ms,
        updated_by=by,
        last_run=current.last_run,
    )
    _save_retention(conn, changed)
    return changed


def _record_run(conn: sqlite3.Connection, fleet_id: str, run: PurgeRun) -> None:
    if fetch_one(conn, "SELECT 1 FROM fleets WHERE id = ?", (fleet_id,)) is None:
        return  # erased meanwhile: nothing of it is kept
    current = _get_retention(conn, fleet_id)
    _save_retention(
        conn,
        FleetRetention(
            fleet_id, current.days, current.updated_ms, current.updated_by, last_run=run
        ),
    )


def _delete_chunk(
    conn: sqlite3.Connection, table: str, fleet_id: str, before_ms: int, now: int
) -> int:
    keys = _KEYS[table]
    sql = (
        f"DELETE FROM {table} WHERE ({keys}) IN (SELECT {keys} FROM {table}"
        f" WHERE fleet_id = ? AND time_ms < ? AND {_FREE} LIMIT {CHUNK})"
    )
    return conn.execute(sql, (fleet_id, before_ms, fleet_id, now)).rowcount


def _purge_small(
    conn: sqlite3.Connection, fleet_id: str, cutoffs: dict[DataKind, int], now: int
) -> dict[str, int]:
    def delete(table: str, where: str, *params: object) -> int:
        sql = f"DELETE FROM {table} WHERE fleet_id = ? AND {where}"
        return int(conn.execute(sql, (fleet_id, *params)).rowcount)

    free = (fleet_id, now)
    positions = cutoffs[DataKind.POSITIONS]
    alerts = cutoffs[DataKind.ALERTS]
    # Holds whose case was closed and whose hold ended before the alerts' period: the case goes.
    ended = (
        "SELECT case_id FROM legal_holds WHERE fleet_id = ? AND until_ms IS NOT NULL"
        " AND until_ms < ?"
    )
    return {
        # Retention removes a last position too once it is past the period (docs/gdpr.md): the
        # positions it refers to are gone.
        "last_positions": delete("last_positions", f"time_ms < ? AND {_FREE}", positions, *free),
        "geofence_events": delete("geofence_events", f"time_ms < ? AND {_FREE}", positions, *free),
        "alerts": delete(
            "alerts", f"raised_ms < ? AND cleared_ms IS NOT NULL AND {_FREE}", alerts, *free
        ),
        "theft_cases": delete(
            "theft_cases", f"status = 'closed' AND id IN ({ended})", fleet_id, alerts
        ),
        "legal_holds": delete("legal_holds", "until_ms IS NOT NULL AND until_ms < ?", alerts),
        "commands": delete(
            "commands",
            f"created_ms < ? AND status NOT IN ({_LIVE}) AND {_FREE}",
            cutoffs[DataKind.COMMANDS],
            *free,
        ),
        # The command audit is an accountability log, like the access log: the same period.
        "command_audit": _trim_chain(conn, "command_audit", fleet_id, cutoffs[DataKind.ACCESS_LOG]),
        "access_log": _trim_chain(conn, "access_log", fleet_id, cutoffs[DataKind.ACCESS_LOG]),
    }


def _trim_chain(conn: sqlite3.Connection, table: str, fleet_id: str, before_ms: int) -> int:
    """Delete a hash-chained log's oldest entries (storage/audit_chain.py): a prefix of the
    chain in ``seq`` order, never a link in the middle (verify-audit would see a gap), and
    never its head, which the next entry links to."""
    sql = (
        f"DELETE FROM {table} WHERE fleet_id = ? AND time_ms < ? AND seq < COALESCE("
        f"(SELECT MIN(seq) FROM {table} WHERE fleet_id = ? AND time_ms >= ?),"
        f" (SELECT MAX(seq) FROM {table} WHERE fleet_id = ?))"
    )
    return int(conn.execute(sql, (fleet_id, before_ms, fleet_id, before_ms, fleet_id)).rowcount)


def _start_offboarding(conn: sqlite3.Connection, o: Offboarding) -> Offboarding:
    require_fleet(conn, o.fleet_id)
    if fetch_one(conn, "SELECT 1 FROM offboardings WHERE fleet_id = ?", (o.fleet_id,)):
        raise Conflict(f"fleet {o.fleet_id} is offboarding already")
    conn.execute(
        "INSERT INTO offboardings (fleet_id, ends_ms, erased_ms, data) VALUES (?, ?, NULL, ?)",
        (o.fleet_id, o.ends_ms, _json(offboarding_data(o))),
    )
    return o


def _erase_offboarded(conn: sqlite3.Connection, fleet_id: str, at_ms: int) -> Offboarding:
    found = fetch_one(conn, "SELECT data FROM offboardings WHERE fleet_id = ?", (fleet_id,))
    if found is None:
        raise NotFound(f"offboarding of fleet {fleet_id}")
    current = to_offboarding(orjson.loads(found[0]))
    if current.erased_ms is not None:
        return current
    # The same tables as FleetRepo.delete, counted: one transaction, so the report is exact.
    deleted = {
        table: conn.execute(f"DELETE FROM {table} WHERE fleet_id = ?", (fleet_id,)).rowcount
        for table in schema.FLEET_TABLES
    }
    deleted["fleets"] = conn.execute("DELETE FROM fleets WHERE id = ?", (fleet_id,)).rowcount
    done = Offboarding(
        fleet_id=current.fleet_id,
        fleet_name=current.fleet_name,
        started_ms=current.started_ms,
        ends_ms=current.ends_ms,
        started_by=current.started_by,
        erased_ms=at_ms,
        deleted={table: n for table, n in deleted.items() if n},
    )
    conn.execute(
        "UPDATE offboardings SET erased_ms = ?, data = ? WHERE fleet_id = ?",
        (at_ms, _json(offboarding_data(done)), fleet_id),
    )
    return done


def _insert_job(conn: sqlite3.Connection, job: ExportJob) -> None:
    require_fleet(conn, job.fleet_id)
    conn.execute(
        "INSERT INTO exports (id, fleet_id, status, created_ms, lease_ms, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (job.id, job.fleet_id, job.status, job.created_ms, job.lease_ms, _json(job_data(job))),
    )


def _save_job(conn: sqlite3.Connection, job: ExportJob, expected: ExportStatus) -> bool:
    cursor = conn.execute(
        "UPDATE exports SET status = ?, lease_ms = ?, data = ? WHERE id = ? AND status = ?",
        (job.status, job.lease_ms, _json(job_data(job)), job.id, expected),
    )
    return cursor.rowcount == 1


def _claim_job(conn: sqlite3.Connection, now_ms: int, lease_until_ms: int) -> ExportJob | None:
    found = fetch_one(
        conn,
        "SELECT data FROM exports WHERE status = ? ORDER BY created_ms, id LIMIT 1",
        (ExportStatus.PENDING,),
    )
    if found is None:
        return None
    job = to_job(orjson.loads(found[0]))
    claimed = _replace(job, status=ExportStatus.RUNNING, lease_ms=lease_until_ms, updated_ms=now_ms)
    # One writer thread per file and BEGIN IMMEDIATE: the status check is all another process
    # could race with, and it is in the UPDATE.
    return claimed if _save_job(conn, claimed, ExportStatus.PENDING) else None


def _renew_job(conn: sqlite3.Connection, export_id: str, lease_until_ms: int) -> bool:
    found = fetch_one(conn, "SELECT data FROM exports WHERE id = ?", (export_id,))
    if found is None:
        return False
    job = to_job(orjson.loads(found[0]))
    return _save_job(conn, _replace(job, lease_ms=lease_until_ms), ExportStatus.RUNNING)


def _finish_job(conn: sqlite3.Connection, job: ExportJob) -> bool:
    return _save_job(conn, _replace(job, lease_ms=None), ExportStatus.RUNNING)


def _fail_stale(conn: sqlite3.Connection, now_ms: int) -> int:
    found = fetch_all(
        conn,
        "SELECT data FROM exports WHERE status = ? AND lease_ms < ?",
        (ExportStatus.RUNNING, now_ms),
    )
    failed = 0
    for (data,) in found:
        job = to_job(orjson.loads(data))
        stale = _replace(
            job,
            status=ExportStatus.FAILED,
            lease_ms=None,
            updated_ms=now_ms,
            error="interrupted: the process running it stopped; ask for the export again",
        )
        failed += _save_job(conn, stale, ExportStatus.RUNNING)
    return failed


def _expire_jobs(conn: sqlite3.Connection, fleet_id: str, before_ms: int) -> list[ExportJob]:
    found = fetch_all(
        conn,
        "SELECT data FROM exports WHERE fleet_id = ? AND created_ms < ? AND status != ?",
        (fleet_id, before_ms, ExportStatus.RUNNING),
    )
    jobs = [to_job(orjson.loads(r[0])) for r in found]
    conn.executemany("DELETE FROM exports WHERE id = ?", [(j.id,) for j in jobs])
    return jobs


def _replace(job: ExportJob, **changes: Any) -> ExportJob:
    return dataclasses.replace(job, **changes)


def _holds(conn: sqlite3.Connection, fleet_id: str, vehicle_id: str, now: int) -> list[Any]:
    return fetch_all(
        conn,
        "SELECT case_id, until_ms FROM legal_holds WHERE fleet_id = ? AND vehicle_id = ?"
        " AND (until_ms IS NULL OR until_ms > ?) ORDER BY from_ms",
        (fleet_id, vehicle_id, now),
    )


def _erase_vehicle(
    conn: sqlite3.Connection, fleet_id: str, vehicle_id: str, now: int
) -> dict[str, int]:
    if (
        fetch_one(
            conn, "SELECT 1 FROM vehicles WHERE id = ? AND fleet_id = ?", (vehicle_id, fleet_id)
        )
        is None
    ):
        raise NotFound(f"vehicle {vehicle_id}")
    held = _holds(conn, fleet_id, vehicle_id, now)
    if held:
        case_id, until_ms = held[0]
        until = "while the case is open" if until_ms is None else f"until {until_ms} (ms)"
        raise Conflict(
            f"vehicle {vehicle_id} is under a legal hold (theft case {case_id}) {until}:"
            " its data cannot be erased before the hold ends"
        )
    # The command audit stays: it is the record of who ordered what (accountability).
    tables = (
        "positions",
        "events",
        "last_positions",
        "geofence_events",
        "geofence_states",
        "alerts",
        "commands",
        "vehicle_lock_states",
        "guard_states",
    )
    return {
        table: conn.execute(
            f"DELETE FROM {table} WHERE fleet_id = ? AND vehicle_id = ?", (fleet_id, vehicle_id)
        ).rowcount
        for table in tables
    }


def _subjects(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> set[tuple[Any, str]]:
    return {(vehicle_id, device_id) for vehicle_id, device_id in conn.execute(sql, params)}


def _recompute_last(
    conn: sqlite3.Connection, fleet_id: str, subjects: set[tuple[str | None, str]]
) -> None:
    """Point each subject's last position at its newest valid fix still stored (or drop it):
    erasure and rectification remove or move the fix it referred to."""
    for vehicle_id, device_id in subjects:
        if vehicle_id is not None:
            where, params = "vehicle_id = ?", (vehicle_id,)
        else:
            where, params = "vehicle_id IS NULL AND device_id = ?", (device_id,)
        newest = fetch_one(
            conn,
            f"SELECT device_id, time_ms, lat, lon FROM positions WHERE fleet_id = ? AND {where}"
            " AND fix_valid = 1 ORDER BY time_ms DESC LIMIT 1",
            (fleet_id, *params),
        )
        subject = subject_key(vehicle_id, device_id)
        if newest is None:
            conn.execute("DELETE FROM last_positions WHERE subject = ?", (subject,))
            continue
        conn.execute(
            "INSERT INTO last_positions (subject, fleet_id, vehicle_id, device_id, time_ms, lat,"
            " lon) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subject) DO UPDATE SET"
            " device_id = excluded.device_id, time_ms = excluded.time_ms, lat = excluded.lat,"
            " lon = excluded.lon",
            (subject, fleet_id, vehicle_id, *newest),
        )


def _erase_driver(conn: sqlite3.Connection, fleet_id: str, badge: int, now: int) -> dict[str, int]:
    where = f"fleet_id = ? AND driver_badge = ? AND {_FREE}"
    params = (fleet_id, badge, fleet_id, now)
    touched = _subjects(
        conn, f"SELECT DISTINCT vehicle_id, device_id FROM positions WHERE {where}", params
    )
    deleted = {
        "positions": conn.execute(f"DELETE FROM positions WHERE {where}", params).rowcount,
        "events": conn.execute(
            "DELETE FROM events WHERE fleet_id = ? AND json_extract(position, '$.driver_badge') = ?"
            f" AND {_FREE}",
            params,
        ).rowcount,
    }
    _recompute_last(conn, fleet_id, touched)
    return deleted


def _move_fitting(
    conn: sqlite3.Connection,
    fleet_id: str,
    device_id: str,
    from_ms: int,
    to_ms: int,
    vehicle_id: str,
) -> dict[str, int]:
    for table, record_id in (("devices", device_id), ("vehicles", vehicle_id)):
        if (
            fetch_one(
                conn, f"SELECT 1 FROM {table} WHERE id = ? AND fleet_id = ?", (record_id, fleet_id)
            )
            is None
        ):
            raise NotFound(f"{table[:-1]} {record_id}")
    where = "fleet_id = ? AND device_id = ? AND time_ms >= ? AND time_ms < ?"
    params = (fleet_id, device_id, from_ms, to_ms)
    touched = _subjects(
        conn, f"SELECT DISTINCT vehicle_id, device_id FROM positions WHERE {where}", params
    )
    touched.add((vehicle_id, device_id))
    moved = {
        "positions": conn.execute(
            f"UPDATE positions SET vehicle_id = ? WHERE {where}", (vehicle_id, *params)
        ).rowcount,
        # An event keeps a copy of its position, which names the vehicle too.
        "events": conn.execute(
            "UPDATE events SET vehicle_id = ?, position = json_set(position, '$.vehicle_id', ?)"
            f" WHERE {where}",
            (vehicle_id, vehicle_id, *params),
        ).rowcount,
    }
    _recompute_last(conn, fleet_id, touched)
    return moved
