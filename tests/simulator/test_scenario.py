"""Scenario files: the built-in ones load, and mistakes are errors that say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.gp8 import EventCode, WarningLight
from simulator.scenario import (
    Behaviour,
    Replay,
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_duration,
    parse_scenario,
)
from simulator.trajectory import Motion

REQUIRED = {"normal", "theft", "tunnel", "storm", "garbage", "offline-replay"}


def test_the_issue_scenarios_are_built_in_and_valid() -> None:
    names = set(builtin_names())
    assert names >= REQUIRED
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.description
        assert scenario.phases


def test_builtin_scenarios_mean_what_they_say() -> None:
    theft = load_scenario("theft")
    assert [p.motion for p in theft.phases] == [
        Motion.DRIVE,
        Motion.PARK,
        Motion.TOW,
        Motion.PARK,
        Motion.DRIVE,
    ]
    assert theft.start_local_min == 21 * 60
    assert theft.phases[-1].badge is False
    tunnel = load_scenario("tunnel")
    assert [p.gps for p in tunnel.phases] == [True, False, True, False]
    offline = load_scenario("offline-replay")
    assert [p.online for p in offline.phases] == [True, False, True]
    assert offline.phases[1].replay is Replay.LATE
    assert sum(p.storm for p in load_scenario("storm").phases) == 2
    assert any(p.garbage_rate > 0 for p in load_scenario("garbage").phases)
    assert load_scenario("normal").duration_s is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("90sec", 90.0),
        ("10min", 600.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1h30min", 5400.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        (" 2 h ", 7200.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10 minutes", "5x", "-5", "h", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(0, 10**6))
def test_duration_units_add_up(seconds: int) -> None:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    assert parse_duration(f"{hours}h{minutes}min{secs}s") == seconds


def test_a_scenario_with_every_key() -> None:
    scenario = parse_scenario(
        """
name = "everything"
description = "all keys"
interval = "10s"
start_local = "06:30"
repeat = true

[defaults]
drop_rate = 0.1

[[phases]]
name = "commute"
behaviour = "drive"
duration = "20min"
badge = true
speed_factor = [0.9, 1.2]
warnings = ["engine", "tyre_pressure"]
events = ["sos"]
interval = "5s"

[[phases]]
behaviour = "offline"
motion = "park"
duration = "1h"
replay = "late"
replay_delay = "2min"
lock = false
gps = "denied"

[[phases]]
behaviour = "storm"
duration = "5min"
storm_spread = "2s"
garbage_rate = 0.5
night_parking = false
drop_rate = 0
"""
    )
    assert scenario.interval_s == 10
    assert scenario.start_local_min == 6 * 60 + 30
    assert scenario.repeat and scenario.duration_s is None and scenario.cycle_s() == 85 * 60
    commute, parked, storm = scenario.phases
    assert commute.motion is Motion.DRIVE and commute.badge is True
    assert commute.speed_factor == (0.9, 1.2)
    assert commute.warnings == WarningLight.ENGINE | WarningLight.TYRE_PRESSURE
    assert commute.events == (EventCode.SOS,)
    assert commute.interval_s == 5 and commute.drop_rate == 0.1
    assert parked.behaviour is Behaviour.OFFLINE and parked.motion is Motion.PARK
    assert not parked.online and not parked.gps and parked.lock is False
    assert parked.replay is Replay.LATE and parked.replay_delay_s == 120
    assert storm.storm and storm.storm_spread_s == 2 and storm.garbage_rate == 0.5
    assert storm.drop_rate == 0 and storm.night_parking is False
    # Phases by time, repeating.
    assert scenario.phase_at(0) == (0, 0.0)
    assert scenario.phase_at(20 * 60) == (1, 1200.0)
    assert scenario.phase_at(85 * 60 + 1) == (0, 85 * 60.0)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('colour = "red"\n[[phases]]\nbehaviour = "park"', "unknown key(s) colour"),
        ("[[phases]]\nbehaviour = 'fly'", "phases[0].behaviour"),
        ('[[phases]]\nduration = "1h"\nspeed = 3', "phases[0]: unknown key(s) speed"),
        ('[[phases]]\nbehaviour = "park"\n[[phases]]\nbehaviour = "drive"', "phases[0].duration"),
        ("[[phases]]\nduration = 'soon'", "phases[0].duration"),
        ("[[phases]]\ndrop_rate = 1.5", "phases[0].drop_rate"),
        ("[[phases]]\ngarbage_rate = -1", "phases[0].garbage_rate"),
        ("[[phases]]\ngarbage_rate = 'lots'", "phases[0].garbage_rate"),
        ("[[phases]]\ngps = 'maybe'", "phases[0].gps"),
        ("[[phases]]\nlink = 'up'", "phases[0].link"),
        ("[[phases]]\nreplay = 'never'", "phases[0].replay"),
        ("[[phases]]\nstorm = 'yes'", "phases[0].storm"),
        ("[[phases]]\nwarnings = ['smoke']", "phases[0].warnings"),
        ("[[phases]]\nevents = ['party']", "phases[0].events"),
        ("[[phases]]\nspeed_factor = [1.2, 0.8]", "phases[0].speed_factor"),
        ("[[phases]]\nspeed_factor = [0.5, 3]", "phases[0].speed_factor"),
        ("[[phases]]\ninterval = 0", "phases[0].interval"),
        ("start_local = '25:00'\n[[phases]]\n", "start_local"),
        ("repeat = true\n[[phases]]\nbehaviour = 'park'", "repeat"),
        ("phases = []", "phases"),
        ("name = 'x'", "phases"),
        ("[defaults]\nduration = '1h'\n[[phases]]\n", "defaults"),
    ],
)
def test_validation_errors_name_the_key(body: str, where: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(body, source="mine.toml")
    assert str(caught.value).startswith("mine.toml: ")
    assert where in str(caught.value)


def test_syntax_errors_are_scenario_errors() -> None:
    with pytest.raises(ScenarioError, match="not valid TOML"):
        parse_scenario("[[phases]\n", source="broken.toml")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        parse_scenario("{", source="broken.json", fmt="json")
    with pytest.raises(ScenarioError, match="a scenario is a table"):
        parse_scenario("[1, 2]", fmt="json")


def test_files_in_toml_json_and_yaml(tmp_path: Path) -> None:
    data = {
        "name": "mine",
        "phases": [{"behaviour": "tunnel", "duration": "2min"}, {"behaviour": "park"}],
    }
    (tmp_path / "mine.json").write_text(json.dumps(data))
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nphases:\n  - behaviour: tunnel\n    duration: 2min\n  - behaviour: park\n"
    )
    (tmp_path / "mine.toml").write_text(
        'name = "mine"\n[[phases]]\nbehaviour = "tunnel"\nduration = "2min"\n'
        '[[phases]]\nbehaviour = "park"\n'
    )
    loaded = [load_scenario(str(tmp_path / f"mine.{ext}")) for ext in ("json", "yaml", "toml")]
    assert loaded[0].phases == loaded[1].phases == loaded[2].phases
    assert loaded[0].phases[0].gps is False and loaded[0].phases[1].duration_s is None


def test_unknown_names_list_the_built_in_ones(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="theft"):
        load_scenario("no-such-scenario")
    with pytest.raises(ScenarioError, match=r"missing\.toml"):
        load_scenario(str(tmp_path / "missing.toml"))
