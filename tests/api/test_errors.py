"""RFC 9457 problems everywhere: malformed input, limits, unknown routes, crashes, outages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, FastAPI

from api.app import create_app
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, FleetFixture, bearer

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


async def test_post_vehicles_malformed_json_400(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        "/v1/vehicles",
        content=b'{"vin": "1M8GDM9AXKP042788",}',
        headers={**fleet_a.h(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "urn:gp8:problem:malformed-json"
    # The offset reads as a position in the text, not as a field of the body.
    assert body["errors"][0]["msg"].startswith("malformed JSON at character 28: ")
    assert body["errors"][0]["loc"] == ["body"]
    assert "property name" in body["errors"][0]["msg"]


async def test_post_vehicles_not_json_content_type_415(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        "/v1/vehicles",
        content=b"vin=1M8GDM9AXKP042788",
        headers={**fleet_a.h(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    assert r.json()["status"] == 415


async def test_post_vehicles_json_array_body_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.post("/v1/vehicles", json=["1M8GDM9AXKP042788"], headers=fleet_a.h())
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body"]


async def test_post_vehicles_oversized_body_413(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    big = b'{"vin": "' + b"A" * (1024 * 1024 + 10) + b'"}'
    r = await client.post(
        "/v1/vehicles", content=big, headers={**fleet_a.h(), "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert set(r.json()) == PROBLEM_KEYS


async def test_post_vehicles_oversized_chunked_body_413(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"vin": "'
        for _ in range(20):
            yield b"A" * 65_536
        yield b'"}'

    r = await client.post(
        "/v1/vehicles",
        content=chunks(),
        headers={**fleet_a.h(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["type"] == "urn:gp8:problem:body-too-large"


async def test_get_unknown_route_404_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no resource at /v1/nothing-here",
        "instance": "/v1/nothing-here",
    }


async def test_put_vehicles_collection_405_problem(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.put("/v1/vehicles", json={}, headers=fleet_a.h())
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["allow"]


async def test_get_vehicle_unknown_id_404_problem(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/vehicles/veh_doesnotexist", headers=fleet_a.h())
    assert r.status_code == 404
    assert set(r.json()) == PROBLEM_KEYS and r.json()["status"] == 404


async def test_get_vehicle_id_too_long_422(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    r = await client.get("/v1/vehicles/" + "v" * 65, headers=fleet_a.h())
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["path", "vehicle_id"]


async def test_unexpected_exception_500_problem(store: Store) -> None:
    crashing = APIRouter()

    @crashing.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    app = create_app(store, extra_routers=[crashing], rate_limit_per_minute=None)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 500
    assert "secret internals" not in r.text


async def test_storage_down_503_with_retry_after(app: FastAPI, store: Store) -> None:
    async with app.router.lifespan_context(app):
        await store.close()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/v1/fleets", headers=bearer(OPERATOR_KEY))
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/problem+json"
            assert int(r.headers["retry-after"]) > 0
            health = await c.get("/health")
            assert health.status_code == 503
            assert health.json()["type"] == "urn:gp8:problem:storage-unavailable"


async def test_get_health_extra_components(store: Store) -> None:
    async def gateway_health() -> dict[str, object]:
        return {"gateway": {"connections": 3}}

    app = create_app(store, health=gateway_health)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/health")
    assert r.status_code == 200
    assert r.json()["gateway"] == {"connections": 3}
    assert r.json()["storage"]["engine"] == "sqlite"


async def test_get_openapi_declares_problem_responses(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "Problem" in schema["components"]["schemas"]
    op = schema["paths"]["/v1/vehicles"]["post"]
    assert "application/problem+json" in op["responses"]["422"]["content"]
    assert "Retry-After" in op["responses"]["429"]["headers"]
    positions = schema["paths"]["/v1/vehicles/{vehicle_id}/positions"]["get"]
    assert set(positions["responses"]["200"]["content"]) == {
        "application/json",
        "application/geo+json",
        "text/csv",
        "application/gpx+xml",
    }
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert (await client.get("/docs")).status_code == 200
