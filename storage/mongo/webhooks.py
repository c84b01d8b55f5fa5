"""Webhook endpoints and their deliveries on MongoDB (indexes: webhook_schema.WEBHOOK_INDEXES).

Documents never leave this module. Without a transaction, `enqueue` writes in the order that
fails safe: the deliveries first (unique on (webhook_id, cursor), so inserting them again
after a crash keeps the first copy), then the compare-and-set of the endpoint's cursor. A
crash between the two leaves deliveries whose cursor was not moved: the next pass reads the
same entries again and finds them queued — no loss, no repeat. When the compare-and-set
fails because the endpoint is gone (deleted, fleet erased), the deliveries just inserted are
removed again (also when it was disabled meanwhile); when another process moved the cursor
first, they are the ones that process queued too (same keys), so nothing is left twice.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from typing import Any

from storage.errors import NotFound
from storage.models import (
    DeliveryStatus,
    Page,
    StreamGap,
    StreamKind,
    WebhookDelivery,
    WebhookEndpoint,
)
from storage.mongo.db import BULK_DELETE_TIMEOUT_S, Doc, MongoDb, insert_new
from storage.mongo.query import ASC, after, keyset
from storage.mongo.webhook_schema import WEBHOOK_DELIVERIES, WEBHOOKS
from storage.pagination import decode_cursor, id_key, make_page, order_kind, page_limit
from storage.secrets import SecretBox, webhook_context

_PENDING = DeliveryStatus.PENDING.value


class MongoWebhooks:
    """The signing secret is sealed in the document (storage/secrets.py), opened here."""

    def __init__(self, db: MongoDb, secrets: SecretBox) -> None:
        self._db = db
        self._secrets = secrets

    def _to_endpoint(self, doc: Doc) -> WebhookEndpoint:
        endpoint = to_endpoint(doc)
        secret = self._secrets.open(endpoint.secret, webhook_context(endpoint.id))
        return dataclasses.replace(endpoint, secret=secret)

    def _col(self, name: str) -> Any:
        return self._db.collection(name)

    async def create(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        await self._db.require_fleet(endpoint.fleet_id)
        sealed = self._secrets.seal(endpoint.secret, webhook_context(endpoint.id))
        doc = endpoint_doc(dataclasses.replace(endpoint, secret=sealed))
        await self._db.call(self._col(WEBHOOKS).insert_one(doc))
        return endpoint

    async def get(self, fleet_id: str, webhook_id: str) -> WebhookEndpoint:
        doc = await self._db.find_one(
            WEBHOOKS, {"_id": webhook_id, "fleet_id": fleet_id}, f"webhook {webhook_id}"
        )
        return self._to_endpoint(doc)

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[WebhookEndpoint]:
        limit = page_limit(limit)
        query: Doc = {"fleet_id": fleet_id, **after(["_id"], id_key(cursor, "webhook"))}
        found = await self._db.find(WEBHOOKS, query, [("_id", ASC)], limit + 1)
        endpoints = [self._to_endpoint(d) for d in found]
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
        changes: Doc = {"updated_ms": at_ms}
        if url is not None:
            changes["url"] = url
        if kinds is not None:
            changes["kinds"] = [k.value for k in kinds]
        if enabled is not None:
            changes["enabled"] = enabled
            changes["disabled_reason"] = None if enabled else disabled_reason
        if cursor is not None:
            changes["cursor"] = cursor
        result = await self._db.call(
            self._col(WEBHOOKS).update_one(
                {"_id": webhook_id, "fleet_id": fleet_id}, {"$set": changes}
            )
        )
        if result.matched_count == 0:
            raise NotFound(f"webhook {webhook_id}")
        return await self.get(fleet_id, webhook_id)

    async def delete(self, fleet_id: str, webhook_id: str) -> None:
        # The endpoint first: once it is gone no delivery service queues for it any more.
        result = await self._db.call(
            self._col(WEBHOOKS).delete_one({"_id": webhook_id, "fleet_id": fleet_id})
        )
        if result.deleted_count == 0:
            raise NotFound(f"webhook {webhook_id}")
        await self._db.call(
            self._col(WEBHOOK_DELIVERIES).delete_many({"webhook_id": webhook_id}),
            timeout_s=BULK_DELETE_TIMEOUT_S,
        )

    async def active(self, *, limit: int = 10_000) -> builtins.list[WebhookEndpoint]:
        found = await self._db.find(WEBHOOKS, {"enabled": True}, [("_id", ASC)], page_limit(limit))
        return [self._to_endpoint(d) for d in found]

    async def enqueue(
        self,
        webhook_id: str,
        *,
        after: int,
        cursor: int,
        deliveries: Sequence[WebhookDelivery],
    ) -> bool:
        if deliveries:
            await self._db.call(
                insert_new(self._col(WEBHOOK_DELIVERIES), [delivery_doc(d) for d in deliveries])
            )
        result = await self._db.call(
            self._col(WEBHOOKS).update_one(
                {"_id": webhook_id, "cursor": after, "enabled": True},
                {"$set": {"cursor": cursor}},
            )
        )
        if result.matched_count:
            return True
        if deliveries:
            endpoint = await self._db.call(self._col(WEBHOOKS).find_one({"_id": webhook_id}))
            if endpoint is None or not endpoint.get("enabled"):
                # Deleted or disabled meanwhile: take back what was just inserted (and never
                # attempted), which no cursor covers.
                await self._db.call(
                    self._col(WEBHOOK_DELIVERIES).delete_many(
                        {
                            "webhook_id": webhook_id,
                            "cursor": {"$in": [d.cursor for d in deliveries]},
                            "attempts": 0,
                        }
                    )
                )
        return False

    async def skip_gap(self, webhook_id: str, *, after: int, cursor: int, at_ms: int) -> bool:
        gap = {"after_cursor": after, "resumed_cursor": cursor, "detected_ms": at_ms}
        result = await self._db.call(
            self._col(WEBHOOKS).update_one(
                {"_id": webhook_id, "cursor": after}, {"$set": {"cursor": cursor, "gap": gap}}
            )
        )
        return bool(result.matched_count)

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
        # NotFound for an endpoint of another fleet (or none), rather than an empty page.
        await self.get(fleet_id, webhook_id)
        query: Doc = {"webhook_id": webhook_id, "fleet_id": fleet_id}
        if status is not None:
            query["status"] = status.value
        # A delivery's stream cursor grows with the time its change happened: the time order.
        tag = order_kind("webhook_delivery", newest_first)
        key = None if cursor is None else decode_cursor(cursor, tag, (int,))
        seek, sort = keyset(["cursor"], key, newest_first=newest_first)
        found = await self._db.find(WEBHOOK_DELIVERIES, {**query, **seek}, sort, limit + 1)
        return make_page([to_delivery(d) for d in found], limit, tag, lambda d: (d.cursor,))

    async def due(
        self, webhook_id: str, now_ms: int, *, limit: int = 100
    ) -> builtins.list[WebhookDelivery]:
        found = await self._db.find(
            WEBHOOK_DELIVERIES,
            {"webhook_id": webhook_id, "status": _PENDING, "next_attempt_ms": {"$lte": now_ms}},
            [("next_attempt_ms", ASC)],
            page_limit(limit),
        )
        return [to_delivery(d) for d in found]

    async def claim(self, delivery_id: str, *, due_ms: int, until_ms: int) -> bool:
        result = await self._db.call(
            self._col(WEBHOOK_DELIVERIES).update_one(
                {"_id": delivery_id, "status": _PENDING, "next_attempt_ms": due_ms},
                {"$set": {"next_attempt_ms": until_ms}},
            )
        )
        return bool(result.modified_count)

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
        changes: Doc = {
            "status": status.value,
            "next_attempt_ms": next_attempt_ms,
            "last_attempt_ms": at_ms,
            "last_status_code": status_code,
            "last_error": error,
            "updated_ms": at_ms,
        }
        if status is DeliveryStatus.DELIVERED:
            changes["delivered_ms"] = at_ms
        result = await self._db.call(
            self._col(WEBHOOK_DELIVERIES).update_one(
                {"_id": delivery_id, "status": _PENDING},
                {"$set": changes, "$inc": {"attempts": 1}},
            )
        )
        if not result.matched_count:
            return None
        doc = await self._db.call(self._col(WEBHOOK_DELIVERIES).find_one({"_id": delivery_id}))
        return None if doc is None else to_delivery(doc)

    async def prune(self, before_ms: int) -> int:
        result = await self._db.call(
            self._col(WEBHOOK_DELIVERIES).delete_many(
                {"status": {"$ne": _PENDING}, "updated_ms": {"$lt": before_ms}}
            ),
            timeout_s=BULK_DELETE_TIMEOUT_S,
        )
        deleted: int = result.deleted_count
        return deleted


# --- documents <-> models ----------------------------------------------------------------------


def endpoint_doc(endpoint: WebhookEndpoint) -> Doc:
    gap = endpoint.gap
    return {
        "_id": endpoint.id,
        "fleet_id": endpoint.fleet_id,
        "url": endpoint.url,
        "kinds": [k.value for k in endpoint.kinds],
        "secret": endpoint.secret,
        "enabled": endpoint.enabled,
        "cursor": endpoint.cursor,
        "disabled_reason": endpoint.disabled_reason,
        "gap": None
        if gap is None
        else {
            "after_cursor": gap.after_cursor,
            "resumed_cursor": gap.resumed_cursor,
            "detected_ms": gap.detected_ms,
        },
        "created_ms": endpoint.created_ms,
        "updated_ms": endpoint.updated_ms,
    }


def to_endpoint(doc: Doc) -> WebhookEndpoint:
    gap = doc.get("gap")
    return WebhookEndpoint(
        id=doc["_id"],
        fleet_id=doc["fleet_id"],
        url=doc["url"],
        kinds=tuple(StreamKind(k) for k in doc["kinds"]),
        secret=doc["secret"],
        created_ms=doc["created_ms"],
        updated_ms=doc["updated_ms"],
        enabled=bool(doc["enabled"]),
        cursor=int(doc["cursor"]),
        disabled_reason=doc.get("disabled_reason"),
        gap=None
        if gap is None
        else StreamGap(gap["after_cursor"], gap["resumed_cursor"], gap["detected_ms"]),
    )


def delivery_doc(d: WebhookDelivery) -> Doc:
    return {
        "_id": d.id,
        "fleet_id": d.fleet_id,
        "webhook_id": d.webhook_id,
        "cursor": d.cursor,
        "kind": d.kind.value,
        "payload": d.payload,
        "created_ms": d.created_ms,
        "updated_ms": d.updated_ms,
        "next_attempt_ms": d.next_attempt_ms,
        "status": d.status.value,
        "attempts": d.attempts,
        "last_attempt_ms": d.last_attempt_ms,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "delivered_ms": d.delivered_ms,
    }


def to_delivery(doc: Doc) -> WebhookDelivery:
    return WebhookDelivery(
        id=doc["_id"],
        fleet_id=doc["fleet_id"],
        webhook_id=doc["webhook_id"],
        cursor=int(doc["cursor"]),
        kind=StreamKind(doc["kind"]),
        payload=doc["payload"],
        created_ms=doc["created_ms"],
        updated_ms=doc["updated_ms"],
        next_attempt_ms=doc.get("next_attempt_ms"),
        status=DeliveryStatus(doc["status"]),
        attempts=int(doc["attempts"]),
        last_attempt_ms=doc.get("last_attempt_ms"),
        last_status_code=doc.get("last_status_code"),
        last_error=doc.get("last_error"),
        delivered_ms=doc.get("delivered_ms"),
    )
