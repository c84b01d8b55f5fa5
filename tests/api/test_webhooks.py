"""The webhooks API: create (secret shown once), read, change, delete, list deliveries; roles,
validation of the URL (SSRF) and kinds, and another fleet's webhooks answering 404."""

from __future__ import annotations

import base64

import httpx
import pytest

from storage.models import DeliveryStatus, StreamKind, WebhookDelivery, new_id
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, FleetFixture, bearer

URL = "https://hooks.example.com/gp8"


async def create(client: httpx.AsyncClient, fleet: FleetFixture, **body: object) -> dict:  # type: ignore[type-arg]
    r = await client.post("/v1/webhooks", json={"url": URL, **body}, headers=fleet.h("admin"))
    assert r.status_code == 201, r.text
    created: dict = r.json()  # type: ignore[type-arg]
    return created


async def test_create_webhook_returns_secret_once(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post("/v1/webhooks", json={"url": URL}, headers=fleet_a.h("admin"))
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["id"].startswith("whk_")
    assert body["url"] == URL
    assert body["kinds"] == ["alert", "theft_case"]  # the default
    assert body["enabled"] is True
    assert body["status"] == {
        "state": "active",
        "cursor": body["status"]["cursor"],
        "disabled_reason": None,
        "data_gap": None,
    }
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32

    r = await client.get(f"/v1/webhooks/{body['id']}", headers=fleet_a.h("viewer"))
    assert r.status_code == 200
    assert "secret" not in r.json() and secret not in r.text
    assert {k: v for k, v in r.json().items()} == {k: v for k, v in body.items() if k != "secret"}
    r = await client.get("/v1/webhooks", headers=fleet_a.h("viewer"))
    assert [w["id"] for w in r.json()["data"]] == [body["id"]]
    assert secret not in r.text


async def test_create_webhook_kinds(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    body = await create(client, fleet_a, kinds=["position", "command", "position"])
    assert body["kinds"] == ["position", "command"]  # duplicates dropped, order kept


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "url"),
        ({"url": "http://127.0.0.1:8080/hook"}, "url"),
        ({"url": "http://[::1]/hook"}, "url"),
        ({"url": "http://10.1.2.3/hook"}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "http://localhost:9000/"}, "url"),
        ({"url": "http://mongo:27017/"}, "url"),
        ({"url": "https://hooks.example.com/" + "a" * 2100}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": URL, "kinds": []}, "kinds"),
        ({"url": URL, "kinds": ["alert", "weather"]}, "kinds"),
        ({"url": URL, "secret": "mine"}, "secret"),
    ],
)
async def test_create_webhook_invalid_422(
    client: httpx.AsyncClient,
    fleet_a: FleetFixture,
    body: dict,
    field: str,  # type: ignore[type-arg]
) -> None:
    r = await client.post("/v1/webhooks", json=body, headers=fleet_a.h("admin"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in r.text
    listing = await client.get("/v1/webhooks", headers=fleet_a.h("admin"))
    assert listing.json()["data"] == []


@pytest.mark.parametrize("role", ["manager", "viewer"])
async def test_webhook_writes_need_admin_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture, role: str
) -> None:
    r = await client.post("/v1/webhooks", json={"url": URL}, headers=fleet_a.h(role))
    assert r.status_code == 403
    hook = await create(client, fleet_a)
    url = f"/v1/webhooks/{hook['id']}"
    r = await client.patch(url, json={"enabled": False}, headers=fleet_a.h(role))
    assert r.status_code == 403
    r = await client.delete(url, headers=fleet_a.h(role))
    assert r.status_code == 403
    r = await client.get(url, headers=fleet_a.h(role))
    assert r.status_code == 200 and r.json()["enabled"] is True
    r = await client.get(f"{url}/deliveries", headers=fleet_a.h(role))
    assert r.status_code == 200


async def test_operator_key_gets_no_webhooks_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/webhooks", headers=bearer(OPERATOR_KEY))
    assert r.status_code == 403
    r = await client.post("/v1/webhooks", json={"url": URL}, headers=bearer(OPERATOR_KEY))
    assert r.status_code == 403


async def test_update_webhook(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    hook = await create(client, fleet_a)
    url = f"/v1/webhooks/{hook['id']}"
    r = await client.patch(
        url,
        json={"url": "https://other.example.org/in", "kinds": ["event"]},
        headers=fleet_a.h("admin"),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["url"], r.json()["kinds"]) == ("https://other.example.org/in", ["event"])
    r = await client.patch(url, json={"enabled": False}, headers=fleet_a.h("admin"))
    assert (r.json()["enabled"], r.json()["status"]["state"]) == (False, "disabled")
    r = await client.patch(url, json={"enabled": True}, headers=fleet_a.h("admin"))
    assert (r.json()["enabled"], r.json()["status"]["state"]) == (True, "active")
    r = await client.patch(url, json={"url": "http://192.168.1.1/"}, headers=fleet_a.h("admin"))
    assert r.status_code == 422
    r = await client.patch(url, json={"kinds": []}, headers=fleet_a.h("admin"))
    assert r.status_code == 422
    r = await client.get(url, headers=fleet_a.h("admin"))
    assert r.json()["url"] == "https://other.example.org/in"


async def test_delete_webhook(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    hook = await create(client, fleet_a)
    url = f"/v1/webhooks/{hook['id']}"
    r = await client.delete(url, headers=fleet_a.h("admin"))
    assert r.status_code == 204
    for method in ("GET", "DELETE", "PATCH"):
        r = await client.request(method, url, headers=fleet_a.h("admin"), json={})
        assert r.status_code == 404, method
    r = await client.get(f"{url}/deliveries", headers=fleet_a.h("admin"))
    assert r.status_code == 404


async def test_webhook_writes_are_in_access_log(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    hook = await create(client, fleet_a)
    await client.patch(
        f"/v1/webhooks/{hook['id']}", json={"enabled": False}, headers=fleet_a.h("admin")
    )
    await client.delete(f"/v1/webhooks/{hook['id']}", headers=fleet_a.h("admin"))
    r = await client.get("/v1/access-log", headers=fleet_a.h("admin"))
    entries = [e for e in r.json()["data"] if e["resource"] == "webhook"]
    assert [(e["action"], e["resource_id"]) for e in entries] == [
        ("create", hook["id"]),
        ("update", hook["id"]),
        ("delete", hook["id"]),
    ]


@pytest.mark.parametrize("role", ["admin", "manager", "viewer"])
async def test_other_fleet_webhook_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture, role: str
) -> None:
    theirs = await create(client, fleet_b, kinds=["alert"])
    url = f"/v1/webhooks/{theirs['id']}"
    for method, path, kwargs in [
        ("GET", url, {}),
        ("PATCH", url, {"json": {"enabled": False}}),
        ("PATCH", url, {"json": {"url": "https://evil.example.net/"}}),
        ("DELETE", url, {}),
        ("GET", f"{url}/deliveries", {}),
    ]:
        r = await client.request(method, path, headers=fleet_a.h(role), **kwargs)
        assert r.status_code == 404, (method, path, r.text)
        assert set(r.json()) == {"type", "title", "status", "detail", "instance"}
        assert "hooks.example.com" not in r.text
    r = await client.get("/v1/webhooks", headers=fleet_a.h(role))
    assert r.json()["data"] == []
    # Nothing of B changed.
    r = await client.get(url, headers=fleet_b.h("viewer"))
    assert (r.json()["url"], r.json()["enabled"]) == (URL, True)


async def test_list_deliveries_newest_first_paginated(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture
) -> None:
    hook = await create(client, fleet_a)
    base = hook["status"]["cursor"]
    made = [
        WebhookDelivery(
            id=new_id("msg"),
            fleet_id=fleet_a.id,
            webhook_id=hook["id"],
            cursor=base + i,
            kind=StreamKind.ALERT,
            payload="{}",
            created_ms=1_714_564_800_000 + i,
            updated_ms=1_714_564_800_000 + i,
            next_attempt_ms=1_714_564_800_000 + i,
        )
        for i in (1, 2, 3)
    ]
    assert await store.webhooks.enqueue(hook["id"], after=base, cursor=base + 3, deliveries=made)
    await store.webhooks.record(
        made[0].id,
        at_ms=1_714_564_801_000,
        status=DeliveryStatus.PENDING,
        next_attempt_ms=1_714_564_806_000,
        status_code=503,
        error="HTTP 503",
    )
    url = f"/v1/webhooks/{hook['id']}/deliveries"
    r = await client.get(url, params={"limit": 2}, headers=fleet_a.h("viewer"))
    assert r.status_code == 200, r.text
    page = r.json()
    assert [d["id"] for d in page["data"]] == [made[2].id, made[1].id]
    r = await client.get(
        url, params={"limit": 2, "cursor": page["next_cursor"]}, headers=fleet_a.h("viewer")
    )
    (oldest,) = r.json()["data"]
    assert r.json()["next_cursor"] is None
    assert oldest == {
        "id": made[0].id,
        "webhook_id": hook["id"],
        "kind": "alert",
        "cursor": base + 1,
        "status": "pending",
        "attempts": 1,
        "next_attempt_at": "2024-05-01T12:00:06.000Z",
        "last_attempt_at": "2024-05-01T12:00:01.000Z",
        "last_status_code": 503,
        "last_error": "HTTP 503",
        "created_at": "2024-05-01T12:00:00.001Z",
        "updated_at": "2024-05-01T12:00:01.000Z",
        "delivered_at": None,
    }
    r = await client.get(url, params={"status": "delivered"}, headers=fleet_a.h("viewer"))
    assert r.json()["data"] == []
    r = await client.get(url, params={"cursor": "bogus"}, headers=fleet_a.h("viewer"))
    assert r.status_code == 400
