"""GET /metrics of a real gp8 after a simulated run: Prometheus text that prometheus-client's
own parser reads, whose counters moved by what the boxes sent."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.simulator.conftest import FleetAccess, Gp8, run_scenario

pytestmark = pytest.mark.slow


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(gp8: Gp8) -> Samples:
    async with httpx.AsyncClient(base_url=gp8.base_url, timeout=10) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _get(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_after_a_simulated_run(gp8: Gp8, fleet: FleetAccess) -> None:
    before = await _scrape(gp8)
    run = await run_scenario(fleet, "normal", devices=2, interval_s=60, count=90)
    sent = run.snapshot["sent"] + run.snapshot["events_sent"]  # positions and events
    assert run.snapshot["sent"] > 0
    after = await _scrape(gp8)

    stored = "gp8_gateway_records_total"
    assert _get(after, stored, result="stored") - _get(before, stored, result="stored") == sent
    assert _get(after, "gp8_gateway_logins_total", status="ok") >= 2
    frames = _get(after, "gp8_gateway_frames_total", type="position")
    assert frames > _get(before, "gp8_gateway_frames_total", type="position")
    flushes = _get(after, "gp8_gateway_flush_records_count")
    assert flushes > 0 and _get(after, "gp8_gateway_flush_records_sum") >= sent
    assert _get(after, "gp8_gateway_store_latency_seconds_count") == flushes
    assert _get(after, "gp8_gateway_ack_latency_seconds_count") > 0
    # The command service's collector is registered too (every status shown, from zero).
    assert any(name == "gp8_commands_total" for name, _ in after)
    # And the parts that keep plain counters: stream, webhooks, tracking.
    assert after[("gp8_stream_clients", ())] == 0
    assert ("gp8_stream_slow_consumers_dropped_total", ()) in after
    assert ("gp8_webhook_deliveries_total", (("result", "delivered"),)) in after
    # The tracking handlers' counts, by handler and result (the offline sweep ran at start).
    tracking = {labels for name, labels in after if name == "gp8_tracking_total"}
    assert (("handler", "offline"), ("result", "sweeps")) in tracking
