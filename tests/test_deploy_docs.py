"""The API docs work offline: /docs and /redoc load only assets gp8 serves, and GET / links them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from storage import open_store

_ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
# Only assets count: Swagger UI's own page has no other links, ReDoc's none either.
_ANY_URL = re.compile(r"https?://|//cdn|cdn\.")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = open_store(mongo_url=None, mongo_db="gp8", data_dir=tmp_path)
    await store.start()
    try:
        app = create_app(store, rate_limit_per_minute=None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c
    finally:
        await store.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_loads_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert _ANY_URL.search(html) is None, _ANY_URL.search(html)
    assets = _ASSET.findall(html)
    assert any(a.endswith(".js") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset
    # The page fetches the schema from gp8 too.
    assert "/openapi.json" in html


async def test_swagger_ui_is_recent_enough_for_openapi_3_1(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    script = (await client.get("/static/docs/swagger-ui-bundle.js")).text
    # Swagger UI renders 3.1 documents from version 5 on (swagger-ui-bundle 1.1 ships 4.15).
    assert "isOAS31" in script


async def test_index_points_to_the_docs_and_the_operational_endpoints(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    links = response.json()["links"]
    assert links["docs"] == "/docs" and links["openapi"] == "/openapi.json"
    assert links["health"] == "/health" and links["console"] == "/console"
    for name in ("docs", "redoc", "openapi", "health", "metrics"):
        assert (await client.get(links[name])).status_code == 200, name
