"""Webhook endpoints and their deliveries on SQLite (tables: webhook_schema.WEBHOOK_DDL).

`enqueue` is one transaction: the endpoint's cursor moves (compare-and-set on the cursor it
was read at) and the deliveries it covers are inserted together, so a crash leaves either both
or neither, and a restart neither loses nor repeats a delivery. Claims and attempts are
compare-and-set updates too, so two gp8 processes never both take the same due delivery.
"""

from __future__ import annotations

import builtins
import dataclasses
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from storage.errors import NotFound
from storage.models import (
    DeliveryStatus,
    Page,
    StreamGap,
    StreamKind,
    WebhookDelivery,
    WebhookEndpoint,
)
from storage.pagination import decode_cursor, id_key, make_page, order_kind, page_limit
from storage.secrets import SecretBox, webhook_context
from storage.sqlite.db import Database
from storage.sqlite.query import after, fetch_all, fetch_one, get_one, keyset, require_fleet

Row = tuple[Any, ...]

ENDPOINT_COLUMNS = (
    "id, fleet_id, url, kinds, secret, enabled, cursor, disabled_reason,"
    " gap_after, gap_resumed, gap_ms, created_ms, updated_ms"
)
DELIVERY_COLUMNS = (
    "id, fleet_id, webhook_id, cursor, kind, payload, created_ms, updated_ms, next_attempt_ms,"
    " status, attempts, last_attempt_ms, last_status_code, last_error, delivered_ms"
)
_INSERT_ENDPOINT = f"INSERT INTO webhooks ({ENDPOINT_COLUMNS}) VALUES ({', '.join('?' * 13)})"
# OR IGNORE: the entry was queued already (by this process before a crash, or by another).
_INSERT_DELIVERY = (
    f"INSERT OR IGNORE INTO webhook_deliveries ({DELIVERY_COLUMNS}) VALUES ({', '.join('?' * 15)})"
)
_PENDING = DeliveryStatus.PENDING.value


