"""Small helpers for the functions that run on the database threads."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, TypeVar

from storage.errors import NotFound
from storage.pagination import CursorKey
from storage.sqlite.rows import Row

T = TypeVar("T")
Params = Sequence[Any]


def fetch_one(conn: sqlite3.Connection, sql: str, params: Params) -> Row | None:
    row: Row | None = conn.execute(sql, params).fetchone()
    return row


def fetch_all(conn: sqlite3.Connection, sql: str, params: Params) -> list[Row]:
    return conn.execute(sql, params).fetchall()


def get_one(
    conn: sqlite3.Connection, sql: str, params: Params, to_model: Callable[[Row], T], what: str
) -> T:
    """The single row of ``sql`` as a model; NotFound when there is none."""
    row = fetch_one(conn, sql, params)
    if row is None:
        raise NotFound(what)
    return to_model(row)


def require_fleet(conn: sqlite3.Connection, fleet_id: str) -> None:
    if fetch_one(conn, "SELECT 1 FROM fleets WHERE id = ?", (fleet_id,)) is None:
        raise NotFound(f"fleet {fleet_id}")


def equal_filters(where: list[str], params: list[Any], **columns: object) -> None:
    """Add ``column = ?`` to ``where`` for each column given a value (None: no filter).

    Column names come from the caller's keywords, never from input.
    """
    for column, value in columns.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value.value if isinstance(value, Enum) else value)


def after(columns: Sequence[str], key: CursorKey | None) -> tuple[str, list[Any]]:
    """A keyset condition ``(columns) > (key)`` (row values, SQLite >= 3.15), or nothing."""
    return _beyond(columns, key, ">")


def before(columns: Sequence[str], key: CursorKey | None) -> tuple[str, list[Any]]:
    """A keyset condition ``(columns) < (key)``: `after` for a newest-first listing."""
    return _beyond(columns, key, "<")


def _beyond(columns: Sequence[str], key: CursorKey | None, op: str) -> tuple[str, list[Any]]:
    if key is None:
        return "", []
    if len(columns) == 1:
        return f" AND {columns[0]} {op} ?", [key[0]]
    placeholders = ", ".join("?" * len(columns))
    return f" AND ({', '.join(columns)}) {op} ({placeholders})", list(key)


def keyset(
    columns: Sequence[str], key: CursorKey | None, *, newest_first: bool
) -> tuple[str, list[Any], str]:
    """A listing page's keyset condition, its parameters and its ORDER BY list, in either
    direction: every column descending for newest first, so the id tiebreak is reversed too
    and rows sharing a timestamp come exactly once across pages. SQLite walks the same
    ascending index backwards for it."""
    if newest_first:
        cond, params = before(columns, key)
        return cond, params, ", ".join(f"{column} DESC" for column in columns)
    cond, params = after(columns, key)
    return cond, params, ", ".join(columns)
