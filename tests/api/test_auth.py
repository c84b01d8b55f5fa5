"""Authentication (401), operator limits (403) and per-key rate limiting (429)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.ratelimit import RateLimiter
from api.security import new_api_key
from storage.models import Role, now_ms
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, FleetFixture, bearer


def assert_problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = r.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert body["type"]
    return body


async def test_get_vehicles_without_key_401(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/vehicles")
    body = assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in str(body["detail"])
    assert body["instance"] == "/v1/vehicles"


async def test_get_vehicles_basic_scheme_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/vehicles", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert_problem(r, 401)


async def test_get_vehicles_unknown_key_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/vehicles", headers=bearer("gp8_not-a-real-key"))
    assert_problem(r, 401)
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_get_vehicles_oversized_key_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/vehicles", headers=bearer("x" * 5000))
    assert_problem(r, 401)


async def test_get_vehicles_revoked_key_401(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    assert (await client.get("/v1/vehicles", headers=fleet_a.h("viewer"))).status_code == 200
    r = await client.delete(
        f"/v1/fleets/{fleet_a.id}/keys/{fleet_a.key_ids['viewer']}", headers=fleet_a.h("admin")
    )
    assert r.status_code == 204
    assert_problem(await client.get("/v1/vehicles", headers=fleet_a.h("viewer")), 401)


async def test_get_vehicles_expired_key_401(
    client: httpx.AsyncClient, fleet_a: FleetFixture, store: Store
) -> None:
    # The API refuses to create an already expired key, so store one whose expiry has passed.
    secret, record = new_api_key(
        fleet_id=fleet_a.id, role=Role.VIEWER, name="old", expires_ms=now_ms() + 50
    )
    await store.keys.create(record)
    assert (await client.get("/v1/vehicles", headers=bearer(secret))).status_code == 200
    await asyncio.sleep(0.06)
    body = assert_problem(await client.get("/v1/vehicles", headers=bearer(secret)), 401)
    assert body["detail"] == "invalid, revoked or expired API key"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/vehicles",
        "/v1/devices",
        "/v1/events",
        "/v1/fleet/positions",
        "/v1/access-log",
    ],
)
async def test_get_fleet_data_operator_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture, path: str
) -> None:
    body = assert_problem(await client.get(path, headers=bearer(OPERATOR_KEY)), 403)
    assert "operator" in str(body["detail"])


async def test_get_vehicle_positions_operator_403(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    for suffix in ("", "/position", "/positions", "/trips", "/mileage"):
        r = await client.get(
            f"/v1/vehicles/{fleet_a.vehicle_id}{suffix}", headers=bearer(OPERATOR_KEY)
        )
        assert_problem(r, 403)


async def test_post_vehicles_operator_403(client: httpx.AsyncClient, fleet_a: FleetFixture) -> None:
    r = await client.post(
        "/v1/vehicles", json={"vin": "11111111111111111"}, headers=bearer(OPERATOR_KEY)
    )
    assert_problem(r, 403)


@pytest.fixture
async def limited_client(store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = create_app(store, bootstrap_key=OPERATOR_KEY, rate_limit_per_minute=3)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, app


async def test_get_fleets_rate_limited_429(
    limited_client: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, _ = limited_client
    for _ in range(3):
        assert (await client.get("/v1/fleets", headers=bearer(OPERATOR_KEY))).status_code == 200
    r = await client.get("/v1/fleets", headers=bearer(OPERATOR_KEY))
    body = assert_problem(r, 429)
    # 3 per minute: one token every 20 s.
    assert 1 <= int(r.headers["retry-after"]) <= 20
    assert "rate limit" in str(body["detail"])


async def test_get_fleets_rate_limit_is_per_key(
    limited_client: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, _ = limited_client
    for _ in range(4):
        await client.get("/v1/fleets", headers=bearer(OPERATOR_KEY))
    r = await client.post("/v1/fleets", json={"name": "x"}, headers=bearer(OPERATOR_KEY))
    assert r.status_code == 429
    # Another key still has its own budget (an unknown key is refused, not rate limited).
    assert (await client.get("/v1/fleets", headers=bearer("gp8_other"))).status_code == 401


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.acquire("k") is None for _ in range(60))
    wait = limiter.acquire("k")
    assert wait == pytest.approx(1.0)
    now[0] += 1.0
    assert limiter.acquire("k") is None
    assert limiter.acquire("other") is None


async def test_get_health_without_key_200(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["storage"]["engine"] == "sqlite"
