"""Remote commands on SQLite: commands, the command audit log, policies, alerts.

Each compound write (create: number + command + audit entry; transition: status + audit entry)
is one function on the writer thread, hence one transaction: a command is never stored without
the audit entry of its request, and a status never changes without its audit entry.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import sqlite3
from collections.abc import Collection, Sequence
from operator import attrgetter
from typing import Any

from storage.errors import NotFound
from storage.models import (
    Alert,
    AlertKind,
    AuditEntry,
    CommandChanges,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    CommandStep,
    KillSwitch,
    Page,
    Severity,
    VehicleLockState,
    first_command_seq,
)
from storage.pagination import decode_cursor, make_page, order_kind, page_limit
from storage.sqlite.audit_chain import chain_fleets, insert_chained, read_chain
from storage.sqlite.db import Database
from storage.sqlite.query import after, equal_filters, fetch_all, fetch_one, keyset
from storage.sqlite.rows import Row
from storage.sqlite.stream import append_in

_COMMAND_FIELDS = tuple(f.name for f in dataclasses.fields(CommandRecord))
COMMAND_COLUMNS = ", ".join(_COMMAND_FIELDS)
_AUDIT_FIELDS = tuple(f.name for f in dataclasses.fields(AuditEntry))
AUDIT_COLUMNS = ", ".join(_AUDIT_FIELDS)
_ALERT_FIELDS = tuple(f.name for f in dataclasses.fields(Alert))
ALERT_COLUMNS = ", ".join(_ALERT_FIELDS)
LOCK_COLUMNS = ", ".join(f.name for f in dataclasses.fields(VehicleLockState))

# The columns a transition may set: CommandChanges' keys, checked so no other name can ever be
# formatted into the SQL.
_CHANGEABLE = frozenset(CommandChanges.__annotations__)
_KILL_SWITCH = "kill_switch"
# Keys per IN (...) lookup: well under SQLite's limit of host parameters.
_KEYS_PER_QUERY = 500


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


_KIND_AT = _COMMAND_FIELDS.index("kind")
_STATUS_AT = _COMMAND_FIELDS.index("status")


def to_command(row: Row) -> CommandRecord:
    # Positional: the row is in field order (a dict of it per row cost more than the rest).
    values = list(row)
    values[_KIND_AT] = CommandKind(values[_KIND_AT])
    values[_STATUS_AT] = CommandState(values[_STATUS_AT])
    return CommandRecord(*values)


# attrgetter builds a row's tuple in C; astuple recursed and deep-copied each field (~20 µs a
# command on the writer thread, GIL held).
_command_attrs = attrgetter(*_COMMAND_FIELDS)
_lock_state_attrs = attrgetter(*(f.name for f in dataclasses.fields(VehicleLockState)))


def _command_values(command: CommandRecord) -> Row:
    return tuple(
        v.value if isinstance(v, CommandKind | CommandState) else v for v in _command_attrs(command)
    )


def to_audit(row: Row) -> AuditEntry:
    return AuditEntry(*row)


def to_alert(row: Row) -> Alert:
    values = dict(zip(_ALERT_FIELDS, row, strict=True))
    values["kind"] = AlertKind(values["kind"])
    values["freezes_commands"] = bool(values["freezes_commands"])
    values["severity"] = Severity(values["severity"])
    return Alert(**values)


def alert_values(alert: Alert) -> Row:
    """The row of ``alert`` in ALERT_COLUMNS order (enums by value)."""
    return tuple(
        v.value if isinstance(v, AlertKind | Severity) else v for v in dataclasses.astuple(alert)
    )


def to_lock_state(row: Row) -> VehicleLockState:
    fleet_id, vehicle_id, device_id, locked, inhibited, updated_ms, command_id = row
    return VehicleLockState(
        fleet_id=fleet_id,
        vehicle_id=vehicle_id,
        device_id=device_id,
        doors_locked=bool(locked),
        engine_start_inhibited=bool(inhibited),
        updated_ms=updated_ms,
        command_id=command_id,
    )


class SqliteCommands:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, command: CommandRecord, requested: AuditEntry
    ) -> tuple[CommandRecord, bool]:
        return await self._db.write(_create, command, requested)

    async def create_many(
        self, items: Sequence[tuple[CommandRecord, AuditEntry]]
    ) -> builtins.list[tuple[CommandRecord, bool]]:
        return await self._db.write(_create_many, items)

    async def get(self, fleet_id: str, command_id: str) -> CommandRecord:
        sql = f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ? AND fleet_id = ?"
        found = await self._db.read(fetch_all, sql, (command_id, fleet_id))
        if not found:
            raise NotFound(f"command {command_id}")
        return to_command(found[0])

    async def by_seq(self, imei: str, seq: int) -> CommandRecord | None:
        sql = f"SELECT {COMMAND_COLUMNS} FROM commands WHERE imei = ? AND seq = ?"
        found = await self._db.read(fetch_all, sql, (imei, seq))
        return to_command(found[0]) if found else None

    async def by_idempotency_key(self, fleet_id: str, key: str) -> CommandRecord | None:
        sql = f"SELECT {COMMAND_COLUMNS} FROM commands WHERE fleet_id = ? AND idempotency_key = ?"
        found = await self._db.read(fetch_all, sql, (fleet_id, key))
        return to_command(found[0]) if found else None

    async def by_idempotency_keys(
        self, fleet_id: str, keys: Collection[str]
    ) -> dict[str, CommandRecord]:
        found: dict[str, CommandRecord] = {}
        wanted = builtins.list(keys)
        for i in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[i : i + _KEYS_PER_QUERY]
            sql = (
                f"SELECT {COMMAND_COLUMNS} FROM commands WHERE fleet_id = ?"
                f" AND idempotency_key IN ({_placeholders(len(chunk))})"
            )
            for row in await self._db.read(fetch_all, sql, [fleet_id, *chunk]):
                command = to_command(row)
                assert command.idempotency_key is not None  # matched by it
                found[command.idempotency_key] = command
        return found

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        status: CommandState | None = None,
        kind: CommandKind | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> Page[CommandRecord]:
        limit = page_limit(limit)
        where = ["fleet_id = ?", "created_ms >= ?", "created_ms < ?"]
        params: list[Any] = [fleet_id, from_ms, to_ms]
        equal_filters(where, params, vehicle_id=vehicle_id, status=status, kind=kind)
        tag = order_kind("command", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        cond, after_params, order = keyset(["created_ms", "id"], key, newest_first=newest_first)
        sql = (
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE {' AND '.join(where)}{cond}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page([to_command(r) for r in found], limit, tag, lambda c: (c.created_ms, c.id))

    async def count_since(
        self, fleet_id: str, kinds: Collection[CommandKind], since_ms: int
    ) -> int:
        if not kinds:
            return 0
        sql = (
            "SELECT count(*) FROM commands WHERE fleet_id = ? AND created_ms >= ?"
            f" AND kind IN ({_placeholders(len(kinds))})"
        )
        found = await self._db.read(fetch_all, sql, [fleet_id, since_ms, *(k.value for k in kinds)])
        return int(found[0][0])

    async def pending_for_box(self, imei: str, now_ms: int) -> builtins.list[CommandRecord]:
        sql = (
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE imei = ?"
            " AND status IN ('queued', 'sent') AND expires_ms > ? ORDER BY seq"
        )
        return [to_command(r) for r in await self._db.read(fetch_all, sql, (imei, now_ms))]

    async def in_status(
        self,
        status: CommandState,
        *,
        updated_from_ms: int = 0,
        updated_to_ms: int = 2**62,
        limit: int = 1000,
    ) -> builtins.list[CommandRecord]:
        sql = (
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE status = ?"
            " AND updated_ms >= ? AND updated_ms < ? ORDER BY updated_ms LIMIT ?"
        )
        params = (status.value, updated_from_ms, updated_to_ms, page_limit(limit))
        return [to_command(r) for r in await self._db.read(fetch_all, sql, params)]

    async def expiring(self, now_ms: int, *, limit: int = 1000) -> builtins.list[CommandRecord]:
        # The status condition is spelled exactly as the partial index's, so it is used.
        sql = (
            f"SELECT {COMMAND_COLUMNS} FROM commands"
            " WHERE status IN ('pending_approval', 'queued', 'sent') AND expires_ms <= ?"
            " ORDER BY expires_ms LIMIT ?"
        )
        params = (now_ms, page_limit(limit))
        return [to_command(r) for r in await self._db.read(fetch_all, sql, params)]

    async def transitions(
        self, command_id: str, steps: Sequence[CommandStep]
    ) -> builtins.list[CommandRecord]:
        return await self._db.write(_transitions, command_id, steps)

    async def create_then(
        self, command: CommandRecord, requested: AuditEntry, steps: Sequence[CommandStep]
    ) -> tuple[builtins.list[CommandRecord], bool]:
        return await self._db.write(_create_then, command, requested, steps)

    async def vehicle_state(self, fleet_id: str, vehicle_id: str) -> VehicleLockState | None:
        sql = (
            f"SELECT {LOCK_COLUMNS} FROM vehicle_lock_states WHERE vehicle_id = ? AND fleet_id = ?"
        )
        found = await self._db.read(fetch_all, sql, (vehicle_id, fleet_id))
        return to_lock_state(found[0]) if found else None

    async def set_vehicle_state(self, state: VehicleLockState) -> None:
        await self._db.write(_set_vehicle_state, state)


class SqliteAudit:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, entry: AuditEntry) -> None:
        await self._db.write(_insert_audit, entry)

    async def chain(
        self, fleet_id: str | None, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        return await self._db.read(
            read_chain, "command_audit", to_audit, fleet_id, after_seq, limit
        )

    async def chain_fleets(self) -> list[str | None]:
        return await self._db.read(chain_fleets, "command_audit")

    async def list(
        self,
        fleet_id: str | None,
        *,
        vehicle_id: str | None = None,
        command_id: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> Page[AuditEntry]:
        limit = page_limit(limit)
        # "IS ?" also matches NULL: the platform's entries are read with fleet_id None.
        where = ["fleet_id IS ?", "time_ms >= ?", "time_ms < ?"]
        params: list[Any] = [fleet_id, from_ms, to_ms]
        equal_filters(where, params, vehicle_id=vehicle_id, command_id=command_id)
        tag = order_kind("audit", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        cond, after_params, order = keyset(["time_ms", "id"], key, newest_first=newest_first)
        sql = (
            f"SELECT {AUDIT_COLUMNS} FROM command_audit WHERE {' AND '.join(where)}{cond}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page([to_audit(r) for r in found], limit, tag, lambda e: (e.time_ms, e.id))


class SqlitePolicies:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, fleet_id: str) -> CommandPolicy:
        sql = (
            "SELECT four_eyes, engine_start_cap_per_hour, updated_ms, updated_by"
            " FROM command_policies WHERE fleet_id = ?"
        )
        found = await self._db.read(fetch_all, sql, (fleet_id,))
        if not found:
            return CommandPolicy(fleet_id=fleet_id)
        four_eyes, cap, updated_ms, updated_by = found[0]
        return CommandPolicy(fleet_id, bool(four_eyes), cap, updated_ms, updated_by)

    async def put(self, policy: CommandPolicy) -> CommandPolicy:
        sql = (
            "INSERT INTO command_policies (fleet_id, four_eyes, engine_start_cap_per_hour,"
            " updated_ms, updated_by) VALUES (?, ?, ?, ?, ?) ON CONFLICT (fleet_id) DO UPDATE"
            " SET four_eyes = excluded.four_eyes,"
            " engine_start_cap_per_hour = excluded.engine_start_cap_per_hour,"
            " updated_ms = excluded.updated_ms, updated_by = excluded.updated_by"
        )
        await self._db.write(_execute, sql, dataclasses.astuple(policy))
        return policy

    async def kill_switch(self) -> KillSwitch:
        sql = "SELECT engaged, reason, changed_ms, changed_by FROM platform_switches WHERE name = ?"
        found = await self._db.read(fetch_all, sql, (_KILL_SWITCH,))
        if not found:
            return KillSwitch()
        engaged, reason, changed_ms, changed_by = found[0]
        return KillSwitch(bool(engaged), reason, changed_ms, changed_by)

    async def set_kill_switch(self, switch: KillSwitch) -> KillSwitch:
        sql = (
            "INSERT INTO platform_switches (name, engaged, reason, changed_ms, changed_by)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET engaged = excluded.engaged,"
            " reason = excluded.reason, changed_ms = excluded.changed_ms,"
            " changed_by = excluded.changed_by"
        )
        await self._db.write(_execute, sql, (_KILL_SWITCH, *dataclasses.astuple(switch)))
        return switch


class SqliteAlerts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def raise_alert(self, alert: Alert) -> Alert:
        sql = f"INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ({_placeholders(len(_ALERT_FIELDS))})"
        values = alert_values(alert)
        await self._db.write(_raise_alert, sql, values, alert)
        return alert

    async def get(self, fleet_id: str, alert_id: str) -> Alert:
        sql = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ? AND fleet_id = ?"
        found = await self._db.read(fetch_all, sql, (alert_id, fleet_id))
        if not found:
            raise NotFound(f"alert {alert_id}")
        return to_alert(found[0])

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        open_only: bool = False,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alert]:
        limit = page_limit(limit)
        where = ["fleet_id = ?"]
        params: list[Any] = [fleet_id]
        equal_filters(where, params, vehicle_id=vehicle_id)
        if open_only:
            where.append("cleared_ms IS NULL")
        key = None if cursor is None else decode_cursor(cursor, "alert", (int, str))
        cond, after_params = after(["raised_ms", "id"], key)
        sql = (
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {' AND '.join(where)}{cond}"
            " ORDER BY raised_ms, id LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page(
            [to_alert(r) for r in found], limit, "alert", lambda a: (a.raised_ms, a.id)
        )

    async def open_alerts(
        self,
        *,
        device_id: str | None = None,
        vehicle_id: str | None = None,
        kind: AlertKind | None = None,
    ) -> builtins.list[Alert]:
        if device_id is None and vehicle_id is None:
            return []
        # Two indexed lookups rather than an OR, which SQLite may answer with a table scan.
        found: dict[str, Alert] = {}
        for column, value in (("device_id", device_id), ("vehicle_id", vehicle_id)):
            if value is None:
                continue
            sql = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {column} = ? AND cleared_ms IS NULL"
            for row in await self._db.read(fetch_all, sql, (value,)):
                alert = to_alert(row)
                if kind is None or alert.kind is kind:
                    found[alert.id] = alert
        return sorted(found.values(), key=lambda a: (a.raised_ms, a.id))

    async def clear(self, fleet_id: str, alert_id: str, *, by: str, at_ms: int) -> Alert:
        return await self._db.write(_clear_alert, fleet_id, alert_id, by, at_ms)


# --- run on the writer thread ------------------------------------------------------------


def _execute(conn: sqlite3.Connection, sql: str, params: Row) -> None:
    conn.execute(sql, params)


def _raise_alert(conn: sqlite3.Connection, sql: str, values: Row, alert: Alert) -> None:
    conn.execute(sql, values)
    append_in(conn, (alert,))


_INSERT_COMMAND = (
    f"INSERT INTO commands ({COMMAND_COLUMNS}) VALUES ({_placeholders(len(_COMMAND_FIELDS))})"
)


def _insert_audit(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    # In the caller's transaction, with the command write it records (storage/audit_chain.py).
    insert_chained(conn, "command_audit", entry)


# The WHERE keeps whichever state is newer, whatever order answers are processed in.
_UPSERT_LOCK_STATE = (
    f"INSERT INTO vehicle_lock_states ({LOCK_COLUMNS}) VALUES ({_placeholders(7)})"
    " ON CONFLICT (vehicle_id) DO UPDATE SET fleet_id = excluded.fleet_id,"
    " device_id = excluded.device_id, doors_locked = excluded.doors_locked,"
    " engine_start_inhibited = excluded.engine_start_inhibited,"
    " updated_ms = excluded.updated_ms, command_id = excluded.command_id"
    " WHERE excluded.updated_ms >= vehicle_lock_states.updated_ms"
)


def _set_vehicle_state(conn: sqlite3.Connection, state: VehicleLockState) -> None:
    conn.execute(_UPSERT_LOCK_STATE, _lock_state_attrs(state))


def _next_seq(conn: sqlite3.Connection, imei: str, now_ms: int) -> int:
    # One statement, under the transaction's write lock: no two commands get one number.
    row = fetch_one(
        conn,
        "INSERT INTO command_seqs (imei, last) VALUES (?, ?) ON CONFLICT (imei) DO UPDATE"
        " SET last = CASE WHEN last >= 4294967295 THEN 1 ELSE last + 1 END RETURNING last",
        (imei, first_command_seq(now_ms)),
    )
    assert row is not None  # RETURNING always yields the row it wrote
    return int(row[0])


def _existing(conn: sqlite3.Connection, command: CommandRecord) -> CommandRecord | None:
    """The fleet's command stored under ``command``'s idempotency key, if any."""
    if command.idempotency_key is None:
        return None
    row = fetch_one(
        conn,
        f"SELECT {COMMAND_COLUMNS} FROM commands WHERE fleet_id = ? AND idempotency_key = ?",
        (command.fleet_id, command.idempotency_key),
    )
    return None if row is None else to_command(row)


def _create(
    conn: sqlite3.Connection, command: CommandRecord, requested: AuditEntry
) -> tuple[CommandRecord, bool]:
    versions, created = _create_then(conn, command, requested, ())
    return versions[0], created


def _create_many(
    conn: sqlite3.Connection, items: Sequence[tuple[CommandRecord, AuditEntry]]
) -> list[tuple[CommandRecord, bool]]:
    # One transaction: a later item sees an earlier one's idempotency key and number.
    return [_create(conn, command, requested) for command, requested in items]


def _create_then(
    conn: sqlite3.Connection,
    command: CommandRecord,
    requested: AuditEntry,
    steps: Sequence[CommandStep],
) -> tuple[list[CommandRecord], bool]:
    existing = _existing(conn, command)
    if existing is not None:
        return [existing], False
    command = dataclasses.replace(command, seq=_next_seq(conn, command.imei, command.created_ms))
    line = insert_chained(conn, "command_audit", requested)
    versions = [command, *_steps(conn, command, [s.numbered(command.seq) for s in steps], line)]
    # The row as it ends up, inserted once (an insert and then an update of the same row
    # rewrote its index entries twice, the costliest statements of a command).
    conn.execute(_INSERT_COMMAND, _command_values(versions[-1]))
    append_in(conn, versions)  # every version, as separate writes would have announced them
    return versions, True


def _transitions(
    conn: sqlite3.Connection, command_id: str, steps: Sequence[CommandStep]
) -> list[CommandRecord]:
    if not steps:
        return []
    row = fetch_one(conn, f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?", (command_id,))
    if row is None:
        return []
    before = to_command(row)
    changed = _steps(conn, before, steps, None)
    if changed:
        # Read in this same transaction, under the write lock: nobody else changed the row
        # since, so the steps' compare-and-set held and the final state is one UPDATE.
        names = sorted({name for step in steps[: len(changed)] for name in step.changes})
        after = changed[-1]
        conn.execute(
            _update_sql(tuple(names)),
            [after.status.value, after.updated_ms, after.attempts]
            + [getattr(after, name) for name in names]
            + [command_id],
        )
        append_in(conn, changed)
    return changed


@functools.cache
def _update_sql(names: tuple[str, ...]) -> str:
    """The UPDATE of a command's status and ``names`` (checked against _CHANGEABLE, so no
    other name is ever formatted into SQL)."""
    unknown = set(names) - _CHANGEABLE
    if unknown:
        raise ValueError(f"not changeable by a transition: {sorted(unknown)}")
    sets = "status = ?, updated_ms = ?, attempts = ?" + "".join(f", {n} = ?" for n in names)
    return f"UPDATE commands SET {sets} WHERE id = ?"


def _waiting_before(conn: sqlite3.Connection, command: CommandRecord, step: CommandStep) -> bool:
    """Another live command of the box that ``step`` may not overtake; in the transaction's
    snapshot, so a command numbered before this one and stored meanwhile is seen."""
    assert step.overtakes is not None
    rows = conn.execute(
        "SELECT seq FROM commands WHERE imei = ? AND status IN ('queued', 'sent')"
        " AND expires_ms > ? AND id != ?",
        (command.imei, step.at_ms, command.id),
    ).fetchall()
    return any(seq not in step.overtakes for (seq,) in rows)


def _steps(
    conn: sqlite3.Connection,
    command: CommandRecord,
    steps: Sequence[CommandStep],
    line: AuditEntry | None,
) -> list[CommandRecord]:
    """``command`` after each of ``steps`` in order, until one's compare-and-set fails, with
    the steps' audit lines and vehicle states stored (not the command's row, nor a stream
    block: the caller writes the last version once); ``line``: the audit link this
    transaction inserted last, the chain's head for the next one."""
    changed: list[CommandRecord] = []
    for step in steps:
        _update_sql(tuple(step.changes))  # refuses a name a transition may not set
        if command.status not in step.expected:
            break
        if step.overtakes is not None and _waiting_before(conn, command, step):
            break
        command = dataclasses.replace(
            command,
            status=step.status,
            updated_ms=step.at_ms,
            attempts=command.attempts + step.attempts_delta,
            **step.changes,
        )
        if step.audit is not None:
            line = insert_chained(conn, "command_audit", step.audit, line)
        if step.vehicle_state is not None:
            _set_vehicle_state(conn, step.vehicle_state)
        changed.append(command)
    return changed


def _clear_alert(
    conn: sqlite3.Connection, fleet_id: str, alert_id: str, by: str, at_ms: int
) -> Alert:
    conn.execute(
        # open_key: a closed alert no longer stands for its incident (tracking_schema.py).
        "UPDATE alerts SET cleared_ms = ?, cleared_by = ?, open_key = NULL"
        " WHERE id = ? AND fleet_id = ? AND cleared_ms IS NULL",
        (at_ms, by, alert_id, fleet_id),
    )
    row = fetch_one(
        conn,
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ? AND fleet_id = ?",
        (alert_id, fleet_id),
    )
    if row is None:
        raise NotFound(f"alert {alert_id}")
    alert = to_alert(row)
    append_in(conn, (alert,))
    return alert
