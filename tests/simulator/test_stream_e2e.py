"""The live stream through a real `gp8 serve` (gateway + API in this process): a simulated box
reports over TCP, and a WebSocket client on GET /v1/stream receives each position within a
second of the box's ACK; a client that leaves and resumes with its cursor misses nothing and
gets nothing twice; Server-Sent Events carry the same messages."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from simulator.box import VirtualBox
from storage.models import StreamKind, now_ms
from tests.simulator.conftest import CENTER, FleetAccess, provision_backdated

pytestmark = pytest.mark.slow

TIMEOUT_S = 10.0
# The bound: a stored position reaches a live client within this.
DELIVERY_S = 1.0


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def _ws(fleet: FleetAccess, query: str = "") -> tuple[ClientConnection, int]:
    url = f"ws://{fleet.gp8.base_url.removeprefix('http://')}/v1/stream{query}"
    ws = await connect(
        url, additional_headers={"Authorization": f"Bearer {fleet.key}"}, open_timeout=TIMEOUT_S
    )
    ready = await _recv(ws)
    assert ready["kind"] == "ready", ready
    return ws, ready["cursor"]


async def _recv(ws: ClientConnection, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _box(fleet: FleetAccess) -> tuple[VirtualBox, str]:
    (provisioned,) = await provision_backdated(fleet, 1, now_ms() - 3_600_000, seed="stream")
    assert provisioned.vehicle_id is not None
    box = VirtualBox(
        provisioned.imei, provisioned.secret, provisioned.model, port=fleet.gp8.tcp_port
    )
    await box.connect()
    return box, provisioned.vehicle_id


def _record(box: VirtualBox, time_ms: int, i: int) -> Any:
    return box.record(time_ms, CENTER.lat + i * 1e-4, CENTER.lon, speed_kmh=40.0, ignition=True)


async def test_each_stored_position_reaches_a_live_client_within_a_second(
    fleet: FleetAccess,
) -> None:
    box, vehicle_id = await _box(fleet)
    ws, _ = await _ws(fleet, "?kinds=position")
    latencies: list[float] = []
    base = now_ms() - 60_000
    try:
        for i in range(20):
            record = _record(box, base + i * 1000, i)
            await box.send_positions([record], timeout=TIMEOUT_S)
            acked = time.monotonic()  # the ACK: the position is durably stored
            message = await _recv(ws, DELIVERY_S * 5)
            latencies.append(time.monotonic() - acked)
            assert message["kind"] == "position" and message["vehicle_id"] == vehicle_id
            assert _ms(message["data"]["time"]) == record.time_ms
    finally:
        await box.close()
        await ws.close()
    assert max(latencies) < DELIVERY_S, latencies


async def test_a_client_that_resumes_misses_nothing_and_gets_nothing_twice(
    fleet: FleetAccess,
) -> None:
    box, _ = await _box(fleet)
    base = now_ms() - 120_000
    sent = [_record(box, base + i * 1000, i) for i in range(60)]
    received: list[dict[str, Any]] = []

    async def report() -> None:
        for i in range(0, len(sent), 3):
            await box.send_positions(sent[i : i + 3], timeout=TIMEOUT_S)
            await asyncio.sleep(0.02)

    reporting = asyncio.create_task(report())
    try:
        ws, cursor = await _ws(fleet, "?kinds=position")
        async with asyncio.timeout(60):
            while len(received) < len(sent):
                for _ in range(7):  # a few messages, then the client drops the connection
                    message = await _recv(ws)
                    received.append(message)
                    cursor = message["cursor"]
                    if len(received) == len(sent):
                        break
                await ws.close()
                ws, resumed_at = await _ws(fleet, f"?kinds=position&after={cursor}")
                assert resumed_at == cursor
        await reporting
        await ws.close()
    finally:
        reporting.cancel()
        await box.close()
    assert [_ms(m["data"]["time"]) for m in received] == [r.time_ms for r in sent]
    cursors = [m["cursor"] for m in received]
    assert cursors == sorted(set(cursors))  # increasing: none twice


async def test_server_sent_events_carry_the_same_messages(fleet: FleetAccess) -> None:
    box, _ = await _box(fleet)
    ws, start = await _ws(fleet)
    base = now_ms() - 30_000
    headers = {"Authorization": f"Bearer {fleet.key}", "Accept": "text/event-stream"}
    events: list[dict[str, Any]] = []
    try:
        async with (
            httpx.AsyncClient(base_url=fleet.gp8.base_url, timeout=TIMEOUT_S) as client,
            client.stream("GET", "/v1/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            await box.send_positions([_record(box, base + i * 1000, i) for i in range(3)])
            lines = response.aiter_lines()
            async with asyncio.timeout(TIMEOUT_S):
                async for line in lines:
                    if line.startswith("data: "):
                        events.append(json.loads(line.removeprefix("data: ")))
                        if len(events) == 4:  # ready, then three positions
                            break
        over_ws = [await _recv(ws) for _ in range(3)]
    finally:
        await box.close()
        await ws.close()
    assert events[0] == {
        "kind": "ready",
        "cursor": start,
        "vehicle_id": None,
        "data": {"kinds": sorted(StreamKind)},
    }
    assert events[1:] == over_ws
