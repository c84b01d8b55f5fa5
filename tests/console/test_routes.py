"""The console's routes in-process: the page and its security headers, the files it may be
served (and nothing else), the set-up page when the map library is missing, and GET /v1/me,
which tells a key its own role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.routes.console import VENDOR_FILES, ConsoleOptions, tile_origin
from storage import open_store
from tests.api.helpers import OPERATOR_KEY, VALID_IMEIS, VALID_VINS, bearer, create_fleet

TILES = "https://{s}.tiles.example.net/{z}/{x}/{y}.png"


async def _client(tmp_path: Path, options: ConsoleOptions) -> AsyncIterator[httpx.AsyncClient]:
    store = open_store(mongo_url=None, mongo_db="gp8", data_dir=tmp_path)
    await store.start()
    try:
        app = create_app(
            store, bootstrap_key=OPERATOR_KEY, rate_limit_per_minute=None, console=options
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                yield c
    finally:
        await store.close()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(tmp_path, ConsoleOptions(tile_url=TILES, tile_attribution="T")):
        yield c


@pytest.fixture
async def bare_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A gp8 whose map library was never installed."""
    async for c in _client(tmp_path, ConsoleOptions(vendor_dir=tmp_path / "node_modules")):
        yield c


async def test_get_console_page_with_csp(client: httpx.AsyncClient) -> None:
    if ConsoleOptions().missing_file() is not None:
        pytest.fail("node_modules/ is missing: run the set-up (npm ci) before the tests")
    r = await client.get("/console")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'id="signin-form"' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "img-src 'self' data: blob: https://*.tiles.example.net" in csp
    assert "connect-src 'self' ws://testserver" in csp
    assert "frame-ancestors 'none'" in csp


async def test_get_console_config_gives_the_tile_server(client: httpx.AsyncClient) -> None:
    r = await client.get("/console/config.json")
    assert r.status_code == 200
    assert r.json() == {"tile_url": TILES, "tile_attribution": "T"}


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("app.css", "text/css"),
        *[(name, None) for name in VENDOR_FILES],
    ],
)
async def test_get_console_asset(client: httpx.AsyncClient, name: str, media_type: str) -> None:
    r = await client.get(f"/console/assets/{name}")
    assert r.status_code == 200, name
    if media_type is not None:
        assert r.headers["content-type"].startswith(media_type)
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "name",
    ["index.html", "../api/app.py", "..%2Fapi%2Fapp.py", "leaflet/dist/leaflet.js", "nope.js"],
)
async def test_get_console_asset_outside_the_tables_404(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.get(f"/console/assets/{name}")
    assert r.status_code == 404


async def test_get_console_without_map_library_says_run_the_set_up(
    bare_client: httpx.AsyncClient,
) -> None:
    r = await bare_client.get("/console")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/html")
    assert "make demo" in r.text and "npm ci" in r.text
    assert "leaflet" in r.text
    r = await bare_client.get("/console/assets/leaflet.js")
    assert r.status_code == 404


def test_tile_origin_for_the_csp() -> None:
    assert tile_origin("https://tile.openstreetmap.org/{z}/{x}/{y}.png") == (
        "https://tile.openstreetmap.org"
    )
    assert tile_origin("https://{s}.tile.example.org/{z}/{x}/{y}.png") == (
        "https://*.tile.example.org"
    )
    assert tile_origin("http://127.0.0.1:9/{z}/{x}/{y}.png") == "http://127.0.0.1:9"
    assert tile_origin("https://{tenant}.example.org/{z}/{x}/{y}") == "https:"


async def test_get_me_tells_each_key_its_role(client: httpx.AsyncClient) -> None:
    fleet = await create_fleet(client, "me", VALID_VINS[0], VALID_IMEIS[0])
    for role in ("viewer", "manager", "admin"):
        r = await client.get("/v1/me", headers=fleet.h(role))
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["id"], body["fleet_id"], body["role"]) == (
            fleet.key_ids[role],
            fleet.id,
            role,
        )
        assert "key" not in body and "hash" not in str(body)
    r = await client.get("/v1/me", headers=bearer(OPERATOR_KEY))
    assert r.status_code == 200
    assert (r.json()["fleet_id"], r.json()["role"]) == (None, "operator")


async def test_get_me_without_a_valid_key_401(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/me")).status_code == 401
    r = await client.get("/v1/me", headers=bearer("gp8_" + "x" * 43))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


def test_demo_banner_gives_the_console_address() -> None:
    from gp8.demo import banner

    text = banner(
        api="http://127.0.0.1:8000",
        tcp="127.0.0.1:5027",
        key="gp8demo_K",
        operator_key="gp8demo_O",
        fleet_id="flt_1",
        vehicle_id="veh_1",
        devices=3,
        data_dir="gp8-data",
        history="8 h of past trips",
    )
    assert "http://127.0.0.1:8000/console" in text and "gp8demo_K" in text
