"""The audit logs' hash chains on SQLite (storage/audit_chain.py): append, read, migrate.

An append reads its chain's head and inserts the next link in the same writer transaction
(BEGIN IMMEDIATE holds the file's write lock): another process appending to the same chain
waits for it, so the chain cannot fork. The unique (fleet_id, seq) index is the second line of
defence, and the index the head lookup uses.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar

from storage.audit_chain import Chained, link
from storage.models import AccessLogEntry, AuditEntry

E = TypeVar("E", bound=Chained)

# The chained tables and the model of their rows (columns in model order, as the DDL).
CHAINED_TABLES: dict[str, type[Any]] = {"access_log": AccessLogEntry, "command_audit": AuditEntry}

CHAIN_DDL = """
CREATE UNIQUE INDEX IF NOT EXISTS access_log_chain ON access_log (fleet_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS command_audit_chain ON command_audit (fleet_id, seq);
"""


def _columns(model: type[Any]) -> str:
    return ", ".join(f.name for f in dataclasses.fields(model))


@functools.cache
def _insert(table: str, model: type[Any]) -> tuple[str, Callable[[Any], tuple[Any, ...]]]:
    """The INSERT of one link and its parameters' getter (attrgetter builds the tuple in C;
    astuple recursed and deep-copied every field, ~15 µs an entry on the writer thread)."""
    names = [f.name for f in dataclasses.fields(model)]
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    return sql, attrgetter(*names)


def insert_chained(conn: sqlite3.Connection, table: str, entry: E, after: E | None = None) -> E:
    """Insert ``entry`` as the next link of its fleet's chain; in the caller's transaction.
    ``after``: the link this transaction inserted last in that chain, the head without
    reading it (several lines of one write)."""
    if after is not None and after.fleet_id == entry.fleet_id:
        return _insert_linked(conn, table, link(entry, after.seq, after.hash))
    head = conn.execute(
        f"SELECT seq, hash FROM {table} WHERE fleet_id IS ? ORDER BY seq DESC LIMIT 1",
        (entry.fleet_id,),
    ).fetchone()
    linked = link(entry, head[0], head[1]) if head is not None else link(entry, 0, None)
    return _insert_linked(conn, table, linked)


def _insert_linked(conn: sqlite3.Connection, table: str, linked: E) -> E:
    sql, values = _insert(table, type(linked))
    conn.execute(sql, values(linked))
    return linked


def read_chain(
    conn: sqlite3.Connection,
    table: str,
    to_entry: Callable[[tuple[Any, ...]], E],
    fleet_id: str | None,
    after_seq: int,
    limit: int,
    /,
) -> list[E]:
    sql = (
        f"SELECT {_columns(CHAINED_TABLES[table])} FROM {table}"
        " WHERE fleet_id IS ? AND seq > ? ORDER BY seq LIMIT ?"
    )
    return [to_entry(r) for r in conn.execute(sql, (fleet_id, after_seq, limit))]


def chain_fleets(conn: sqlite3.Connection, table: str) -> list[str | None]:
    """The fleets (None: the platform) with at least one entry in ``table``."""
    return [r[0] for r in conn.execute(f"SELECT DISTINCT fleet_id FROM {table} ORDER BY fleet_id")]


def chain_existing(conn: sqlite3.Connection) -> None:
    """Migration: add the chain columns and link the entries already stored, per fleet in
    (time_ms, id) order, which is the order they were listed in."""
    for table, model in CHAINED_TABLES.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not present:
            continue  # created whole afterwards
        for column, definition in (
            ("seq", "INTEGER NOT NULL DEFAULT 0"),
            ("prev_hash", "TEXT NOT NULL DEFAULT ''"),
            ("hash", "TEXT NOT NULL DEFAULT ''"),
        ):
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        heads: dict[str | None, tuple[int, str | None]] = {}
        found = conn.execute(
            f"SELECT {_columns(model)} FROM {table} ORDER BY time_ms, id"
        ).fetchall()
        for row in found:
            entry = model(*row)
            seq, prev = heads.get(entry.fleet_id, (0, None))
            linked = link(entry, seq, prev)
            heads[entry.fleet_id] = (linked.seq, linked.hash)
            conn.execute(
                f"UPDATE {table} SET seq = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (linked.seq, linked.prev_hash, linked.hash, entry.id),
            )
