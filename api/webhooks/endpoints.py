"""Creating and changing a fleet's webhooks for the API (api/routes/webhooks.py)."""

from __future__ import annotations

from collections.abc import Sequence

from api.webhooks.signing import new_secret
from storage.models import StreamKind, WebhookEndpoint, new_id
from storage.repository import Store


async def create_webhook(
    store: Store, fleet_id: str, *, url: str, kinds: Sequence[StreamKind], now_ms: int
) -> WebhookEndpoint:
    """A new enabled webhook with a fresh secret. It gets what the fleet stores from now on:
    its cursor starts at the stream's head, not at what is still in the stream's window."""
    endpoint = WebhookEndpoint(
        id=new_id("whk"),
        fleet_id=fleet_id,
        url=url,
        kinds=tuple(kinds),
        secret=new_secret(),
        created_ms=now_ms,
        updated_ms=now_ms,
        cursor=await store.stream.head(fleet_id),
    )
    return await store.webhooks.create(endpoint)


async def update_webhook(
    store: Store,
    current: WebhookEndpoint,
    *,
    url: str | None,
    kinds: Sequence[StreamKind] | None,
    enabled: bool | None,
    now_ms: int,
) -> WebhookEndpoint:
    """Change what is given. A disabled webhook enabled again starts from now: what was stored
    while it was off is not sent (its deliveries queued before, still pending, go on)."""
    cursor = None
    if enabled and not current.enabled:
        cursor = await store.stream.head(current.fleet_id)
    return await store.webhooks.update(
        current.fleet_id,
        current.id,
        at_ms=now_ms,
        url=url,
        kinds=kinds,
        enabled=enabled,
        cursor=cursor,
    )
