"""GET /metrics renders whatever collectors the entry point registered; no key needed."""

from __future__ import annotations

from collections import Counter

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from gateway.metrics import Field, MetricsCollector
from storage.repository import Store


class _Counters:
    FIELDS = (
        Field("seen", "seen_total", "counter", "Things seen."),
        Field("why", "refused", "counter", 'Refusals, by a reason with "quotes".', "reason"),
    )

    def __init__(self) -> None:
        self.seen = 0
        self.why: Counter[str] = Counter()


async def _get(store: Store, registry: CollectorRegistry | None) -> httpx.Response:
    app = create_app(store, rate_limit_per_minute=None, metrics=registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gp8") as client:
        return await client.get("/metrics")


async def test_get_metrics_renders_the_registered_collectors(store: Store) -> None:
    counters = _Counters()
    registry = CollectorRegistry()
    registry.register(MetricsCollector(counters, "gp8_test_"))
    counters.seen = 3
    counters.why['bad "crc"\n'] += 2  # label values are escaped by prometheus-client
    response = await _get(store, registry)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("gp8_test_seen_total", ())] == 3
    assert samples[("gp8_test_refused_total", (("reason", 'bad "crc"\n'),))] == 2


async def test_get_metrics_without_collectors_is_empty(store: Store) -> None:
    response = await _get(store, None)
    assert response.status_code == 200 and response.text == ""
