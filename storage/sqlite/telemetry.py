"""Positions, events and last positions on SQLite: the ingest hot path."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import cache
from itertools import chain
from operator import attrgetter
from typing import Any

from storage.latest import newest_valid_fixes, vehicle_subject
from storage.models import Event, Page, Position, StoreResult, first_copies, now_ms
from storage.pagination import CursorKey, decode_cursor, make_page, order_kind, page_limit
from storage.repository import BBox, MapEntry
from storage.sqlite import rows
from storage.sqlite.db import Database
from storage.sqlite.query import fetch_all, keyset
from storage.sqlite.rows import Row
from storage.sqlite.schema import POSITION_COLUMN_NAMES
from storage.sqlite.stream import append_in
from storage.sqlite.tracking_schema import HELD_VEHICLES_SQL

_POSITION_PLACEHOLDERS = ", ".join("?" * len(POSITION_COLUMN_NAMES))

# OR IGNORE: a resend hits the primary key and is skipped; rowcount then counts only new rows.
_INSERT_POSITION = (
    f"INSERT OR IGNORE INTO positions ({rows.POSITION_COLUMNS}) VALUES ({_POSITION_PLACEHOLDERS})"
)
_INSERT_EVENT = (
    f"INSERT OR IGNORE INTO events ({rows.EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The WHERE on the update makes the database keep whichever of (held, offered) is newer, so the
# last position never moves back in time whatever order batches arrive in. fleet_id and
# vehicle_id are fixed for a subject: left out of the SET, the fleet index is never rewritten.
_UPSERT_LAST = (
    "INSERT INTO last_positions (subject, fleet_id, vehicle_id, device_id, time_ms, lat, lon)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (subject) DO UPDATE SET device_id = excluded.device_id,"
    " time_ms = excluded.time_ms, lat = excluded.lat, lon = excluded.lon"
    " WHERE excluded.time_ms > last_positions.time_ms"
)
_last_values = attrgetter("fleet_id", "vehicle_id", "device_id", "time_ms", "lat", "lon")
# Rows bound per execution of a batch's INSERT (one multi-row VALUES list). sqlite3 pays per
# execution: a statement reset, its bind loop, and the GIL released and taken back around the
# step, which on a busy gateway means waiting for the event loop to let go. 100 rows per
# execution: about a fifth less writer-thread CPU per stored position than one row each
# (isolated, 1,000-vehicle flushes); 100 x 25 parameters stay far below SQLite's 32,766.
ROWS_PER_STATEMENT = 100
_io = attrgetter("io")
# A last position is a reference to its stored row (see schema.py).
_LAST_COLUMNS = ", ".join(f"p.{name}" for name in POSITION_COLUMN_NAMES)
_JOIN_LAST = (
    " FROM last_positions AS l"
    " JOIN positions AS p ON p.time_ms = l.time_ms AND p.device_id = l.device_id"
)
_SELECT_LAST = f"SELECT {_LAST_COLUMNS}{_JOIN_LAST}"
# The map: the vehicle found by its primary key for each entry of the area (the planner's
# choice, checked: a lookup per vehicle shown, not the fleet's vehicles scanned).
_SELECT_MAP = (
    f"SELECT l.vehicle_id, v.plate, v.label, {_LAST_COLUMNS}{_JOIN_LAST}"
    " JOIN vehicles AS v ON v.id = l.vehicle_id AND v.fleet_id = l.fleet_id"
)


def _in_fleet_area(
    select: str, fleet_id: str, bbox: BBox | None, *, ordered: bool = True
) -> tuple[str, list[Any]]:
    """``select`` (of last_positions AS l) narrowed to the fleet's vehicles in ``bbox``, by
    vehicle id unless not ``ordered``."""
    # Boxes without a vehicle have last positions too, but this lists vehicles only.
    sql = f"{select} WHERE l.fleet_id = ? AND l.vehicle_id IS NOT NULL"
    params: list[Any] = [fleet_id]
    if bbox is not None:
        min_lon, min_lat, max_lon, max_lat = bbox
        sql += " AND l.lat BETWEEN ? AND ?"
        params += [min_lat, max_lat]
        if min_lon <= max_lon:
            sql += " AND l.lon BETWEEN ? AND ?"
        else:  # a box across the antimeridian (GeoJSON, RFC 7946 §5.2)
            sql += " AND (l.lon >= ? OR l.lon <= ?)"
        params += [min_lon, max_lon]
    return sql + (" ORDER BY l.vehicle_id" if ordered else ""), params


def positions_query(
    fleet_id: str,
    vehicle_id: str,
    from_ms: int,
    to_ms: int,
    after: CursorKey | None,
    limit: int,
    newest_first: bool,
) -> tuple[str, list[Any]]:
    """The history query (`SqliteTelemetry.positions`): rows after the keyset ``after``, at
    most ``limit``. Apart so bench/bench_api.py's floor runs exactly this SQL."""
    cond, after_params, order = keyset(["time_ms", "device_id"], after, newest_first=newest_first)
    sql = (
        f"SELECT {rows.POSITION_COLUMNS} FROM positions"
        f" WHERE fleet_id = ? AND vehicle_id = ? AND time_ms >= ? AND time_ms < ?{cond}"
        f" ORDER BY {order} LIMIT ?"
    )
    return sql, [fleet_id, vehicle_id, from_ms, to_ms, *after_params, limit]


