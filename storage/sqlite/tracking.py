"""Stolen-vehicle tracking on SQLite: alert incidents, alert rules and badge policies, parked
guards, theft cases and their legal holds (tables: storage/sqlite/tracking_schema.py).

Every compound write is one function on the writer thread, hence one transaction, and what it
changes goes on the live stream's log in that transaction (`append_in`): a stream client sees
an alert's update or a case's change once it is committed, and never one that was not.
"""

from __future__ import annotations

import builtins
import dataclasses
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

import orjson

from storage.errors import NotFound
from storage.models import (
    Alert,
    AlertKind,
    AlertRule,
    AlertState,
    GuardState,
    LegalHold,
    Page,
    TheftCase,
    TheftCaseStatus,
    TrackingPolicy,
)
from storage.pagination import decode_cursor, make_page, order_kind, page_limit
from storage.sqlite.commands import ALERT_COLUMNS, SqliteAlerts, alert_values, to_alert
from storage.sqlite.db import Database
from storage.sqlite.query import equal_filters, fetch_all, fetch_one, keyset, require_fleet
from storage.sqlite.stream import append_in
from storage.tracking_codec import (
    incident_key,
    to_case,
    to_doc,
    to_guard,
    to_policy,
    to_rule,
)

_ALERT_FIELD_COUNT = len(ALERT_COLUMNS.split(", "))


def _json(item: object) -> bytes:
    return orjson.dumps(to_doc(item))


def _in(values: Collection[Any]) -> str:
    return ", ".join("?" * len(values))


# What each state filter means (storage.models.alert_state).
_STATE_SQL = {
    AlertState.OPEN: "cleared_ms IS NULL AND acked_ms IS NULL",
    AlertState.ACKNOWLEDGED: "cleared_ms IS NULL AND acked_ms IS NOT NULL",
    AlertState.CLOSED: "cleared_ms IS NOT NULL",
}


