"""The same simulated fleet over MQTT (simulator.mqtt_box) through the shared Mosquitto."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gp8.serve import start_services, stop_services
from gp8.settings import ApiSettings, MqttSettings, Settings, TcpSettings
from simulator.fleet import Fleet, FleetOptions, make_clock
from simulator.pacing import wall_ms
from simulator.scenario import load_scenario
from simulator.trajectory import StreetGrid
from simulator.transport import TransportConfig
from tests.simulator.conftest import (
    CENTER,
    OPERATOR_KEY,
    RUN_TIMEOUT_S,
    FleetAccess,
    Gp8,
    provision_backdated,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

BROKER = "mqtt://127.0.0.1:1883"


@pytest.fixture
async def gp8(data_dir: Path) -> AsyncIterator[Gp8]:
    """gp8 with its MQTT bridge on the shared broker (a share group of its own)."""
    tag = secrets.token_hex(4)
    settings = Settings(
        data_dir=data_dir,
        bootstrap_key=OPERATOR_KEY,
        log_level="warning",
        tcp=TcpSettings(host="127.0.0.1", port=0),
        api=ApiSettings(host="127.0.0.1", port=0, rate_limit_per_minute=0),
        mqtt=MqttSettings(
            url=BROKER,
            share_group=f"sim-{tag}",
            client_id=f"gp8-sim-{tag}",
            # Short: a test must not leave a session queueing the shared broker's uplink.
            session_expiry_s=10,
        ),
    )
    run = await start_services(settings)
    try:
        yield Gp8(run, f"http://127.0.0.1:{run.api_port}")
    finally:
        await stop_services(run)


async def test_tunnel_scenario_over_mqtt(fleet: FleetAccess) -> None:
    scenario = load_scenario("tunnel")
    options = FleetOptions(
        transport=TransportConfig(kind="mqtt", mqtt_url=BROKER),
        interval_s=30,
        seed="mqtt",
        reconnect_delay_s=0.05,
        reconnect_max_s=1.0,
        flush_timeout_s=10,
        final_timeout_s=20,
    )
    clock = make_clock(scenario, options, lon=CENTER.lon)
    boxes = await provision_backdated(fleet, 2, clock.start_ms - 60_000, seed="mqtt")
    sim = Fleet(
        boxes,
        scenario=scenario,
        network=StreetGrid(CENTER, 3000, seed="mqtt"),
        clock=clock,
        options=options,
    )
    async with asyncio.timeout(RUN_TIMEOUT_S):
        report = await sim.run()
    assert not sim.failures()
    snap = report.snapshot()
    assert snap["transport"] == "mqtt"
    assert snap["sent"] == snap["acked"] > 0 and snap["pending"] == 0
    for driver in sim.drivers:
        vehicle = driver.provisioned.vehicle_id
        assert vehicle is not None
        positions = await fleet.positions(vehicle, clock.start_ms - 1, wall_ms() + 1)
        assert len(positions) == driver.positions
        assert sum(not p["fix_valid"] for p in positions) == 66
