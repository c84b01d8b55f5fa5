"""The live stream's log on SQLite (storage/stream.py says what it is for).

`append_in` runs inside another write's transaction (telemetry.store, an alert, a command
change), so a block is committed with what it reports, or not at all. Block numbers come from
the fleet's row of ``stream_seq`` in that same transaction: SQLite has one writer at a time,
so blocks become visible in number order and a reader never meets a hole.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

import orjson

from storage import stream
from storage.errors import CursorExpired
from storage.models import Position, StreamKind, StreamPage, now_ms
from storage.sqlite import rows
from storage.sqlite.db import Database

_TAKE = (
    "INSERT INTO stream_seq (fleet_id, block, head) VALUES (?, ?, 0)"
    " ON CONFLICT (fleet_id) DO UPDATE SET block = block + excluded.block RETURNING block"
)


def append_in(conn: sqlite3.Connection, items: Sequence[Any]) -> None:
    """Append ``items`` (stored resources, each with a fleet_id): one block per fleet."""
    if not items:
        return
    created_ms = now_ms()
    by_fleet: defaultdict[str, list[Any]] = defaultdict(list)
    for item in items:
        by_fleet[item.fleet_id].append(item)
    rows = []
    for fleet_id, fleet_items in by_fleet.items():
        blocks = stream.pack(fleet_items)
        (last,) = conn.execute(_TAKE, (fleet_id, len(blocks))).fetchone()
        first = last - len(blocks) + 1
        for number, (count, data) in enumerate(blocks, start=first):
            rows.append((fleet_id, number, created_ms, count, orjson.dumps(data)))
        head = stream.last_cursor(last, blocks[-1][0])
        conn.execute("UPDATE stream_seq SET head = ? WHERE fleet_id = ?", (head, fleet_id))
    conn.executemany(
        "INSERT INTO stream (fleet_id, block, created_ms, n, data) VALUES (?, ?, ?, ?, ?)", rows
    )


class SqliteStream:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, items: Sequence[Any]) -> None:
        await self._db.write(append_in, items)

    async def after(
        self,
        fleet_id: str,
        cursor: int,
        *,
        kinds: Collection[StreamKind] | None = None,
        vehicle_id: str | None = None,
        limit: int = 1000,
    ) -> StreamPage:
        limit = max(1, min(limit, stream.MAX_PAGE))
        pruned, found = await self._db.read(_after, fleet_id, cursor, limit)
        if cursor < pruned:
            raise CursorExpired(cursor, pruned)
        blocks = [(number, created, orjson.loads(data)) for number, created, data in found]
        page = stream.page(
            blocks,
            fleet_id,
            cursor,
            kinds=kinds,
            vehicle_id=vehicle_id,
            limit=limit,
            now_ms=now_ms(),
        )
        wanted = stream.refs(page)
        if not wanted:
            return page
        return stream.resolved(page, await self._db.read(_positions, fleet_id, wanted))

    async def head(self, fleet_id: str) -> int:
        row = await self._db.read(_seq, fleet_id)
        return row[0] if row else 0

    async def horizon(self, fleet_id: str) -> int:
        row = await self._db.read(_seq, fleet_id)
        return row[1] if row else 0

    async def prune(self, before_ms: int) -> int:
        return await self._db.write(_prune, before_ms)


def _after(
    conn: sqlite3.Connection, fleet_id: str, cursor: int, limit: int
) -> tuple[int, list[tuple[int, int, bytes]]]:
    row = conn.execute("SELECT pruned FROM stream_seq WHERE fleet_id = ?", (fleet_id,)).fetchone()
    block, _ = stream.split_cursor(cursor)
    # A block holds at least one entry, so ``limit`` blocks always cover ``limit`` entries.
    found = conn.execute(
        "SELECT block, created_ms, data FROM stream"
        " WHERE fleet_id = ? AND block >= ? ORDER BY block LIMIT ?",
        (fleet_id, block, limit + 1),
    ).fetchall()
    return (row[0] if row else 0), found


def _positions(
    conn: sqlite3.Connection, fleet_id: str, wanted: list[stream.PositionRef]
) -> dict[stream.PositionRef, Position]:
    sql = f"SELECT {rows.POSITION_COLUMNS} FROM positions WHERE time_ms = ? AND device_id = ?"
    found = {}
    for ref in wanted:
        row = conn.execute(sql, (ref.time_ms, ref.device_id)).fetchone()
        if row is not None:
            position = rows.to_position(row)
            if position.fleet_id == fleet_id:
                found[ref] = position
    return found


def _seq(conn: sqlite3.Connection, fleet_id: str) -> tuple[int, int] | None:
    row = conn.execute(
        "SELECT head, pruned FROM stream_seq WHERE fleet_id = ?", (fleet_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _prune(conn: sqlite3.Connection, before_ms: int) -> int:
    # Each fleet's horizon first, in the same transaction: a reader never sees entries gone
    # without the cursor that says so.
    gone = conn.execute(
        "SELECT fleet_id, block, n FROM stream s WHERE created_ms < ? AND block ="
        " (SELECT MAX(block) FROM stream WHERE fleet_id = s.fleet_id AND created_ms < ?)",
        (before_ms, before_ms),
    ).fetchall()
    for fleet_id, block, count in gone:
        conn.execute(
            "UPDATE stream_seq SET pruned = MAX(pruned, ?) WHERE fleet_id = ?",
            (stream.last_cursor(block, count), fleet_id),
        )
    (removed,) = conn.execute(
        "SELECT COALESCE(SUM(n), 0) FROM stream WHERE created_ms < ?", (before_ms,)
    ).fetchone()
    conn.execute("DELETE FROM stream WHERE created_ms < ?", (before_ms,))
    return int(removed)
