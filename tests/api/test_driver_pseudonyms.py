"""Pseudonymised drivers over the API (docs/privacy.md): what a client names by badge number
(the privacy badge, the badge policy, a driver's erasure, an export) meets what the ingest
pipeline stored for the boxes' badges, and privacy mode by the driver's badge swipe.

Box records go through the real ingest pipeline and processing stage, in-process, with the
app's driver key, as `gp8 serve` wires them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from api.times import iso_ms
from gateway.pipeline import IngestPipeline
from processing import ProcessingStage
from storage.models import Position, now_ms
from storage.pseudonyms import BadgePseudonyms
from storage.repository import Store
from tests.api.helpers import FleetFixture, make_event, make_position
from tracking.privacy import BADGE_EVENT
from tracking.privacy_toggles import PrivacyToggleHandler
from tracking.rules_logic import recognised

TIMEOUT = 10.0


@asynccontextmanager
async def boxes(app: FastAPI, store: Store) -> AsyncIterator[IngestPipeline]:
    """The gateway's pipeline with the app's driver key, and the privacy-toggle handler."""
    stage = ProcessingStage([PrivacyToggleHandler(store.privacy)])
    pseudonyms: BadgePseudonyms = app.state.pseudonyms
    await stage.start()
    try:
        async with IngestPipeline(
            store.telemetry, max_delay_ms=1, processing=stage, pseudonyms=pseudonyms
        ) as pipeline:
            yield pipeline
            await stage.settle(TIMEOUT)
    finally:
        await stage.stop()


def fixes(fleet: FleetFixture, times: list[int], badge: int | None = None) -> list[Position]:
    return [
        make_position(fleet.id, fleet.device_id, fleet.vehicle_id, t, driver_badge=badge)
        for t in times
    ]


async def seen(client: httpx.AsyncClient, fleet: FleetFixture, t: int) -> list[int]:
    """Which of the vehicle's fixes at ``t`` + n seconds a manager is shown: the n."""
    r = await client.get(
        f"/v1/vehicles/{fleet.vehicle_id}/positions",
        params={"from": iso_ms(t - 60_000), "to": iso_ms(t + 60_000)},
        headers=fleet.h("manager"),
    )
    assert r.status_code == 200, r.text
    shown = {p["time"] for p in r.json()["data"]}
    return [n for n in range(10) if iso_ms(t + n * 1000) in shown]


async def test_a_privacy_badge_swipe_makes_the_vehicle_private_then_public(
    client: httpx.AsyncClient, app: FastAPI, store: Store, fleet_a: FleetFixture
) -> None:
    r = await client.put("/v1/privacy-badge", json={"badge": "777"}, headers=fleet_a.h())
    assert r.status_code == 200, r.text
    assert r.json()["badge"] == str(app.state.pseudonyms.of(777))
    t = now_ms() - 30_000
    async with boxes(app, store) as pipeline:
        # The driver presents the privacy badge at t+1.5 s; an unrelated badge at t+2.5 s.
        swipe = make_event(fixes(fleet_a, [t + 1500], badge=777)[0], BADGE_EVENT)
        other = make_event(fixes(fleet_a, [t + 2500], badge=778)[0], BADGE_EVENT)
        await pipeline.submit(fixes(fleet_a, [t, t + 1000, t + 2000, t + 3000]), [swipe, other])
    assert await seen(client, fleet_a, t) == [0, 1]

    async with boxes(app, store) as pipeline:
        # Presented again at t+3.5 s: public from then on.
        again = make_event(fixes(fleet_a, [t + 3500], badge=777)[0], BADGE_EVENT)
        await pipeline.submit(fixes(fleet_a, [t + 4000, t + 5000]), [again])
    assert await seen(client, fleet_a, t) == [0, 1, 4, 5]


async def test_the_badge_policy_recognises_a_box_badge(
    client: httpx.AsyncClient, app: FastAPI, store: Store, fleet_a: FleetFixture
) -> None:
    body = {"require_badge": True, "badges": ["4711"]}
    r = await client.put("/v1/badge-policy", json=body, headers=fleet_a.h())
    assert r.status_code == 200, r.text
    t = now_ms() - 10_000
    async with boxes(app, store) as pipeline:
        await pipeline.submit(fixes(fleet_a, [t], badge=4711) + fixes(fleet_a, [t + 1], 4712), [])
    page = await store.telemetry.positions(fleet_a.id, fleet_a.vehicle_id, from_ms=0, to_ms=2**62)
    policy = await store.alert_rules.policy(fleet_a.id)
    assert [recognised(p.driver_badge, policy) for p in page.items] == [True, False]


async def test_erasing_a_driver_removes_its_records_and_its_name(
    client: httpx.AsyncClient, app: FastAPI, store: Store, fleet_a: FleetFixture
) -> None:
    r = await client.post(
        "/v1/drivers", json={"badge": "4242", "name": "Ana"}, headers=fleet_a.h("manager")
    )
    assert r.status_code == 201, r.text
    pseudonym = r.json()["badge"]
    t = now_ms() - 10_000
    async with boxes(app, store) as pipeline:
        await pipeline.submit(fixes(fleet_a, [t], badge=4242) + fixes(fleet_a, [t + 1000]), [])
    r = await client.get(
        f"/v1/vehicles/{fleet_a.vehicle_id}/positions",
        params={"from": iso_ms(t - 1000), "to": iso_ms(t + 2000)},
        headers=fleet_a.h("viewer"),
    )
    assert [p["driver_badge"] for p in r.json()["data"]] == [pseudonym, None]

    r = await client.post(
        "/v1/exports",
        json={"driver_badge": "4242", "from": iso_ms(0), "to": iso_ms(t + 60_000)},
        headers=fleet_a.h(),
    )
    assert r.status_code == 202, r.text
    assert r.json()["driver_badge"] == pseudonym

    r = await client.post(
        "/v1/drivers/erase",
        json={"driver_badge": "4242", "reason": "request #7"},
        headers=fleet_a.h(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["positions"] == 1 and r.json()["counts"]["drivers"] == 1
    r = await client.get("/v1/drivers", headers=fleet_a.h("manager"))
    assert r.json()["data"] == []
    # The access log names the driver by the pseudonym only.
    log = (await client.get("/v1/access-log", headers=fleet_a.h())).json()["data"]
    erased = [e for e in log if e["action"] == "erase"]
    assert len(erased) == 1 and pseudonym in str(erased[0])
    assert "4242" not in str([e for e in log if e["action"] in ("erase", "export")])
