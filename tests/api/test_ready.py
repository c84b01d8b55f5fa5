"""GET /ready: storage writable and every injected link connected, else 503 naming them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import pytest

from api.app import create_app
from api.routes import health
from api.routes.health import ReadyCheck, link_check
from storage.repository import Store


class FakeLink:
    def __init__(self) -> None:
        self.connected = True


async def ready(store: Store, checks: Mapping[str, ReadyCheck]) -> httpx.Response:
    app = create_app(store, rate_limit_per_minute=None, readiness=checks)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.get("/ready")


@pytest.fixture
def link() -> FakeLink:
    return FakeLink()


async def test_get_ready_200_without_a_key_when_every_component_is(
    store: Store, link: FakeLink
) -> None:
    r = await ready(store, {"mqtt": link_check(link, "broker mqtts://b:8883")})
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "components": {"storage": {"status": "ok"}, "mqtt": {"status": "ok"}},
    }


async def test_get_ready_503_names_a_link_that_is_down(store: Store, link: FakeLink) -> None:
    checks = {"mqtt": link_check(link, "broker mqtts://b:8883")}
    link.connected = False
    r = await ready(store, checks)
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "urn:gp8:problem:not-ready"
    assert body["detail"] == "not ready: mqtt"
    assert body["components"] == {
        "storage": {"status": "ok"},
        "mqtt": {"status": "failing", "reason": "broker mqtts://b:8883 not connected"},
    }
    link.connected = True
    assert (await ready(store, checks)).status_code == 200  # and back


async def test_get_ready_503_when_storage_takes_no_write(store: Store) -> None:
    await store.close()
    r = await ready(store, {})
    assert r.status_code == 503
    assert r.json()["components"]["storage"]["status"] == "failing"
    assert r.json()["detail"] == "not ready: storage"


async def test_a_check_that_hangs_is_failing_not_waited_for(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_TIMEOUT_S", 0.05)

    async def hangs() -> str | None:
        await asyncio.Event().wait()
        return None

    r = await ready(store, {"broker": hangs})
    assert r.status_code == 503
    assert r.json()["components"]["broker"] == {
        "status": "failing",
        "reason": "no answer within 0.05 s",
    }
