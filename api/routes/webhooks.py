"""Per-fleet webhooks (docs/alerts.md, "Webhooks"): the endpoints and their deliveries.

Writes need the admin role, reads any role of the fleet. On a webhook's own routes the webhook
is looked up first: another fleet's is a 404 whatever the key's role, only then a low role 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from api.deps import Admin, AuditDep, FleetKey, StoreDep, Viewer
from api.params import Cursor, Id, Limit, Order, OrderQuery
from api.problems import invalid, problem_responses
from api.schemas.webhooks import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhooksPublic,
    WebhookUpdate,
)
from api.webhooks.endpoints import create_webhook, update_webhook
from api.webhooks.targets import TargetRefused, check_url
from storage.models import DeliveryStatus, Role, WebhookEndpoint, now_ms

router = APIRouter(
    prefix="/v1/webhooks",
    tags=["webhooks"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
_BODY_ERRORS = problem_responses(400, 413, 415)


async def webhook_for_admin(webhook_id: Id, caller: FleetKey, store: StoreDep) -> WebhookEndpoint:
    """The caller's fleet's webhook (404 otherwise), then the admin role (403)."""
    endpoint = await store.webhooks.get(caller.fleet_id, webhook_id)
    caller.require(Role.ADMIN)
    return endpoint


AdminWebhook = Annotated[WebhookEndpoint, Depends(webhook_for_admin)]


def _checked_url(request: Request, url: str) -> str:
    try:
        check_url(url, allow_private=bool(request.app.state.webhook_allow_private))
    except TargetRefused as exc:
        raise invalid(("body", "url"), str(exc), url) from None
    return url


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=_BODY_ERRORS,
)
async def create_webhook_route(
    body: WebhookCreate,
    caller: Admin,
    store: StoreDep,
    audit: AuditDep,
    request: Request,
    response: Response,
) -> WebhookCreated:
    """Create a webhook (admin); its signing secret is in this response only."""
    response.headers["Cache-Control"] = "no-store"  # it holds a secret
    endpoint = await create_webhook(
        store,
        caller.fleet_id,
        url=_checked_url(request, body.url),
        kinds=body.kinds,
        now_ms=now_ms(),
    )
    await audit("create", "webhook", endpoint.id, detail=",".join(body.kinds))
    return WebhookCreated(**WebhookPublic.of(endpoint).model_dump(), secret=endpoint.secret)


@router.get("", response_model=WebhooksPublic, responses=problem_responses(400))
async def list_webhooks(
    caller: Viewer, store: StoreDep, cursor: Cursor = None, limit: Limit = 100
) -> WebhooksPublic:
    """List the fleet's webhooks in creation order (never their secrets)."""
    page = await store.webhooks.list(caller.fleet_id, cursor=cursor, limit=limit)
    return WebhooksPublic(
        data=[WebhookPublic.of(e) for e in page.items], next_cursor=page.next_cursor
    )


@router.get("/{webhook_id}", response_model=WebhookPublic)
async def get_webhook(webhook_id: Id, caller: Viewer, store: StoreDep) -> WebhookPublic:
    """One webhook of the fleet, with its delivery status (cursor, data gap, why disabled)."""
    return WebhookPublic.of(await store.webhooks.get(caller.fleet_id, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses=_BODY_ERRORS)
async def update_webhook_route(
    body: WebhookUpdate,
    endpoint: AdminWebhook,
    store: StoreDep,
    audit: AuditDep,
    request: Request,
) -> WebhookPublic:
    """Change a webhook's url, kinds or enabled (admin)."""
    updated = await update_webhook(
        store,
        endpoint,
        url=None if body.url is None else _checked_url(request, body.url),
        kinds=body.kinds,
        enabled=body.enabled,
        now_ms=now_ms(),
    )
    changed = ",".join(sorted(body.model_dump(exclude_none=True)))
    await audit("update", "webhook", endpoint.id, detail=changed)
    return WebhookPublic.of(updated)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(endpoint: AdminWebhook, store: StoreDep, audit: AuditDep) -> None:
    """Delete a webhook and its deliveries (admin): nothing more is sent to it."""
    await store.webhooks.delete(endpoint.fleet_id, endpoint.id)
    await audit("delete", "webhook", endpoint.id)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=WebhookDeliveriesPublic,
    responses=problem_responses(400),
)
async def list_deliveries(
    webhook_id: Id,
    caller: Viewer,
    store: StoreDep,
    status_: Annotated[
        DeliveryStatus | None, Query(alias="status", description="Only in this state")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = Order.DESC,
) -> WebhookDeliveriesPublic:
    """The webhook's deliveries, newest first unless ``order=asc``: state, attempts, next
    attempt, last answer."""
    page = await store.webhooks.deliveries(
        caller.fleet_id,
        webhook_id,
        status=status_,
        cursor=cursor,
        limit=limit,
        newest_first=order.newest_first,
    )
    return WebhookDeliveriesPublic(
        data=[WebhookDeliveryPublic.of(d) for d in page.items], next_cursor=page.next_cursor
    )
