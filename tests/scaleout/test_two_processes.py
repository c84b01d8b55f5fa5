"""Two `gp8 serve` processes on one SQLite file behave like one (docs/scaling.md)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from simulator.box import VirtualBox, make_record
from simulator.provision import ApiClient
from storage.models import AlertKind, now_ms
from storage.sqlite import SqliteStore
from tests.scaleout.conftest import OPERATOR_KEY, Gp8, Pair, eventually, provision

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# Every key's limit, in both processes (the rate-limit test uses one up; the others stay below).
RATE_LIMIT = 20
GP8_ENV = {"GP8_API__RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT)}


async def sessions(server: Gp8) -> int:
    async with httpx.AsyncClient(base_url=server.api, timeout=5) as http:
        return int((await http.get("/health")).json()["gateway"]["sessions"])


async def test_a_clone_on_another_process_is_a_duplicate_and_a_stale_offline_loses(
    pair: Pair,
) -> None:
    a, b, store = pair.a, pair.b, pair.store
    rng = random.Random(15)
    box = await provision(a, rng)
    spare = await provision(a, rng)
    real = VirtualBox(box["imei"], box["secret"], port=a.tcp_port)
    clone = VirtualBox(box["imei"], box["secret"], port=b.tcp_port)
    await real.connect()
    try:
        await clone.connect()  # while the real box's session on A is live

        async def reported() -> bool:
            alerts = await store.alerts.open_alerts(device_id=box["device_id"])
            return any(a.kind is AlertKind.DUPLICATE_BOX for a in alerts)

        await eventually(reported, "B reports the duplicate box A holds live")
        held = await store.devices.connection(box["device_id"])
        assert held is not None and (held.online, held.gateway_id) == (True, b.name)

        # A's session ends after B's began: A's "offline" is older than B's "online".
        await real.close()
        await eventually(lambda: _is(sessions(a), 0), "A forgets its session")
        # A's state writes run in order on its one writer: once a later login on A is
        # recorded, the stale "offline" was written (or refused) before it.
        later = VirtualBox(spare["imei"], spare["secret"], port=a.tcp_port)
        await later.connect()
        try:
            await eventually(
                lambda: _online(store, spare["device_id"], a.name), "A records another box"
            )
        finally:
            await later.close()
        after = await store.devices.connection(box["device_id"])
        assert after is not None and (after.online, after.gateway_id) == (True, b.name)
    finally:
        await clone.close()
        await real.close()


async def test_the_rate_limit_of_a_key_is_shared(pair: Pair) -> None:
    limit = RATE_LIMIT
    a, b = pair.a, pair.b
    async with ApiClient(a.api, OPERATOR_KEY) as operator:
        fleet = await operator.create_fleet("rate")
        key = (await operator.create_key(fleet["id"], "viewer", "viewer"))["key"]
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=a.api, headers=headers, timeout=5) as on_a,
        httpx.AsyncClient(base_url=b.api, headers=headers, timeout=5) as on_b,
    ):
        for _ in range(limit):
            assert (await on_a.get("/v1/vehicles")).status_code == 200
        assert (await on_a.get("/v1/vehicles")).status_code == 429
        # B learns A's count at its next sync: it admits a few at most, never its own limit.
        admitted_on_b = 0

        async def refused_on_b() -> bool:
            nonlocal admitted_on_b
            r = await on_b.get("/v1/vehicles")
            if r.status_code == 200:
                admitted_on_b += 1
            return r.status_code == 429

        await eventually(refused_on_b, "B refuses the key A used up")
        assert admitted_on_b < limit


async def test_the_engine_start_cap_holds_across_processes(pair: Pair) -> None:
    a, b = pair.a, pair.b
    box = await provision(a, random.Random(16))
    headers = {"Authorization": f"Bearer {box['key']}"}
    cap = 3
    async with (
        httpx.AsyncClient(base_url=a.api, headers=headers, timeout=10) as on_a,
        httpx.AsyncClient(base_url=b.api, headers=headers, timeout=10) as on_b,
    ):
        r = await on_a.put(
            f"/v1/fleets/{box['fleet_id']}/policy", json={"engine_start_cap_per_hour": cap}
        )
        assert r.status_code == 200, r.text
        url = f"/v1/vehicles/{box['vehicle_id']}/commands"
        body = {"type": "disable_engine_start", "ttl_s": 600}
        # Both processes at once: a count read in one and an insert in the other would let
        # them overrun the cap together.
        answers = await asyncio.gather(
            *(client.post(url, json=body) for _ in range(4) for client in (on_a, on_b))
        )
    codes = [r.status_code for r in answers]
    assert codes.count(429) == len(answers) - cap, [r.text for r in answers]


async def test_a_key_revoked_on_one_process_is_refused_by_the_other(pair: Pair) -> None:
    a, b = pair.a, pair.b
    async with ApiClient(a.api, OPERATOR_KEY) as operator:
        fleet = await operator.create_fleet("revocation")
        key = await operator.create_key(fleet["id"], "viewer", "viewer")
        headers = {"Authorization": f"Bearer {key['key']}"}
        async with httpx.AsyncClient(base_url=b.api, headers=headers, timeout=5) as on_b:
            assert (await on_b.get("/v1/vehicles")).status_code == 200
            await operator.request("DELETE", f"/v1/fleets/{fleet['id']}/keys/{key['id']}")
            assert (await on_b.get("/v1/vehicles")).status_code == 401


async def test_a_box_on_one_process_reaches_stream_clients_of_the_other(pair: Pair) -> None:
    a, b = pair.a, pair.b
    box = await provision(a, random.Random(18))
    url = f"ws://127.0.0.1:{b.api_port}/v1/stream?kinds=position"
    headers = {"Authorization": f"Bearer {box['key']}"}
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        assert (await _message(ws))["kind"] == "ready"
        sender = VirtualBox(box["imei"], box["secret"], port=a.tcp_port)
        await sender.connect()
        try:
            records = [make_record(now_ms() - 5_000 + i * 1_000, 48.85, 2.35) for i in range(2)]
            await sender.send_positions(records, timeout=10)
        finally:
            await sender.close()
        got = [await _message(ws) for _ in records]
    assert [m["kind"] for m in got] == ["position", "position"]
    assert {m["vehicle_id"] for m in got} == {box["vehicle_id"]}, got


async def _message(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def _online(store: SqliteStore, device_id: str, gateway_id: str) -> bool:
    row = await store.devices.connection(device_id)
    return row is not None and row.online and row.gateway_id == gateway_id