class SqliteIncidentAlerts(SqliteAlerts):
    """The alert repository: the command alerts (SqliteAlerts) and the incidents of the alert
    rules, one open alert per incident through the unique ``open_key``."""

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        open_only: bool = False,
        cursor: str | None = None,
        limit: int = 100,
        kinds: Collection[AlertKind] | None = None,
        state: AlertState | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        newest_first: bool = False,
    ) -> Page[Alert]:
        limit = page_limit(limit)
        where = ["fleet_id = ?", "raised_ms >= ?", "raised_ms < ?"]
        params: list[Any] = [fleet_id, from_ms, to_ms]
        equal_filters(where, params, vehicle_id=vehicle_id)
        if kinds is not None:
            if not kinds:
                return Page(items=[], next_cursor=None)
            where.append(f"kind IN ({_in(kinds)})")
            params.extend(k.value for k in kinds)
        if open_only:
            where.append("cleared_ms IS NULL")
        if state is not None:
            where.append(_STATE_SQL[state])
        tag = order_kind("alert", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        cond, after_params, order = keyset(["raised_ms", "id"], key, newest_first=newest_first)
        sql = (
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {' AND '.join(where)}{cond}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        return make_page([to_alert(r) for r in found], limit, tag, lambda a: (a.raised_ms, a.id))

    async def trigger(self, alert: Alert) -> tuple[Alert, bool]:
        key = incident_key(
            alert.fleet_id, alert.vehicle_id, alert.device_id, alert.kind.value, alert.ref
        )
        return await self._db.write(_trigger, alert, key)

    async def close_incident(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None,
        device_id: str | None,
        kind: AlertKind,
        ref: str | None,
        at_ms: int,
        reason: str,
    ) -> Alert | None:
        key = incident_key(fleet_id, vehicle_id, device_id, kind.value, ref)
        return await self._db.write(_close_incident, key, at_ms, reason)

    async def acknowledge(
        self, fleet_id: str, alert_id: str, *, by: str, at_ms: int, note: str
    ) -> Alert:
        return await self._db.write(_acknowledge, fleet_id, alert_id, by, at_ms, note)

    async def link_theft_case(self, fleet_id: str, alert_id: str, case_id: str) -> Alert:
        return await self._db.write(_link_case, fleet_id, alert_id, case_id)


class SqliteAlertRules:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, fleet_id: str) -> builtins.list[AlertRule]:
        sql = "SELECT data FROM alert_rules WHERE fleet_id = ? ORDER BY created_ms, id"
        found = await self._db.read(fetch_all, sql, (fleet_id,))
        return [to_rule(orjson.loads(row[0])) for row in found]

    async def get(self, fleet_id: str, rule_id: str) -> AlertRule:
        sql = "SELECT data FROM alert_rules WHERE id = ? AND fleet_id = ?"
        found = await self._db.read(fetch_all, sql, (rule_id, fleet_id))
        if not found:
            raise NotFound(f"alert rule {rule_id}")
        return to_rule(orjson.loads(found[0][0]))

    async def create(self, rule: AlertRule) -> AlertRule:
        await self._db.write(_insert_rules, rule.fleet_id, (rule,))
        return rule

    async def replace(self, rule: AlertRule) -> AlertRule:
        sql = "UPDATE alert_rules SET data = ? WHERE id = ? AND fleet_id = ?"
        changed = await self._db.write(_changes, sql, (_json(rule), rule.id, rule.fleet_id))
        if not changed:
            raise NotFound(f"alert rule {rule.id}")
        return rule

    async def delete(self, fleet_id: str, rule_id: str) -> None:
        sql = "DELETE FROM alert_rules WHERE id = ? AND fleet_id = ?"
        if not await self._db.write(_changes, sql, (rule_id, fleet_id)):
            raise NotFound(f"alert rule {rule_id}")

    async def ensure_defaults(self, fleet_id: str, rules: Sequence[AlertRule], at_ms: int) -> bool:
        return await self._db.write(_ensure_defaults, fleet_id, tuple(rules), at_ms)

    async def policy(self, fleet_id: str) -> TrackingPolicy:
        sql = "SELECT data, defaults_ms FROM tracking_policies WHERE fleet_id = ?"
        found = await self._db.read(fetch_all, sql, (fleet_id,))
        if not found:
            return TrackingPolicy(fleet_id=fleet_id)
        data, defaults_ms = found[0]
        return dataclasses.replace(to_policy(orjson.loads(data)), defaults_ms=defaults_ms)

    async def put_policy(self, policy: TrackingPolicy) -> TrackingPolicy:
        return await self._db.write(_put_policy, policy)


class SqliteGuards:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, fleet_id: str, vehicle_id: str) -> GuardState | None:
        sql = "SELECT data FROM guard_states WHERE vehicle_id = ? AND fleet_id = ?"
        found = await self._db.read(fetch_all, sql, (vehicle_id, fleet_id))
        return to_guard(orjson.loads(found[0][0])) if found else None

    async def save(self, state: GuardState, *, expected_revision: int) -> GuardState | None:
        stored = dataclasses.replace(state, revision=expected_revision + 1)
        if expected_revision == 0:
            sql = (
                "INSERT INTO guard_states (vehicle_id, fleet_id, revision, data)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (vehicle_id) DO NOTHING"
            )
            params: tuple[Any, ...] = (
                stored.vehicle_id,
                stored.fleet_id,
                stored.revision,
                _json(stored),
            )
        else:
            sql = (
                "UPDATE guard_states SET revision = ?, data = ?"
                " WHERE vehicle_id = ? AND fleet_id = ? AND revision = ?"
            )
            params = (
                stored.revision,
                _json(stored),
                stored.vehicle_id,
                stored.fleet_id,
                expected_revision,
            )
        return stored if await self._db.write(_changes, sql, params) else None

    async def list(self, fleet_id: str) -> builtins.list[GuardState]:
        sql = "SELECT data FROM guard_states WHERE fleet_id = ? ORDER BY vehicle_id"
        found = await self._db.read(fetch_all, sql, (fleet_id,))
        return [to_guard(orjson.loads(row[0])) for row in found]


