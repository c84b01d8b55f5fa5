"""How a simulated box takes commands (what the box itself does is in simulator.box)."""

from __future__ import annotations

import pytest

from protocol.gp8 import Command, CommandFailure, CommandStatus, CommandType
from simulator.driver import BoxDriver
from simulator.fleet import Fleet, FleetOptions, make_clock
from simulator.geo import LatLon
from simulator.provision import ProvisionedBox
from simulator.scenario import load_scenario
from simulator.trajectory import StreetGrid
from simulator.transport import TransportConfig


@pytest.fixture
def driver() -> BoxDriver:
    scenario = load_scenario("normal")
    options = FleetOptions(transport=TransportConfig(port=1), interval_s=30)
    fleet = Fleet(
        [ProvisionedBox("356000000000018", "secret")],
        scenario=scenario,
        network=StreetGrid(LatLon(0, 0), 2000),
        clock=make_clock(scenario, options, lon=0),
        options=options,
    )
    return fleet.drivers[0]


@pytest.mark.parametrize("seconds", [0, 4, 3601, 86400])
def test_report_intervals_out_of_range_are_refused(driver: BoxDriver, seconds: int) -> None:
    outcome = driver._on_command(
        Command(1, CommandType.SET_REPORT_INTERVAL, seconds), driver.box.state
    )
    assert outcome == (CommandStatus.FAILED, CommandFailure.INVALID_PARAMETER)
    assert driver.interval_ms == 30_000


def test_report_interval_changes_the_cadence(driver: BoxDriver) -> None:
    driver.last_regular_t = 1_000_000
    assert (
        driver._on_command(Command(1, CommandType.SET_REPORT_INTERVAL, 5), driver.box.state) is None
    )
    assert driver.interval_ms == 5_000 and driver.next_t == 1_005_000


def test_locate_and_reboot_wake_the_driver(driver: BoxDriver) -> None:
    assert driver._on_command(Command(1, CommandType.LOCATE, 0), driver.box.state) is None
    assert driver._on_command(Command(2, CommandType.REBOOT, 0), driver.box.state) is None
    assert driver._locate == 1 and driver._reboot
    assert driver._wake.is_set()
    assert driver.ctx.report.commands == 2


def test_the_inhibit_relay_decides_whether_the_engine_starts(driver: BoxDriver) -> None:
    assert driver._can_start()
    driver.box.state.engine_start_inhibited = True
    assert not driver._can_start()


async def test_stopping_does_not_wait_for_acks_that_never_come() -> None:
    """A gateway that logs boxes in and never ACKs: a stop ends the run at once (plus the
    short stop timeout), not after the 60 s ACK timeout."""
    import asyncio
    import time

    from protocol.gp8 import Challenge, FrameDecoder, Login, LoginResult, LoginStatus, encode

    async def mute_gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode(Challenge(0, b"n" * 16, 0)))
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            decoder.feed(data)
            for message in decoder:
                if isinstance(message, Login):
                    writer.write(encode(LoginResult(1, LoginStatus.OK, 0)))
        writer.close()

    server = await asyncio.start_server(mute_gateway, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scenario = load_scenario("normal")
    options = FleetOptions(transport=TransportConfig(port=port), interval_s=1, stop_timeout_s=0.3)
    fleet = Fleet(
        [ProvisionedBox("356000000000018", "secret")],
        scenario=scenario,
        network=StreetGrid(LatLon(0, 0), 2000),
        clock=make_clock(scenario, options, lon=0),
        options=options,
    )
    running = asyncio.create_task(fleet.run())
    async with asyncio.timeout(5):
        while fleet.report.sent < 1 or not fleet.drivers[0].box.connected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    fleet.stop()
    async with asyncio.timeout(5):
        report = await running
    assert time.monotonic() - started < 2.0
    assert report.sent >= 1 and report.acked == 0
    assert report.snapshot()["pending"] == report.sent
    server.close()
    await server.wait_closed()