class SqliteWebhooks:
    """The signing secret is sealed in the row (storage/secrets.py) and opened here, on read."""

    def __init__(self, db: Database, secrets: SecretBox) -> None:
        self._db = db
        self._secrets = secrets

    def _open(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        secret = self._secrets.open(endpoint.secret, webhook_context(endpoint.id))
        return dataclasses.replace(endpoint, secret=secret)

    async def create(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        sealed = self._secrets.seal(endpoint.secret, webhook_context(endpoint.id))
        await self._db.write(_insert_endpoint, dataclasses.replace(endpoint, secret=sealed))
        return endpoint

    async def get(self, fleet_id: str, webhook_id: str) -> WebhookEndpoint:
        return self._open(await self._db.read(_get_endpoint, fleet_id, webhook_id))

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[WebhookEndpoint]:
        limit = page_limit(limit)
        cond, params = after(["id"], id_key(cursor, "webhook"))
        sql = (
            f"SELECT {ENDPOINT_COLUMNS} FROM webhooks WHERE fleet_id = ?{cond} ORDER BY id LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, [fleet_id, *params, limit + 1])
        endpoints = [self._open(_to_endpoint(r)) for r in found]
        return make_page(endpoints, limit, "webhook", lambda e: (e.id,))

    async def update(
        self,
        fleet_id: str,
        webhook_id: str,
        *,
        at_ms: int,
        url: str | None = None,
        kinds: Sequence[StreamKind] | None = None,
        enabled: bool | None = None,
        disabled_reason: str | None = None,
        cursor: int | None = None,
    ) -> WebhookEndpoint:
        sets: list[str] = ["updated_ms = ?"]
        params: list[Any] = [at_ms]
        if url is not None:
            sets.append("url = ?")
            params.append(url)
        if kinds is not None:
            sets.append("kinds = ?")
            params.append(_kinds_json(kinds))
        if enabled is not None:
            sets.append("enabled = ?, disabled_reason = ?")
            params += [int(enabled), None if enabled else disabled_reason]
        if cursor is not None:
            sets.append("cursor = ?")
            params.append(cursor)
        return self._open(
            await self._db.write(_update_endpoint, fleet_id, webhook_id, sets, params)
        )

    async def delete(self, fleet_id: str, webhook_id: str) -> None:
        await self._db.write(_delete_endpoint, fleet_id, webhook_id)

    async def active(self, *, limit: int = 10_000) -> builtins.list[WebhookEndpoint]:
        sql = f"SELECT {ENDPOINT_COLUMNS} FROM webhooks WHERE enabled = 1 ORDER BY id LIMIT ?"
        found = await self._db.read(fetch_all, sql, (page_limit(limit),))
        return [self._open(_to_endpoint(r)) for r in found]

    async def enqueue(
        self,
        webhook_id: str,
        *,
        after: int,
        cursor: int,
        deliveries: Sequence[WebhookDelivery],
    ) -> bool:
        rows = [_delivery_values(d) for d in deliveries]
        return await self._db.write(_enqueue, webhook_id, after, cursor, rows)

    async def skip_gap(self, webhook_id: str, *, after: int, cursor: int, at_ms: int) -> bool:
        return await self._db.write(_skip_gap, webhook_id, after, cursor, at_ms)

    async def deliveries(
        self,
        fleet_id: str,
        webhook_id: str,
        *,
        status: DeliveryStatus | None = None,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> Page[WebhookDelivery]:
        limit = page_limit(limit)
        where = "webhook_id = ? AND fleet_id = ?"
        params: list[Any] = [webhook_id, fleet_id]
        if status is not None:
            where += " AND status = ?"
            params.append(status.value)
        # A delivery's stream cursor grows with the time its change happened: the time order.
        tag = order_kind("webhook_delivery", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int,))
        cond, key_params, order = keyset(["cursor"], key, newest_first=newest_first)
        sql = (
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {where}{cond}"
            f" ORDER BY {order} LIMIT ?"
        )
        found = await self._db.read(
            _deliveries, fleet_id, webhook_id, sql, [*params, *key_params, limit + 1]
        )
        return make_page([_to_delivery(r) for r in found], limit, tag, lambda d: (d.cursor,))

    async def due(
        self, webhook_id: str, now_ms: int, *, limit: int = 100
    ) -> builtins.list[WebhookDelivery]:
        sql = (
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"
            # The literal (not a parameter) lets SQLite use the partial index on pending rows.
            f" WHERE webhook_id = ? AND status = '{_PENDING}' AND next_attempt_ms <= ?"
            " ORDER BY next_attempt_ms LIMIT ?"
        )
        found = await self._db.read(fetch_all, sql, (webhook_id, now_ms, page_limit(limit)))
        return [_to_delivery(r) for r in found]

    async def claim(self, delivery_id: str, *, due_ms: int, until_ms: int) -> bool:
        return await self._db.write(_claim, delivery_id, due_ms, until_ms)

    async def record(
        self,
        delivery_id: str,
        *,
        at_ms: int,
        status: DeliveryStatus,
        next_attempt_ms: int | None,
        status_code: int | None,
        error: str | None,
    ) -> WebhookDelivery | None:
        return await self._db.write(
            _record, delivery_id, at_ms, status, next_attempt_ms, status_code, error
        )

    async def prune(self, before_ms: int) -> int:
        return await self._db.write(_prune, before_ms)


# --- rows <-> models ---------------------------------------------------------------------------


def _kinds_json(kinds: Sequence[StreamKind]) -> str:
    return orjson.dumps([k.value for k in kinds]).decode()


def _endpoint_values(endpoint: WebhookEndpoint) -> Row:
    gap = endpoint.gap
    return (
        endpoint.id,
        endpoint.fleet_id,
        endpoint.url,
        _kinds_json(endpoint.kinds),
        endpoint.secret,
        int(endpoint.enabled),
        endpoint.cursor,
        endpoint.disabled_reason,
        None if gap is None else gap.after_cursor,
        None if gap is None else gap.resumed_cursor,
        None if gap is None else gap.detected_ms,
        endpoint.created_ms,
        endpoint.updated_ms,
    )


def _to_endpoint(row: Row) -> WebhookEndpoint:
    (
        webhook_id,
        fleet_id,
        url,
        kinds,
        secret,
        enabled,
        cursor,
        disabled_reason,
        gap_after,
        gap_resumed,
        gap_ms,
        created_ms,
        updated_ms,
    ) = row
    return WebhookEndpoint(
        id=webhook_id,
        fleet_id=fleet_id,
        url=url,
        kinds=tuple(StreamKind(k) for k in orjson.loads(kinds)),
        secret=secret,
        created_ms=created_ms,
        updated_ms=updated_ms,
        enabled=bool(enabled),
        cursor=cursor,
        disabled_reason=disabled_reason,
        gap=None if gap_after is None else StreamGap(gap_after, gap_resumed, gap_ms),
    )


def _delivery_values(d: WebhookDelivery) -> Row:
    return (
        d.id,
        d.fleet_id,
        d.webhook_id,
        d.cursor,
        d.kind.value,
        d.payload,
        d.created_ms,
        d.updated_ms,
        d.next_attempt_ms,
        d.status.value,
        d.attempts,
        d.last_attempt_ms,
        d.last_status_code,
        d.last_error,
        d.delivered_ms,
    )


def _to_delivery(row: Row) -> WebhookDelivery:
    (
        delivery_id,
        fleet_id,
        webhook_id,
        cursor,
        kind,
        payload,
        created_ms,
        updated_ms,
        next_attempt_ms,
        status,
        attempts,
        last_attempt_ms,
        last_status_code,
        last_error,
        delivered_ms,
    ) = row
    return WebhookDelivery(
        id=delivery_id,
        fleet_id=fleet_id,
        webhook_id=webhook_id,
        cursor=cursor,
        kind=StreamKind(kind),
        payload=payload,
        created_ms=created_ms,
        updated_ms=updated_ms,
        next_attempt_ms=next_attempt_ms,
        status=DeliveryStatus(status),
        attempts=attempts,
        last_attempt_ms=last_attempt_ms,
        last_status_code=last_status_code,
        last_error=last_error,
        delivered_ms=delivered_ms,
    )


# --- run on the writer / reader thread ---------------------------------------------------------


def _get_endpoint(conn: sqlite3.Connection, fleet_id: str, webhook_id: str) -> WebhookEndpoint:
    sql = f"SELECT {ENDPOINT_COLUMNS} FROM webhooks WHERE id = ? AND fleet_id = ?"
    return get_one(conn, sql, (webhook_id, fleet_id), _to_endpoint, f"webhook {webhook_id}")


def _insert_endpoint(conn: sqlite3.Connection, endpoint: WebhookEndpoint) -> None:
    require_fleet(conn, endpoint.fleet_id)
    conn.execute(_INSERT_ENDPOINT, _endpoint_values(endpoint))


def _update_endpoint(
    conn: sqlite3.Connection, fleet_id: str, webhook_id: str, sets: list[str], params: list[Any]
) -> WebhookEndpoint:
    # The SET clauses come from the repository's own keywords, never from input.
    cursor = conn.execute(
        f"UPDATE webhooks SET {', '.join(sets)} WHERE id = ? AND fleet_id = ?",
        [*params, webhook_id, fleet_id],
    )
    if cursor.rowcount == 0:
        raise NotFound(f"webhook {webhook_id}")
    return _get_endpoint(conn, fleet_id, webhook_id)


def _delete_endpoint(conn: sqlite3.Connection, fleet_id: str, webhook_id: str) -> None:
    cursor = conn.execute(
        "DELETE FROM webhooks WHERE id = ? AND fleet_id = ?", (webhook_id, fleet_id)
    )
    if cursor.rowcount == 0:
        raise NotFound(f"webhook {webhook_id}")
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))


def _enqueue(
    conn: sqlite3.Connection, webhook_id: str, after: int, cursor: int, rows: list[Row]
) -> bool:
    moved = conn.execute(
        "UPDATE webhooks SET cursor = ? WHERE id = ? AND cursor = ? AND enabled = 1",
        (cursor, webhook_id, after),
    )
    if moved.rowcount == 0:
        return False  # nothing inserted: the cursor and its deliveries go together
    conn.executemany(_INSERT_DELIVERY, rows)
    return True


def _skip_gap(
    conn: sqlite3.Connection, webhook_id: str, after: int, cursor: int, at_ms: int
) -> bool:
    moved = conn.execute(
        "UPDATE webhooks SET cursor = ?, gap_after = ?, gap_resumed = ?, gap_ms = ?"
        " WHERE id = ? AND cursor = ?",
        (cursor, after, cursor, at_ms, webhook_id, after),
    )
    return moved.rowcount > 0


def _deliveries(
    conn: sqlite3.Connection, fleet_id: str, webhook_id: str, sql: str, params: list[Any]
) -> list[Row]:
    # NotFound for an endpoint of another fleet (or none), rather than an empty page.
    _get_endpoint(conn, fleet_id, webhook_id)
    return fetch_all(conn, sql, params)


def _claim(conn: sqlite3.Connection, delivery_id: str, due_ms: int, until_ms: int) -> bool:
    claimed = conn.execute(
        "UPDATE webhook_deliveries SET next_attempt_ms = ?"
        " WHERE id = ? AND status = ? AND next_attempt_ms = ?",
        (until_ms, delivery_id, _PENDING, due_ms),
    )
    return claimed.rowcount > 0


def _record(
    conn: sqlite3.Connection,
    delivery_id: str,
    at_ms: int,
    status: DeliveryStatus,
    next_attempt_ms: int | None,
    status_code: int | None,
    error: str | None,
) -> WebhookDelivery | None:
    changed = conn.execute(
        "UPDATE webhook_deliveries SET status = ?, next_attempt_ms = ?, attempts = attempts + 1,"
        " last_attempt_ms = ?, last_status_code = ?, last_error = ?, updated_ms = ?,"
        " delivered_ms = CASE WHEN ? THEN ? ELSE delivered_ms END"
        " WHERE id = ? AND status = ?",
        (
            status.value,
            next_attempt_ms,
            at_ms,
            status_code,
            error,
            at_ms,
            status is DeliveryStatus.DELIVERED,
            at_ms,
            delivery_id,
            _PENDING,
        ),
    )
    if changed.rowcount == 0:
        return None
    row = fetch_one(
        conn, f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?", (delivery_id,)
    )
    return None if row is None else _to_delivery(row)


def _prune(conn: sqlite3.Connection, before_ms: int) -> int:
    cursor = conn.execute(
        f"DELETE FROM webhook_deliveries WHERE status <> '{_PENDING}' AND updated_ms < ?",
        (before_ms,),
    )
    return cursor.rowcount
