"""Each built-in scenario against a real gp8 (gateway + API + SQLite), checked through the API.

The simulated clock runs in the past and ends now, so hours of driving take a second or two;
the boxes' fittings are back-dated to the start so every record belongs to its vehicle.
"""

from __future__ import annotations

from typing import Any

import pytest

from simulator.driver import LATE_REPLAY_WALL_S
from simulator.geo import local_hour
from simulator.pacing import wall_ms
from tests.simulator.conftest import CENTER, FleetAccess, SimRun, run_scenario

pytestmark = pytest.mark.slow


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def _stored(access: FleetAccess, run: SimRun) -> dict[str, list[dict[str, Any]]]:
    """Every stored position of each simulated vehicle, as the API lists them."""
    out = {}
    for box in run.boxes:
        assert box.vehicle_id is not None
        out[box.vehicle_id] = await access.positions(
            box.vehicle_id, run.start_ms - 1, wall_ms() + 1
        )
    return out


def _produced(run: SimRun) -> dict[str, int]:
    """Positions each box produced."""
    return {d.provisioned.vehicle_id or "": d.positions for d in run.fleet.drivers}


def _assert_complete(run: SimRun, stored: dict[str, list[dict[str, Any]]]) -> None:
    snap = run.snapshot
    assert snap["sent"] > 0
    assert snap["acked"] == snap["sent"], snap
    assert snap["pending"] == 0
    assert sum(len(v) for v in stored.values()) == snap["sent"]
    for vehicle_id, count in _produced(run).items():
        assert len(stored[vehicle_id]) == count


async def test_normal_positions_in_order_with_trips_and_night_parking(
    fleet: FleetAccess,
) -> None:
    # A whole day at one fix a minute: trips, stops and the night.
    run = await run_scenario(fleet, "normal", devices=2, interval_s=60, count=24 * 60)
    stored = await _stored(fleet, run)
    _assert_complete(run, stored)
    for vehicle_id, positions in stored.items():
        times = [_ms(p["time"]) for p in positions]
        assert times == sorted(times) and len(set(times)) == len(times)
        # One a minute, from the box's own offset in the first minute.
        assert 0 <= times[0] - run.start_ms < 60_000
        assert times == [times[0] + i * 60_000 for i in range(24 * 60)]
        odometers = [p["odometer_m"] for p in positions]
        assert odometers == sorted(odometers) and odometers[-1] > odometers[0]
        assert any(p["ignition"] and p["speed_kmh"] > 0 for p in positions)
        # Night parking: nobody drives between 22:30 and 06:00 local (trips end by 22:15).
        night = [p for p in positions if not 6 <= local_hour(_ms(p["time"]), CENTER.lon) < 22.5]
        assert len(night) >= 7 * 60
        assert not any(p["ignition"] or p["speed_kmh"] for p in night)
        events = await fleet.events(vehicle_id, run.start_ms - 1, wall_ms() + 1)
        kinds = {e["type"] for e in events}
        assert {"ignition_on", "ignition_off"} <= kinds


async def test_theft_towed_at_night_then_driven_away(fleet: FleetAccess) -> None:
    run = await run_scenario(fleet, "theft", devices=2)
    stored = await _stored(fleet, run)
    _assert_complete(run, stored)
    for vehicle_id, positions in stored.items():
        towed = [p for p in positions if not p["ignition"] and p["speed_kmh"] > 0]
        assert towed, "no position moving with the ignition off"
        for p in towed:
            hour = local_hour(_ms(p["time"]), CENTER.lon)
            assert hour >= 22 or hour < 6, f"towed at {hour:.1f} h local"
        assert any(p["doors_locked"] for p in positions if _ms(p["time"]) < _ms(towed[0]["time"]))
        events = await fleet.events(vehicle_id, run.start_ms - 1, wall_ms() + 1)
        towing = [e for e in events if e["type"] == "towing"]
        assert len(towing) == 1
        tow_ms = _ms(towing[0]["time"])
        # Reported while it was being towed: after the fix before the first moving one.
        assert _ms(towed[0]["time"]) - 30_000 < tow_ms <= _ms(towed[-1]["time"])
        # Then driven away: ignition on, moving, no badge, after the tow.
        driven = [
            p
            for p in positions
            if _ms(p["time"]) > _ms(towed[-1]["time"]) and p["ignition"] and p["speed_kmh"] > 0
        ]
        assert driven
        assert all(p["driver_badge"] is None for p in driven)
        assert any(e["type"] == "ignition_on" and _ms(e["time"]) > tow_ms for e in events)


