"""Contract: webhook endpoints, their stream cursors and deliveries, on each engine.

Queueing moves the cursor and adds the deliveries together (compare-and-set on the cursor);
claims and attempts are compare-and-set; another fleet's endpoint does not exist; erasing a
fleet leaves nothing of its webhooks.
"""

from __future__ import annotations

import dataclasses

import pytest

from storage.errors import InvalidCursor, NotFound
from storage.models import (
    DeliveryStatus,
    Fleet,
    StreamGap,
    StreamKind,
    WebhookDelivery,
    WebhookEndpoint,
    new_id,
)
from storage.repository import Store

T0 = 1_714_564_800_000


def endpoint(fleet_id: str, *, cursor: int = 0, **overrides: object) -> WebhookEndpoint:
    base = WebhookEndpoint(
        id=new_id("whk"),
        fleet_id=fleet_id,
        url="https://hooks.example.com/gp8",
        kinds=(StreamKind.ALERT, StreamKind.THEFT_CASE),
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        created_ms=T0,
        updated_ms=T0,
        cursor=cursor,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def delivery(hook: WebhookEndpoint, cursor: int, *, due_ms: int = T0) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id("msg"),
        fleet_id=hook.fleet_id,
        webhook_id=hook.id,
        cursor=cursor,
        kind=StreamKind.ALERT,
        payload=f'{{"type":"alert","timestamp":"2024-05-01T12:00:00.000Z","data":{{"n":{cursor}}}}}',
        created_ms=due_ms,
        updated_ms=due_ms,
        next_attempt_ms=due_ms,
    )


async def queued(store: Store, hook: WebhookEndpoint, *cursors: int) -> list[WebhookDelivery]:
    """Queue one delivery per cursor, moving the endpoint's cursor from where it is."""
    current = await store.webhooks.get(hook.fleet_id, hook.id)
    made = [delivery(hook, c) for c in cursors]
    assert await store.webhooks.enqueue(
        hook.id, after=current.cursor, cursor=max(cursors), deliveries=made
    )
    return made


