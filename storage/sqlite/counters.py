"""Shared counters on SQLite (storage/counters.py): one row per (name, bucket).

Each call is one write transaction (BEGIN IMMEDIATE), which SQLite serialises across every
process on the file, so "count, compare, add" is atomic without a lock of our own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.counters import CounterWindow, Increment
from storage.sqlite.db import Database


class SqliteCounters:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def take(
        self, name: str, *, fleet_id: str | None, limit: int, window: CounterWindow, now_ms: int
    ) -> int | None:
        return await self._db.write(_take, name, fleet_id, limit, window, now_ms)

    async def add(
        self, increments: Sequence[Increment], *, window: CounterWindow, now_ms: int
    ) -> dict[str, int]:
        if not increments:
            return {}
        return await self._db.write(_add, increments, window, now_ms)


# --- run on the writer thread ------------------------------------------------------------


def _total(conn: sqlite3.Connection, name: str, window: CounterWindow, now_ms: int) -> int:
    conn.execute(
        "DELETE FROM counters WHERE name = ? AND bucket_ms <= ?", (name, window.oldest(now_ms))
    )
    (total,) = conn.execute(
        "SELECT COALESCE(SUM(n), 0) FROM counters WHERE name = ?", (name,)
    ).fetchone()
    return int(total)


def _increment(
    conn: sqlite3.Connection,
    name: str,
    fleet_id: str | None,
    n: int,
    window: CounterWindow,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO counters (name, bucket_ms, fleet_id, n) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name, bucket_ms) DO UPDATE SET n = n + excluded.n",
        (name, window.bucket(now_ms), fleet_id, n),
    )


def _take(
    conn: sqlite3.Connection,
    name: str,
    fleet_id: str | None,
    limit: int,
    window: CounterWindow,
    now_ms: int,
) -> int | None:
    total = _total(conn, name, window, now_ms)
    if total >= limit:
        return None
    _increment(conn, name, fleet_id, 1, window, now_ms)
    return total + 1


def _add(
    conn: sqlite3.Connection, increments: Sequence[Increment], window: CounterWindow, now_ms: int
) -> dict[str, int]:
    totals: dict[str, int] = {}
    for inc in increments:
        if inc.n:
            _increment(conn, inc.name, inc.fleet_id, inc.n, window, now_ms)
        totals[inc.name] = _total(conn, inc.name, window, now_ms)
    return totals