async def test_tunnel_invalid_fixes_stored_last_position_unaffected(fleet: FleetAccess) -> None:
    run = await run_scenario(fleet, "tunnel", devices=2)
    stored = await _stored(fleet, run)
    _assert_complete(run, stored)
    for vehicle_id, positions in stored.items():
        invalid = [p for p in positions if not p["fix_valid"]]
        # 3 min of tunnel and 30 min of car park at one fix per 30 s.
        assert len(invalid) == 6 + 60
        last_valid: dict[str, Any] | None = None
        for p in positions:
            if p["fix_valid"]:
                last_valid = p
            else:
                # Without a fix the box repeats the last known position.
                assert last_valid is not None
                assert (p["lat"], p["lon"]) == (last_valid["lat"], last_valid["lon"])
                assert p["satellites"] == 0
        assert last_valid is not None and not positions[-1]["fix_valid"]
        last = await fleet.last_position(vehicle_id)
        assert last["position"]["time"] == last_valid["time"]
        assert (last["position"]["lat"], last["position"]["lon"]) == (
            last_valid["lat"],
            last_valid["lon"],
        )


async def test_storm_every_box_reconnects_and_nothing_is_lost(fleet: FleetAccess) -> None:
    devices = 4
    run = await run_scenario(fleet, "storm", devices=devices)
    stored = await _stored(fleet, run)
    _assert_complete(run, stored)
    snap = run.snapshot
    assert snap["storms"] == 2
    for driver in run.fleet.drivers:
        assert driver.box.logins >= 3  # the first login and one after each storm
    # The storm caught frames in flight: they were resent, and stored once.
    assert snap["resent"] > 0
    health = await fleet.gp8.health()
    assert health["gateway"]["connections"]["total"] >= 3 * devices
    assert health["gateway"]["records"].get("duplicate", 0) > 0


async def test_a_storm_raises_no_duplicate_box_alert(fleet: FleetAccess) -> None:
    # Boxes that reconnect at once, before their old socket's reset is read, are not clones:
    # the old session ends within the registry's grace (gateway/registry.py).
    run = await run_scenario(fleet, "storm", devices=2)
    assert run.snapshot["logins"] >= 3 * 2
    alerts = await fleet.get("/v1/alerts")
    assert not [a for a in alerts["data"] if a["kind"] == "duplicate_box"]


async def test_garbage_rejected_frames_counted_all_valid_positions_stored(
    fleet: FleetAccess,
) -> None:
    before = (await fleet.gp8.health())["gateway"]
    run = await run_scenario(fleet, "garbage", devices=2)
    stored = await _stored(fleet, run)
    _assert_complete(run, stored)
    made: dict[str, int] = {}
    for driver in run.fleet.drivers:
        for kind, n in driver.garbage.made.items():
            made[kind] = made.get(kind, 0) + n
    assert run.snapshot["garbage"] == sum(made.values()) > 0
    # Every corrupted frame with a sequence number was NACKed, for the right reason.
    nacks = run.snapshot["nacks"]
    assert nacks.get("bad_crc", 0) == made["bad_crc"]
    assert nacks.get("unknown_type", 0) == made["unknown_type"]
    assert nacks.get("malformed", 0) == made["malformed"]
    assert run.snapshot["rejected"] == 0  # no valid record was refused
    errors = (await fleet.gp8.health())["gateway"]["frame_errors"]
    for kind in ("bad_crc", "unknown_type", "malformed"):
        counted = errors.get(kind, 0) - before["frame_errors"].get(kind, 0)
        assert counted >= made[kind]
    if made["noise"]:
        assert errors.get("garbage", 0) > 0


async def test_offline_replay_late_records_stored_last_position_not_moved_back(
    fleet: FleetAccess,
) -> None:
    run = await run_scenario(fleet, "offline-replay", devices=2)
    stored = await _stored(fleet, run)
    _assert_complete(run, stored)
    offline_from = run.start_ms + 15 * 60_000
    offline_to = offline_from + 30 * 60_000
    for vehicle_id, positions in stored.items():
        buffered = [p for p in positions if p["buffered"]]
        assert len(buffered) == 60  # 30 min offline, one fix per 30 s
        for p in buffered:
            assert offline_from <= _ms(p["time"]) < offline_to
        # Listed in time order, late or not.
        times = [_ms(p["time"]) for p in positions]
        assert times == sorted(times)
        # Out of order on the wire: newer live records reached gp8 before the backlog.
        first_buffered_received = min(_ms(p["received_at"]) for p in buffered)
        newer_live = [p for p in positions if _ms(p["time"]) >= offline_to]
        first_live_received = min(_ms(p["received_at"]) for p in newer_live)
        # Visibly late (LATE_REPLAY_WALL_S of wall time after the link returned), although
        # the run covers its simulated hour at ACK speed: not the same received_at as the
        # live records.
        assert first_buffered_received - first_live_received >= LATE_REPLAY_WALL_S * 1000 / 2
        last = await fleet.last_position(vehicle_id)
        assert last["position"]["time"] == positions[-1]["time"]