class SqliteTelemetry:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def store(self, positions: Sequence[Position], events: Sequence[Event]) -> StoreResult:
        if not positions and not events:
            return StoreResult(0, 0, 0, 0)
        return await self._db.write(_store, rows.PositionList(positions), events)

    async def last_position(self, fleet_id: str, vehicle_id: str) -> Position | None:
        sql = f"{_SELECT_LAST} WHERE l.subject = ? AND l.fleet_id = ?"
        found = await self._db.read(fetch_all, sql, (vehicle_subject(vehicle_id), fleet_id))
        return rows.to_position(found[0]) if found else None

    async def last_positions(self, fleet_id: str, *, bbox: BBox | None = None) -> list[Position]:
        sql, params = _in_fleet_area(_SELECT_LAST, fleet_id, bbox)
        return await self._db.read(fetch_positions, sql, params)

    async def fleet_map(self, fleet_id: str, *, bbox: BBox | None = None) -> list[MapEntry]:
        sql, params = _in_fleet_area(_SELECT_MAP, fleet_id, bbox, ordered=False)
        return await self._db.read(_fetch_map, sql, params)

    async def positions(
        self,
        fleet_id: str,
        vehicle_id: str,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> Page[Position]:
        limit = page_limit(limit)
        kind = order_kind("position", newest_first)
        key = None if cursor is None else decode_cursor(cursor, kind, (int, str))
        sql, params = positions_query(
            fleet_id, vehicle_id, from_ms, to_ms, key, limit + 1, newest_first
        )
        found = await self._db.read(fetch_positions, sql, params)
        return make_page(
            found,
            limit,
            kind,
            lambda p: (p.time_ms, p.device_id),
        )

    async def events(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        code: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> Page[Event]:
        limit = page_limit(limit)
        where = "fleet_id = ? AND time_ms >= ? AND time_ms < ?"
        params: list[Any] = [fleet_id, from_ms, to_ms]
        if vehicle_id is not None:
            where += " AND vehicle_id = ?"
            params.append(vehicle_id)
        if code is not None:
            where += " AND code = ?"
            params.append(code)
        kind = order_kind("event", newest_first)
        key = None if cursor is None else decode_cursor(cursor, kind, (int, str, str))
        columns = ["time_ms", "device_id", "code"]
        cond, after_params, order = keyset(columns, key, newest_first=newest_first)
        sql = (
            f"SELECT {rows.EVENT_COLUMNS} FROM events WHERE {where}{cond} ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page(
            [rows.to_event(r) for r in found],
            limit,
            kind,
            lambda e: (e.time_ms, e.device_id, e.code),
        )

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        return await self._db.write(_purge, fleet_id, before_ms)


# --- run on the reader thread ------------------------------------------------------------


def fetch_positions(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Position]:
    """The rows of ``sql`` as positions, each made as its row is read: the row is freed at
    once, so a history's thousands of rows never all live beside their positions (which
    would double the allocations that set off the GC's young collections, and its work)."""
    return list(map(rows.to_position, conn.execute(sql, params)))


def _fetch_map(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[MapEntry]:
    # Sorted here, not by an ORDER BY: SQLite's sorter copies every wide row (a fifth of the
    # query's time for a city's few hundred vehicles); the list sorts references.
    found = [
        MapEntry(vehicle_id, plate, label, rows.to_position(position))
        for vehicle_id, plate, label, *position in conn.execute(sql, params)
    ]
    found.sort(key=_entry_vehicle)
    return found


_entry_vehicle = attrgetter("vehicle_id")


# --- run on the writer thread ------------------------------------------------------------


def _store(
    conn: sqlite3.Connection, positions: Sequence[Position], events: Sequence[Event]
) -> StoreResult:
    """One transaction: the batch is stored whole or not at all.

    Per row this does only C-level work (a position is its own row, bound ROWS_PER_STATEMENT
    rows per execution); the last positions are reduced to one row per vehicle or box in Python
    first, so the upsert runs once per subject rather than once per position.
    """
    positions_inserted = events_inserted = 0
    dup_positions: frozenset[Any] = frozenset()
    dup_events: frozenset[Any] = frozenset()
    if positions:
        positions_inserted, dup_positions = _insert_new(
            conn, _INSERT_POSITION, positions, position_rows(positions), _POSITION_KEY
        )
    if events:
        events_inserted, dup_events = _insert_new(
            conn, _INSERT_EVENT, events, [rows.event_values(e) for e in events], _EVENT_KEY
        )
    # What was new goes to the live stream's log in the same transaction: a stream client sees
    # a record once it is durable, and never one that was not stored.
    if positions_inserted < len(positions) or events_inserted < len(events):
        append_in(
            conn,
            [
                *first_copies(positions, dup_positions, _POSITION_KEY),
                *first_copies(events, dup_events, _EVENT_KEY),
            ],
        )
    else:
        append_in(conn, [*positions, *events] if events else positions)
    # Every valid fix is offered, resends included: if a crash ever separated a position from
    # its last-position update, the resend repairs it (the upsert is idempotent).
    newest = newest_valid_fixes(positions)
    if newest:
        execute_rows(conn, _UPSERT_LAST, [(key, *_last_values(p)) for key, p in newest.items()])
    return StoreResult(
        positions_inserted=positions_inserted,
        positions_duplicate=len(positions) - positions_inserted,
        events_inserted=events_inserted,
        events_duplicate=len(events) - events_inserted,
        duplicate_positions=dup_positions,
        duplicate_events=dup_events,
    )


_POSITION_KEY = attrgetter("device_id", "time_ms")
_EVENT_KEY = attrgetter("device_id", "time_ms", "code")


def position_rows(positions: Sequence[Position]) -> Sequence[Row]:
    """The positions as rows of ``_INSERT_POSITION``. A position is its own row (its fields are
    the columns, in order: tests/storage/test_fields.py) unless it has raw IO, a JSON column."""
    ios = list(map(_io, positions))
    if ios.count(None) == len(ios):
        return positions
    return [rows.position_values(p) for p in positions]


def execute_rows(conn: sqlite3.Connection, sql: str, rows_: Sequence[Row]) -> int:
    """Run the one-row statement ``sql`` (``... VALUES (?, ...) ...``) for each of ``rows_``,
    ROWS_PER_STATEMENT rows per execution; the number of rows it changed.

    The rest of a batch (fewer rows than that) goes through ``sql`` itself, row by row: one
    statement of each size would crowd the connection's statement cache.
    """
    n = ROWS_PER_STATEMENT
    whole = len(rows_) - len(rows_) % n
    changed = 0
    if whole:
        changed = conn.executemany(
            _many_rows(sql, n),
            (tuple(chain.from_iterable(rows_[i : i + n])) for i in range(0, whole, n)),
        ).rowcount
    if whole < len(rows_):
        changed += conn.executemany(sql, rows_[whole:]).rowcount
    return changed


@cache
def _many_rows(sql: str, count: int) -> str:
    """``sql`` with its one VALUES row repeated ``count`` times (what follows it is kept)."""
    head, _, tail = sql.partition(" VALUES (")
    row, _, rest = tail.partition(")")
    return f"{head} VALUES {', '.join([f'({row})'] * count)}{rest}"


def _insert_new(
    conn: sqlite3.Connection,
    sql: str,
    records: Sequence[Any],
    table_rows: Sequence[Row],
    key: Callable[[Any], tuple[Any, ...]],
) -> tuple[int, frozenset[Any]]:
    """INSERT OR IGNORE a batch (``table_rows``: the ``records`` as rows of ``sql``); (how many
    were new, the keys of those already stored).

    The whole batch goes in a few executions (C-level per row); only when it hit a duplicate
    is it rolled back to a savepoint and inserted row by row, to learn which ones were
    resends: a batch with resends pays that, the common batch does not.
    """
    conn.execute("SAVEPOINT batch")
    inserted = execute_rows(conn, sql, table_rows)
    resent: set[Any] = set()
    if inserted < len(records):
        conn.execute("ROLLBACK TO batch")
        inserted = 0
        stored_now: set[Any] = set()
        for record, row in zip(records, table_rows, strict=True):
            k = key(record)
            if conn.execute(sql, row).rowcount:
                inserted += 1
                stored_now.add(k)
            elif k not in stored_now:  # a second copy within the batch is no resend
                resent.add(k)
    conn.execute("RELEASE batch")
    return inserted, frozenset(resent)


def _purge(conn: sqlite3.Connection, fleet_id: str, before_ms: int) -> int:
    # A last position is kept however old: it is a vehicle's current state, not history (a van
    # parked for a month is still on the map). The NOT IN list is built once per statement.
    # A vehicle under a legal hold (a theft case, docs/theft.md) keeps all of its data.
    held = f" AND (vehicle_id IS NULL OR vehicle_id NOT IN ({HELD_VEHICLES_SQL}))"
    now = now_ms()
    deleted = conn.execute(
        "DELETE FROM positions WHERE fleet_id = ? AND time_ms < ? AND (time_ms, device_id)"
        " NOT IN (SELECT time_ms, device_id FROM last_positions WHERE fleet_id = ?)" + held,
        (fleet_id, before_ms, fleet_id, fleet_id, now),
    ).rowcount
    deleted += conn.execute(
        "DELETE FROM events WHERE fleet_id = ? AND time_ms < ?" + held,
        (fleet_id, before_ms, fleet_id, now),
    ).rowcount
    return deleted