async def test_create_get_list_endpoints(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    made = [await store.webhooks.create(endpoint(fleet.id)) for _ in range(3)]
    hooks = sorted(made, key=lambda e: e.id)  # ids sort by creation time, to the millisecond
    await store.webhooks.create(endpoint(other_fleet.id))
    assert await store.webhooks.get(fleet.id, hooks[0].id) == hooks[0]
    first = await store.webhooks.list(fleet.id, limit=2)
    assert first.items == hooks[:2] and first.next_cursor is not None
    rest = await store.webhooks.list(fleet.id, cursor=first.next_cursor, limit=2)
    assert rest.items == hooks[2:] and rest.next_cursor is None


async def test_create_endpoint_of_missing_fleet_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.webhooks.create(endpoint("flt_missing"))


async def test_other_fleet_endpoint_not_found(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    await queued(store, hook, 5)
    with pytest.raises(NotFound):
        await store.webhooks.get(other_fleet.id, hook.id)
    with pytest.raises(NotFound):
        await store.webhooks.update(other_fleet.id, hook.id, at_ms=T0, url="https://x.example")
    with pytest.raises(NotFound):
        await store.webhooks.delete(other_fleet.id, hook.id)
    with pytest.raises(NotFound):
        await store.webhooks.deliveries(other_fleet.id, hook.id)
    assert (await store.webhooks.list(other_fleet.id)).items == []
    assert (await store.webhooks.get(fleet.id, hook.id)).url == hook.url  # unchanged


async def test_update_endpoint_fields(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    changed = await store.webhooks.update(
        fleet.id, hook.id, at_ms=T0 + 1, url="https://b.example/x", kinds=[StreamKind.POSITION]
    )
    assert changed == dataclasses.replace(
        hook, url="https://b.example/x", kinds=(StreamKind.POSITION,), updated_ms=T0 + 1
    )
    off = await store.webhooks.update(
        fleet.id, hook.id, at_ms=T0 + 2, enabled=False, disabled_reason="410 Gone"
    )
    assert (off.enabled, off.disabled_reason) == (False, "410 Gone")
    on = await store.webhooks.update(fleet.id, hook.id, at_ms=T0 + 3, enabled=True, cursor=42)
    assert (on.enabled, on.disabled_reason, on.cursor) == (True, None, 42)
    assert on.secret == hook.secret and on.created_ms == hook.created_ms


async def test_active_lists_enabled_endpoints_of_every_fleet(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    a = await store.webhooks.create(endpoint(fleet.id))
    b = await store.webhooks.create(endpoint(other_fleet.id))
    await store.webhooks.create(endpoint(fleet.id, enabled=False))
    assert [e.id for e in await store.webhooks.active()] == sorted([a.id, b.id])


async def test_enqueue_moves_cursor_with_deliveries(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id, cursor=10))
    first = [delivery(hook, 11), delivery(hook, 13)]
    assert await store.webhooks.enqueue(hook.id, after=10, cursor=15, deliveries=first)
    assert (await store.webhooks.get(fleet.id, hook.id)).cursor == 15
    # A stale cursor (another process moved it): refused.
    assert not await store.webhooks.enqueue(hook.id, after=10, cursor=15, deliveries=[])
    # A page with nothing for this endpoint still moves the cursor.
    assert await store.webhooks.enqueue(hook.id, after=15, cursor=20, deliveries=[])
    page = await store.webhooks.deliveries(fleet.id, hook.id)
    assert [d.cursor for d in page.items] == [13, 11]  # newest first
    assert page.items[1] == first[0]


async def test_enqueue_same_entry_twice_keeps_the_first(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    first = delivery(hook, 7)
    assert await store.webhooks.enqueue(hook.id, after=0, cursor=7, deliveries=[first])
    # As after a crash between the two writes of an engine without transactions: the same
    # entry queued again, under a new id; the first copy (and its webhook-id) stays.
    await store.webhooks.update(fleet.id, hook.id, at_ms=T0, cursor=0)
    again = delivery(hook, 7)
    assert await store.webhooks.enqueue(hook.id, after=0, cursor=7, deliveries=[again])
    assert [d.id for d in (await store.webhooks.deliveries(fleet.id, hook.id)).items] == [first.id]


async def test_enqueue_for_disabled_or_deleted_endpoint_keeps_nothing(
    store: Store, fleet: Fleet
) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id, enabled=False))
    assert not await store.webhooks.enqueue(
        hook.id, after=0, cursor=3, deliveries=[delivery(hook, 3)]
    )
    assert (await store.webhooks.deliveries(fleet.id, hook.id)).items == []
    assert await store.webhooks.due(hook.id, T0 + 10**9) == []
    await store.webhooks.delete(fleet.id, hook.id)
    assert not await store.webhooks.enqueue(
        hook.id, after=0, cursor=3, deliveries=[delivery(hook, 3)]
    )
    assert await store.webhooks.due(hook.id, T0 + 10**9) == []


async def test_skip_gap_records_it(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id, cursor=4))
    assert await store.webhooks.skip_gap(hook.id, after=4, cursor=90, at_ms=T0 + 5)
    assert not await store.webhooks.skip_gap(hook.id, after=4, cursor=95, at_ms=T0 + 6)
    stored = await store.webhooks.get(fleet.id, hook.id)
    assert (stored.cursor, stored.gap) == (90, StreamGap(4, 90, T0 + 5))


async def test_deliveries_paginate_newest_first_and_filter(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    made = await queued(store, hook, 1, 2, 3, 4, 5)
    await store.webhooks.record(
        made[1].id,
        at_ms=T0 + 1,
        status=DeliveryStatus.DELIVERED,
        next_attempt_ms=None,
        status_code=200,
        error=None,
    )
    first = await store.webhooks.deliveries(fleet.id, hook.id, limit=2)
    assert [d.cursor for d in first.items] == [5, 4] and first.next_cursor
    second = await store.webhooks.deliveries(fleet.id, hook.id, cursor=first.next_cursor, limit=2)
    third = await store.webhooks.deliveries(fleet.id, hook.id, cursor=second.next_cursor, limit=2)
    assert [d.cursor for d in second.items + third.items] == [3, 2, 1]
    assert third.next_cursor is None
    done = await store.webhooks.deliveries(fleet.id, hook.id, status=DeliveryStatus.DELIVERED)
    assert [d.id for d in done.items] == [made[1].id]
    with pytest.raises(InvalidCursor):
        await store.webhooks.deliveries(fleet.id, hook.id, cursor="garbage")


async def test_due_claim_record_attempts(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    other = await store.webhooks.create(endpoint(fleet.id))
    early, late = delivery(hook, 1, due_ms=T0), delivery(hook, 2, due_ms=T0 + 5_000)
    await store.webhooks.enqueue(hook.id, after=0, cursor=2, deliveries=[late, early])
    await queued(store, other, 1)
    assert [d.id for d in await store.webhooks.due(hook.id, T0 + 4_999)] == [early.id]
    assert [d.id for d in await store.webhooks.due(hook.id, T0 + 5_000)] == [early.id, late.id]
    assert len(await store.webhooks.due(hook.id, T0 + 5_000, limit=1)) == 1

    assert await store.webhooks.claim(early.id, due_ms=T0, until_ms=T0 + 60_000)
    assert not await store.webhooks.claim(early.id, due_ms=T0, until_ms=T0 + 60_000)  # taken
    assert [d.id for d in await store.webhooks.due(hook.id, T0 + 5_000)] == [late.id]
    # The lease runs out (the attempt's process died): due again, after the longer due one.
    assert [d.id for d in await store.webhooks.due(hook.id, T0 + 60_000)] == [late.id, early.id]

    failed = await store.webhooks.record(
        early.id,
        at_ms=T0 + 10,
        status=DeliveryStatus.PENDING,
        next_attempt_ms=T0 + 5_010,
        status_code=500,
        error="HTTP 500",
    )
    assert failed is not None
    assert (failed.attempts, failed.next_attempt_ms, failed.last_status_code) == (
        1,
        T0 + 5_010,
        500,
    )
    assert (failed.last_attempt_ms, failed.last_error, failed.status) == (
        T0 + 10,
        "HTTP 500",
        DeliveryStatus.PENDING,
    )
    done = await store.webhooks.record(
        early.id,
        at_ms=T0 + 5_020,
        status=DeliveryStatus.DELIVERED,
        next_attempt_ms=None,
        status_code=204,
        error=None,
    )
    assert done is not None
    assert (done.attempts, done.status, done.delivered_ms) == (
        2,
        DeliveryStatus.DELIVERED,
        T0 + 5_020,
    )
    assert (done.next_attempt_ms, done.last_error, done.payload) == (None, None, early.payload)
    # Final: a late report (a second process's attempt) changes nothing.
    late_report = await store.webhooks.record(
        early.id,
        at_ms=T0 + 6_000,
        status=DeliveryStatus.FAILED,
        next_attempt_ms=None,
        status_code=500,
        error="x",
    )
    assert late_report is None
    assert not await store.webhooks.claim(early.id, due_ms=T0 + 5_010, until_ms=T0 + 9_000)
    assert [d.id for d in await store.webhooks.due(hook.id, T0 + 10**9)] == [late.id]


async def test_prune_drops_old_final_deliveries_only(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    made = await queued(store, hook, 1, 2, 3)
    for d, status in ((made[0], DeliveryStatus.DELIVERED), (made[1], DeliveryStatus.FAILED)):
        await store.webhooks.record(
            d.id, at_ms=T0 + 1, status=status, next_attempt_ms=None, status_code=None, error=None
        )
    assert await store.webhooks.prune(T0 + 1) == 0
    assert await store.webhooks.prune(T0 + 2) == 2
    left = await store.webhooks.deliveries(fleet.id, hook.id)
    assert [d.id for d in left.items] == [made[2].id]  # pending: kept whatever its age


async def test_delete_endpoint_removes_its_deliveries(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    await queued(store, hook, 1, 2)
    await store.webhooks.delete(fleet.id, hook.id)
    with pytest.raises(NotFound):
        await store.webhooks.get(fleet.id, hook.id)
    assert await store.webhooks.due(hook.id, T0 + 10**9) == []
    with pytest.raises(NotFound):
        await store.webhooks.delete(fleet.id, hook.id)


async def test_fleet_erasure_removes_webhooks_and_deliveries(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    gone = await store.webhooks.create(endpoint(fleet.id))
    kept = await store.webhooks.create(endpoint(other_fleet.id))
    await queued(store, gone, 1, 2)
    await queued(store, kept, 1)
    await store.fleets.delete(fleet.id)
    assert [e.id for e in await store.webhooks.active()] == [kept.id]
    assert await store.webhooks.due(gone.id, T0 + 10**9) == []
    # Finished or not, an erased fleet's deliveries are gone: none left for retention to find.
    assert await store.webhooks.prune(T0 + 10**12) == 0
    assert len(await store.webhooks.due(kept.id, T0 + 10**9)) == 1
