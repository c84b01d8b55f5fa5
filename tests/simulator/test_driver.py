"""How a simulated box takes commands (what the box itself does is in simulator.box)."""

from __future__ import annotations

import pytest

from protocol import Command, CommandFailure, CommandStatus, CommandType
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
