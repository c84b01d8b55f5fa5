"""Fleets (operator) and keys (operator, or an admin of the fleet)."""

from __future__ import annotations

from datetime import datetime

import httpx

from api.security import DAY_MS, EXPIRES_HEADER, hash_key
from api.times import datetime_to_ms, iso_ms
from storage.models import now_ms
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, FleetFixture, bearer

OP = bearer(OPERATOR_KEY)

# Every key belongs to a named person.
OWNER = {"name": "Ann Ops", "email": "ann@example.com"}


async def test_post_fleets_operator_201(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/fleets", json={"name": "  Acme Logistics "}, headers=OP)
    assert r.status_code == 201
    body = r.json()
    assert body["name"] == "Acme Logistics"
    assert body["id"].startswith("flt_") or body["id"]
    assert body["created_at"].endswith("Z")
    r = await client.get(f"/v1/fleets/{body['id']}", headers=OP)
    assert r.status_code == 200 and r.json() == body


async def test_post_fleets_empty_name_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/fleets", json={"name": "  "}, headers=OP)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "name"]


async def test_post_fleets_admin_403(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    r = await client.post("/v1/fleets", json={"name": "mine"}, headers=fleet_a.h("admin"))
    assert r.status_code == 403


async def test_get_fleets_operator_paginates(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        r = await client.post("/v1/fleets", json={"name": f"f{i}"}, headers=OP)
        ids.append(r.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = await client.get("/v1/fleets", params=params, headers=OP)
        assert r.status_code == 200
        page = r.json()
        assert len(page["data"]) <= 2
        seen += [f["id"] for f in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


async def test_get_fleets_admin_403(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    assert (await client.get("/v1/fleets", headers=fleet_a.h("admin"))).status_code == 403


async def test_get_fleet_own_key_200_other_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await client.get(f"/v1/fleets/{fleet_a.id}", headers=fleet_a.h("viewer"))
    assert r.status_code == 200 and r.json()["name"] == "alpha"
    r = await client.get(f"/v1/fleets/{fleet_b.id}", headers=fleet_a.h("admin"))
    assert r.status_code == 404
    assert "bravo" not in r.text


async def test_delete_fleet_operator_erases(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.delete(f"/v1/fleets/{fleet_a.id}", headers=fleet_a.h("admin"))
    assert r.status_code == 403
    r = await client.delete(f"/v1/fleets/{fleet_a.id}", headers=OP)
    assert r.status_code == 204
    assert (await client.get(f"/v1/fleets/{fleet_a.id}", headers=OP)).status_code == 404
    # Its keys went with it.
    assert (await client.get("/v1/vehicles", headers=fleet_a.h("admin"))).status_code == 401


async def test_post_keys_operator_secret_shown_once_stored_hashed(
    client: httpx.AsyncClient, fleet_a: FleetFixture, store: Store
) -> None:
    r = await client.post(
        f"/v1/fleets/{fleet_a.id}/keys", json={"role": "manager", **OWNER}, headers=OP
    )
    assert r.status_code == 201
    body = r.json()
    secret = body["key"]
    assert secret.startswith("gp8_") and len(secret) > 40
    assert r.headers["cache-control"] == "no-store"
    assert body["role"] == "manager" and body["fleet_id"] == fleet_a.id
    assert secret.startswith(body["prefix"]) and len(body["prefix"]) < 16
    stored = await store.keys.get(fleet_a.id, body["id"])
    assert stored.key_hash == hash_key(secret)
    r = await client.get(f"/v1/fleets/{fleet_a.id}/keys/{body['id']}", headers=OP)
    assert r.status_code == 200 and "key" not in r.json()
    assert secret not in r.text
    listing = await client.get(f"/v1/fleets/{fleet_a.id}/keys", headers=fleet_a.h("admin"))
    assert secret not in listing.text
    assert body["id"] in [k["id"] for k in listing.json()["data"]]


async def test_post_keys_admin_of_fleet_201(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/fleets/{fleet_a.id}/keys",
        json={"role": "admin", **OWNER},
        headers=fleet_a.h("admin"),
    )
    assert r.status_code == 201
    new = bearer(r.json()["key"])
    assert (await client.get("/v1/vehicles", headers=new)).status_code == 200


async def test_post_keys_manager_and_viewer_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    for role in ("manager", "viewer"):
        r = await client.post(
            f"/v1/fleets/{fleet_a.id}/keys",
            json={"role": "viewer", **OWNER},
            headers=fleet_a.h(role),
        )
        assert r.status_code == 403, role
        r = await client.get(f"/v1/fleets/{fleet_a.id}/keys", headers=fleet_a.h(role))
        assert r.status_code == 403, role


async def test_post_keys_other_fleet_admin_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/fleets/{fleet_b.id}/keys", json={"role": "admin", **OWNER}, headers=fleet_a.h("admin")
    )
    assert r.status_code == 404


async def test_post_keys_operator_role_refused_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/fleets/{fleet_a.id}/keys", json={"role": "operator", **OWNER}, headers=OP
    )
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["loc"] == ["body", "role"]
    assert "'viewer', 'manager' or 'admin'" in error["msg"]


async def test_post_keys_unknown_fleet_operator_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/fleets/flt_nope/keys", json={"role": "admin", **OWNER}, headers=OP)
    assert r.status_code == 404


async def test_post_keys_expiry_in_past_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/fleets/{fleet_a.id}/keys",
        json={**OWNER, "role": "viewer", "expires_at": "2020-01-01T00:00:00Z"},
        headers=OP,
    )
    assert r.status_code == 422
    (error,) = r.json()["errors"]
    assert error["loc"] == ["body", "expires_at"] and error["type"] == "value_error"
    # The value as understood, and the moment it was compared with.
    assert error["msg"].startswith(
        "expires_at (2020-01-01T00:00:00.000Z) must be in the future (now: "
    )


async def test_post_keys_expiry_without_zone_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        f"/v1/fleets/{fleet_a.id}/keys",
        json={**OWNER, "role": "viewer", "expires_at": "2099-01-01T00:00:00"},
        headers=OP,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "expires_at"]


async def test_post_keys_expiry_listed(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    r = await client.post(
        f"/v1/fleets/{fleet_a.id}/keys",
        json={**OWNER, "role": "viewer", "expires_at": "2099-01-01T01:00:00+01:00"},
        headers=OP,
    )
    assert r.status_code == 201
    assert r.json()["expires_at"] == "2099-01-01T00:00:00.000Z"


async def test_delete_key_revokes_and_lists_revoked(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    key_id = fleet_a.key_ids["manager"]
    r = await client.delete(f"/v1/fleets/{fleet_a.id}/keys/{key_id}", headers=OP)
    assert r.status_code == 204
    assert (await client.get("/v1/vehicles", headers=fleet_a.h("manager"))).status_code == 401
    r = await client.get(f"/v1/fleets/{fleet_a.id}/keys/{key_id}", headers=fleet_a.h("admin"))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None


async def test_delete_key_other_fleet_404(
    client: httpx.AsyncClient, fleet_a: FleetFixture, fleet_b: FleetFixture
) -> None:
    r = await client.delete(
        f"/v1/fleets/{fleet_a.id}/keys/{fleet_b.key_ids['viewer']}", headers=fleet_a.h("admin")
    )
    assert r.status_code == 404
    assert (await client.get("/v1/vehicles", headers=fleet_b.h("viewer"))).status_code == 200


async def test_get_keys_operator_key_not_visible_to_fleet(
    client: httpx.AsyncClient, fleet_a: FleetFixture, store: Store
) -> None:
    operator = await store.keys.get_by_hash(hash_key(OPERATOR_KEY))
    assert operator is not None
    r = await client.get(f"/v1/fleets/{fleet_a.id}/keys/{operator.id}", headers=fleet_a.h())
    assert r.status_code == 404
    r = await client.delete(f"/v1/fleets/{fleet_a.id}/keys/{operator.id}", headers=fleet_a.h())
    assert r.status_code == 404


# --- key hygiene: owners, expiry, last use, never in a URL ---------------------------------


async def test_post_keys_without_owner_email_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    for body in (
        {"role": "viewer", "name": "Ann"},
        {"role": "viewer", "name": "Ann", "email": "x"},
    ):
        r = await client.post(f"/v1/fleets/{fleet_a.id}/keys", json=body, headers=OP)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == ["body", "email"]


async def test_post_keys_default_expiry_90_days_and_owner_listed(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    before = now_ms()
    r = await client.post(
        f"/v1/fleets/{fleet_a.id}/keys", json={"role": "viewer", **OWNER}, headers=OP
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["email"], body["last_used_at"]) == (
        "Ann Ops",
        "ann@example.com",
        None,
    )
    expires = datetime_to_ms(datetime.fromisoformat(body["expires_at"]))
    assert before + 90 * DAY_MS <= expires <= now_ms() + 90 * DAY_MS


async def test_get_keys_shows_last_use(
    client: httpx.AsyncClient, fleet_a: FleetFixture, store: Store
) -> None:
    r = await client.get("/v1/vehicles", headers=fleet_a.h("viewer"))
    assert r.status_code == 200
    listing = await client.get(f"/v1/fleets/{fleet_a.id}/keys", headers=OP)
    used = {k["id"]: k["last_used_at"] for k in listing.json()["data"]}
    assert used[fleet_a.key_ids["viewer"]] is not None
    # Kept to the minute: a second use within it writes nothing.
    stored = await store.keys.get(fleet_a.id, fleet_a.key_ids["viewer"])
    await client.get("/v1/vehicles", headers=fleet_a.h("viewer"))
    assert (await store.keys.get(fleet_a.id, stored.id)).last_used_ms == stored.last_used_ms


async def test_key_near_expiry_warns_in_a_header(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    soon = iso_ms(now_ms() + 10 * DAY_MS)
    later = iso_ms(now_ms() + 20 * DAY_MS)
    keys = {}
    for when in (soon, later):
        r = await client.post(
            f"/v1/fleets/{fleet_a.id}/keys",
            json={"role": "viewer", **OWNER, "expires_at": when},
            headers=OP,
        )
        keys[when] = r.json()["key"]
    r = await client.get("/v1/vehicles", headers=bearer(keys[soon]))
    assert r.status_code == 200 and r.headers[EXPIRES_HEADER] == soon
    r = await client.get("/v1/vehicles", headers=bearer(keys[later]))
    assert r.status_code == 200 and EXPIRES_HEADER not in r.headers


async def test_key_in_url_refused_400(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    secret = fleet_a.keys["viewer"]
    for name in ("key", "api_key"):
        r = await client.get(f"/v1/vehicles?{name}={secret}")
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "urn:gp8:problem:key-in-url"
        assert "never accepted in the URL" in r.json()["detail"]
        assert secret not in r.text