class SqliteTheftCases:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, case: TheftCase, hold: LegalHold) -> TheftCase:
        await self._db.write(_create_case, case, hold)
        return case

    async def get(self, fleet_id: str, case_id: str) -> TheftCase:
        sql = "SELECT data FROM theft_cases WHERE id = ? AND fleet_id = ?"
        found = await self._db.read(fetch_all, sql, (case_id, fleet_id))
        if not found:
            raise NotFound(f"theft case {case_id}")
        return to_case(orjson.loads(found[0][0]))

    async def replace(self, case: TheftCase, hold: LegalHold | None = None) -> TheftCase:
        await self._db.write(_replace_case, case, hold)
        return case

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        status: TheftCaseStatus | None = None,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> Page[TheftCase]:
        limit = page_limit(limit)
        where = ["fleet_id = ?"]
        params: list[Any] = [fleet_id]
        equal_filters(where, params, vehicle_id=vehicle_id, status=status)
        tag = order_kind("theft_case", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int, str))
        cond, after_params, order = keyset(["opened_ms", "id"], key, newest_first=newest_first)
        sql = (
            f"SELECT data FROM theft_cases WHERE {' AND '.join(where)}{cond}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [*params, *after_params, limit + 1])
        cases = [to_case(orjson.loads(row[0])) for row in found]
        return make_page(cases, limit, tag, lambda c: (c.opened_ms, c.id))

    async def open_case(self, fleet_id: str, vehicle_id: str) -> TheftCase | None:
        sql = "SELECT data FROM theft_cases WHERE vehicle_id = ? AND fleet_id = ? AND status = ?"
        params = (vehicle_id, fleet_id, TheftCaseStatus.OPEN.value)
        found = await self._db.read(fetch_all, sql, params)
        return to_case(orjson.loads(found[0][0])) if found else None

    async def holds(self, fleet_id: str, *, at_ms: int) -> builtins.list[LegalHold]:
        sql = (
            "SELECT case_id, fleet_id, vehicle_id, from_ms, until_ms FROM legal_holds"
            " WHERE fleet_id = ? AND (until_ms IS NULL OR until_ms > ?) ORDER BY from_ms, case_id"
        )
        found = await self._db.read(fetch_all, sql, (fleet_id, at_ms))
        return [LegalHold(*row) for row in found]


# --- run on the writer thread ------------------------------------------------------------


def _changes(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount


# An open incident's alert takes the newest trigger's position and texts; a late trigger
# (an alarm replayed after newer ones) only adds to the count and can move first_ms back.
# Every right-hand side reads the row as it was before this UPDATE.
_UPDATE_INCIDENT = f"""
UPDATE alerts SET
    count = count + ?1,
    first_ms = MIN(COALESCE(first_ms, ?2), ?2),
    lat = CASE WHEN ?3 >= COALESCE(last_ms, 0) THEN ?4 ELSE lat END,
    lon = CASE WHEN ?3 >= COALESCE(last_ms, 0) THEN ?5 ELSE lon END,
    speed_kmh = CASE WHEN ?3 >= COALESCE(last_ms, 0) THEN ?6 ELSE speed_kmh END,
    detail = CASE WHEN ?3 >= COALESCE(last_ms, 0) THEN ?7 ELSE detail END,
    last_ms = MAX(COALESCE(last_ms, ?3), ?3),
    severity = ?8,
    rule_id = COALESCE(?9, rule_id),
    updated_ms = ?10
WHERE open_key = ?11
RETURNING {ALERT_COLUMNS}
"""
_INSERT_ALERT = (
    f"INSERT INTO alerts ({ALERT_COLUMNS}, open_key)"
    f" VALUES ({', '.join('?' * (_ALERT_FIELD_COUNT + 1))})"
)


def _trigger(conn: sqlite3.Connection, alert: Alert, key: str) -> tuple[Alert, bool]:
    first = alert.first_ms if alert.first_ms is not None else alert.raised_ms
    last = alert.last_ms if alert.last_ms is not None else first
    row = fetch_one(
        conn,
        _UPDATE_INCIDENT,
        (
            alert.count,
            first,
            last,
            alert.lat,
            alert.lon,
            alert.speed_kmh,
            alert.detail,
            alert.severity.value,
            alert.rule_id,
            alert.updated_ms if alert.updated_ms is not None else alert.raised_ms,
            key,
        ),
    )
    if row is not None:
        updated = to_alert(row)
        append_in(conn, (updated,))
        return updated, False
    new = dataclasses.replace(alert, first_ms=first, last_ms=last)
    conn.execute(_INSERT_ALERT, (*alert_values(new), key))
    append_in(conn, (new,))
    return new, True


def _close_incident(conn: sqlite3.Connection, key: str, at_ms: int, reason: str) -> Alert | None:
    row = fetch_one(
        conn,
        "UPDATE alerts SET cleared_ms = ?, cleared_by = 'system', close_reason = ?,"
        f" updated_ms = ?, open_key = NULL WHERE open_key = ? RETURNING {ALERT_COLUMNS}",
        (at_ms, reason, at_ms, key),
    )
    if row is None:
        return None
    closed = to_alert(row)
    append_in(conn, (closed,))
    return closed


def _alert_row(conn: sqlite3.Connection, fleet_id: str, alert_id: str) -> Alert:
    row = fetch_one(
        conn,
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ? AND fleet_id = ?",
        (alert_id, fleet_id),
    )
    if row is None:
        raise NotFound(f"alert {alert_id}")
    return to_alert(row)


def _acknowledge(
    conn: sqlite3.Connection, fleet_id: str, alert_id: str, by: str, at_ms: int, note: str
) -> Alert:
    changed = conn.execute(
        "UPDATE alerts SET acked_ms = ?, acked_by = ?, ack_note = ?, updated_ms = ?"
        " WHERE id = ? AND fleet_id = ? AND acked_ms IS NULL",
        (at_ms, by, note, at_ms, alert_id, fleet_id),
    ).rowcount
    alert = _alert_row(conn, fleet_id, alert_id)
    if changed:
        append_in(conn, (alert,))
    return alert


def _link_case(conn: sqlite3.Connection, fleet_id: str, alert_id: str, case_id: str) -> Alert:
    conn.execute(
        "UPDATE alerts SET theft_case_id = ? WHERE id = ? AND fleet_id = ?",
        (case_id, alert_id, fleet_id),
    )
    alert = _alert_row(conn, fleet_id, alert_id)
    append_in(conn, (alert,))
    return alert


def _insert_rules(conn: sqlite3.Connection, fleet_id: str, rules: Sequence[AlertRule]) -> None:
    require_fleet(conn, fleet_id)
    conn.executemany(
        "INSERT INTO alert_rules (id, fleet_id, created_ms, data) VALUES (?, ?, ?, ?)",
        [(r.id, r.fleet_id, r.created_ms, _json(r)) for r in rules],
    )


def _ensure_defaults(
    conn: sqlite3.Connection, fleet_id: str, rules: Sequence[AlertRule], at_ms: int
) -> bool:
    row = fetch_one(
        conn, "SELECT defaults_ms FROM tracking_policies WHERE fleet_id = ?", (fleet_id,)
    )
    if row is not None and row[0] is not None:
        return False
    _insert_rules(conn, fleet_id, rules)  # NotFound for a fleet that is gone
    conn.execute(
        "INSERT INTO tracking_policies (fleet_id, defaults_ms, data) VALUES (?, ?, ?)"
        " ON CONFLICT (fleet_id) DO UPDATE SET defaults_ms = excluded.defaults_ms",
        (fleet_id, at_ms, _json(TrackingPolicy(fleet_id=fleet_id))),
    )
    return True


def _put_policy(conn: sqlite3.Connection, policy: TrackingPolicy) -> TrackingPolicy:
    require_fleet(conn, policy.fleet_id)
    row = fetch_one(
        conn,
        "INSERT INTO tracking_policies (fleet_id, defaults_ms, data) VALUES (?, NULL, ?)"
        " ON CONFLICT (fleet_id) DO UPDATE SET data = excluded.data RETURNING defaults_ms",
        (policy.fleet_id, _json(dataclasses.replace(policy, defaults_ms=None))),
    )
    return dataclasses.replace(policy, defaults_ms=row[0] if row else None)


def _hold_values(hold: LegalHold) -> tuple[Any, ...]:
    return (hold.case_id, hold.fleet_id, hold.vehicle_id, hold.from_ms, hold.until_ms)


def _create_case(conn: sqlite3.Connection, case: TheftCase, hold: LegalHold) -> None:
    require_fleet(conn, case.fleet_id)
    conn.execute(  # the partial unique index refuses a second open case: Conflict
        "INSERT INTO theft_cases (id, fleet_id, vehicle_id, status, opened_ms, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (case.id, case.fleet_id, case.vehicle_id, case.status.value, case.opened_ms, _json(case)),
    )
    conn.execute(
        "INSERT INTO legal_holds (case_id, fleet_id, vehicle_id, from_ms, until_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        _hold_values(hold),
    )
    append_in(conn, (case,))


def _replace_case(conn: sqlite3.Connection, case: TheftCase, hold: LegalHold | None) -> None:
    changed = conn.execute(
        "UPDATE theft_cases SET status = ?, data = ? WHERE id = ? AND fleet_id = ?",
        (case.status.value, _json(case), case.id, case.fleet_id),
    ).rowcount
    if not changed:
        raise NotFound(f"theft case {case.id}")
    if hold is not None:
        conn.execute(
            "INSERT INTO legal_holds (case_id, fleet_id, vehicle_id, from_ms, until_ms)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET"
            " from_ms = excluded.from_ms, until_ms = excluded.until_ms",
            _hold_values(hold),
        )
    append_in(conn, (case,))
