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


REFUSING_SCENARIO = """
name = "refusals"
[[phases]]
behaviour = "drive"
duration = "10min"
events = ["sos", "tamper", "power_cut"]
[[phases]]
behaviour = "park"
duration = "10min"
events = ["crash"]
"""


async def test_refused_records_are_counted_by_kind_from_their_fates() -> None:
    """A gateway that refuses every EVENT and every other POSITION frame: the report counts
    exactly those records as rejected, positions and events apart, and nothing else."""
    import asyncio

    from protocol.gp8 import (
        Ack,
        Challenge,
        Event,
        FrameDecoder,
        Login,
        LoginResult,
        LoginStatus,
        Nack,
        NackReason,
        Position,
        encode,
    )
    from simulator.scenario import parse_scenario

    refused = {"positions": 0, "events": 0}
    frames = 0

    async def refusing_gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal frames
        writer.write(encode(Challenge(0, b"n" * 16, 0)))
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            decoder.feed(data)
            for message in decoder:
                if isinstance(message, Login):
                    writer.write(encode(LoginResult(1, LoginStatus.OK, 0)))
                    continue
                if isinstance(message, Event):
                    refused["events"] += 1
                    writer.write(encode(Nack(0, message.seq, NackReason.INVALID_DATA)))
                elif isinstance(message, Position):
                    frames += 1
                    if frames % 2:
                        refused["positions"] += len(message.records)
                        writer.write(encode(Nack(0, message.seq, NackReason.INVALID_DATA)))
                    else:
                        writer.write(encode(Ack(0, message.seq)))
                elif not isinstance(message, Exception):
                    writer.write(encode(Ack(0, message.seq)))
        writer.close()

    server = await asyncio.start_server(refusing_gateway, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scenario = parse_scenario(REFUSING_SCENARIO)
    options = FleetOptions(transport=TransportConfig(port=port, batch_size=5), interval_s=30)
    fleet = Fleet(
        [ProvisionedBox("356000000000018", "secret")],
        scenario=scenario,
        network=StreetGrid(LatLon(0, 0), 2000),
        clock=make_clock(scenario, options, lon=0),
        options=options,
    )
    async with asyncio.timeout(30):
        report = await fleet.run()
    server.close()
    await server.wait_closed()

    snap = report.snapshot()
    assert snap["pending"] == 0 and refused["events"] >= 4 and refused["positions"] > 0
    assert (report.rejected, report.events_rejected) == (refused["positions"], refused["events"])
    assert snap["rejected"] == refused["positions"] + refused["events"]
    assert snap["events_acked"] == snap["events_sent"] - refused["events"]
    assert snap["acked"] == snap["sent"] - refused["positions"]
