"""MQTT presence from the broker across two gp8 processes (docs/protocol.md §7.6): a box's
birth and last will reach both, an unclean end is known within the keep-alive (not 300 s),
and a command to a box that went away waits for its return instead of being published."""

from __future__ import annotations

import random
import secrets

import httpx
import pytest

from simulator.mqtt_box import MqttBox
from storage.models import Transport
from tests.scaleout.conftest import Gp8, Pair, eventually, provision

pytestmark = [pytest.mark.mqtt, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

BROKER = "mqtt://127.0.0.1:1883"
GP8_ENV = {
    "GP8_MQTT__URL": BROKER,
    "GP8_MQTT__SHARE_GROUP": f"scaleout{secrets.token_hex(3)}",
    "GP8_MQTT__SESSION_EXPIRY_S": "30",
}


async def health(server: Gp8) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=server.api, timeout=5) as http:
        mqtt: dict[str, object] = (await http.get("/health")).json()["mqtt"]
        return mqtt


async def test_the_broker_tells_both_processes_when_a_box_leaves(pair: Pair) -> None:
    a, b, store = pair.a, pair.b, pair.store
    for server in (a, b):
        await eventually(
            lambda s=server: _is_connected(s), f"{server.name} subscribed at the broker"
        )
    box = await provision(a, random.Random())  # IMEIs never seen by the broker
    mqtt_box = MqttBox.from_url(
        BROKER, box["imei"], box["secret"], session_expiry_s=30, io_timeout_s=10
    )
    await mqtt_box.connect()  # birth: online, with no uplink message at all
    try:

        async def online() -> bool:
            row = await store.devices.connection(box["device_id"])
            return row is not None and row.online and row.transport is Transport.MQTT

        await eventually(online, "the birth message makes the box online")
        for server in (a, b):  # each process heard it: both would deliver to the box
            await eventually(lambda s=server: _statuses(s, "online"), f"{server.name} saw it")

        mqtt_box.cut()  # the radio goes: no DISCONNECT, the broker publishes the will

        async def offline() -> bool:
            row = await store.devices.connection(box["device_id"])
            return row is not None and not row.online

        await eventually(offline, "the will makes the box offline, well before 300 s")
        for server in (a, b):
            await eventually(lambda s=server: _statuses(s, "offline"), f"{server.name} saw it")

        headers = {"Authorization": f"Bearer {box['key']}"}
        async with httpx.AsyncClient(base_url=b.api, headers=headers, timeout=10) as client:
            r = await client.post(
                f"/v1/vehicles/{box['vehicle_id']}/commands", json={"type": "lock", "ttl_s": 600}
            )
            assert r.status_code in (201, 202), r.text
            command = r.json()
            assert command["status"] == "queued"  # not published to a box the broker lost

            await mqtt_box.connect()  # back: its birth delivers what waited

            async def delivered() -> bool:
                got = await client.get(f"/v1/commands/{command['id']}")
                return bool(got.json()["status"] == "acknowledged")

            await eventually(delivered, "the queued command reaches the box once it is back")
    finally:
        await mqtt_box.close()


async def _is_connected(server: Gp8) -> bool:
    return (await health(server)).get("status") == "connected"


async def _statuses(server: Gp8, state: str) -> bool:
    statuses = (await health(server)).get("statuses")
    return isinstance(statuses, dict) and int(statuses.get(state, 0)) >= 1
