"""`gp8 demo` as a new user meets it: within its first minute every vehicle has trips,
mileage and events (the back-filled working day); a re-run finds its fleet again; --reset
starts anew."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gp8.demo import BOXES_FILE, STATE_FILE, DemoState, run_demo
from gp8.settings import Settings

pytestmark = pytest.mark.slow

# "within its first minute" (issue 16): the bound of the wait for the history, polled.
FIRST_MINUTE_S = 60.0


def _args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {"devices": 3, "interval": 5.0, "duration": None, "reset": False}
    values.update(overrides)
    return argparse.Namespace(**values)


@dataclass
class Running:
    api: str
    admin_key: str
    operator_key: str
    banner: str


@asynccontextmanager
async def demo(data_dir: Path, **args: object) -> AsyncIterator[Running]:
    settings = Settings(data_dir=data_dir, log_level="warning", tcp={"port": 0}, api={"port": 0})
    out = io.StringIO()
    stop = asyncio.Event()
    task = asyncio.create_task(run_demo(settings, _args(**args), out=out, stop=stop))
    try:
        async with asyncio.timeout(30):
            while "Stop with Ctrl-C" not in out.getvalue():
                assert not task.done(), out.getvalue()
                await asyncio.sleep(0.05)
        text = out.getvalue()
        api = re.search(r"^  API\s+(\S+)", text, re.M)
        admin = re.search(r"^  admin key\s+(\S+)", text, re.M)
        operator = re.search(r"^  operator key\s+(\S+)", text, re.M)
        assert api and admin and operator, text
        yield Running(api.group(1), admin.group(1), operator.group(1), text)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def _vehicles_with_a_past(client: httpx.AsyncClient) -> set[str]:
    """The vehicles that have trips, mileage and events already."""
    vehicles = (await client.get("/v1/vehicles")).json()["data"]
    ready = set()
    for vehicle in vehicles:
        base = f"/v1/vehicles/{vehicle['id']}"
        trips = (await client.get(f"{base}/trips")).json()["data"]
        mileage = (await client.get(f"{base}/mileage")).json()
        events = (await client.get("/v1/events", params={"vehicle_id": vehicle["id"]})).json()
        if trips and mileage["total_distance_m"] > 0 and events["data"]:
            ready.add(vehicle["id"])
    return ready


async def test_demo_shows_every_vehicle_with_a_past_and_a_rerun_reuses_it(
    tmp_path: Path,
) -> None:
    async with demo(tmp_path) as first:
        assert first.operator_key in first.banner and "--interval 2" in first.banner
        headers = {"Authorization": f"Bearer {first.admin_key}"}
        async with httpx.AsyncClient(base_url=first.api, headers=headers, timeout=10) as client:
            ids = {v["id"] for v in (await client.get("/v1/vehicles")).json()["data"]}
            assert len(ids) == 3
            async with asyncio.timeout(FIRST_MINUTE_S):
                # Polled: the history arrives as fast as the gateway acknowledges it.
                while True:
                    if await _vehicles_with_a_past(client) == ids:
                        break
                    await asyncio.sleep(0.5)
    state = DemoState.load(tmp_path)
    assert state is not None and (tmp_path / BOXES_FILE).exists()

    # A second run: the same fleet and keys, no second fleet.
    async with demo(tmp_path) as second:
        assert (second.admin_key, second.operator_key) == (state.admin_key, state.operator_key)
        headers = {"Authorization": f"Bearer {second.operator_key}"}
        async with httpx.AsyncClient(base_url=second.api, headers=headers, timeout=10) as client:
            fleets = (await client.get("/v1/fleets")).json()["data"]
        assert [f["id"] for f in fleets] == [state.fleet_id]

    # --reset: a new fleet in a new database.
    async with demo(tmp_path, reset=True) as third:
        assert third.admin_key != state.admin_key
    new_state = DemoState.load(tmp_path)
    assert new_state is not None and new_state.fleet_id != state.fleet_id
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o077 == 0  # it holds keys
