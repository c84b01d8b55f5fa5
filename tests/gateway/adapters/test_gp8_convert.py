from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.gp8 import to_event, to_position, to_positions
from gateway.context import DeviceContext, Fittings
from protocol.gp8 import Event, EventCode, RecordFlags
from simulator.box import make_record
from storage.models import Fitting, Position

T0 = 1_700_000_000_000


def ctx(*fittings: Fitting) -> DeviceContext:
    return DeviceContext("flt_a", "dev_1", "356000000000001", Fittings.of(fittings))


def fitting(vehicle: str, from_ms: int, to_ms: int | None = None) -> Fitting:
    return Fitting("flt_a", "dev_1", vehicle, from_ms, to_ms)


def test_position_fields_are_converted_to_physical_units() -> None:
    record = make_record(
        T0,
        48.8566123,
        -2.3522456,
        speed_kmh=87.3,
        heading_deg=271.5,
        hdop=1.3,
        ignition=True,
        flags=RecordFlags.DOORS_LOCKED | RecordFlags.ENGINE_START_INHIBITED,
        badge=4242,
        buffered=True,
        odometer_m=123_456,
        warnings=0b101,
    )
    p = to_position(record, ctx(), received_ms=T0 + 5)
    assert (p.fleet_id, p.device_id, p.vehicle_id) == ("flt_a", "dev_1", None)
    assert (p.time_ms, p.received_ms) == (T0, T0 + 5)
    assert (p.lat, p.lon) == (48.8566123, -2.3522456)
    assert (p.speed_kmh, p.heading_deg, p.hdop) == (87.3, 271.5, 1.3)
    assert p.fix_valid and p.ignition and p.doors_locked and p.engine_start_inhibited
    assert p.external_power and p.buffered
    assert (p.driver_badge, p.odometer_m, p.warnings) == (4242, 123_456, 0b101)


def test_positional_construction_matches_the_model_fields() -> None:
    # to_position builds Position positionally for speed; a reordered model must fail here.
    record = make_record(T0, 10.0, 20.0, speed_kmh=3.0, heading_deg=4.0, hdop=0.5, badge=9)
    p = to_position(record, ctx(fitting("veh_1", 0)), T0 + 1)
    expected = Position(
        fleet_id="flt_a",
        device_id="dev_1",
        vehicle_id="veh_1",
        time_ms=T0,
        received_ms=T0 + 1,
        lat=10.0,
        lon=20.0,
        altitude_m=record.altitude_m,
        speed_kmh=3.0,
        heading_deg=4.0,
        satellites=record.satellites,
        hdop=0.5,
        fix_valid=True,
        ignition=False,
        doors_locked=False,
        engine_start_inhibited=False,
        external_power=True,
        odometer_m=record.odometer_m,
        external_power_mv=record.ext_power_mv,
        battery_mv=record.battery_mv,
        gsm_signal=record.gsm_signal,
        warnings=record.warnings,
        driver_badge=9,
        buffered=False,
        io=None,  # a GP8 box reports no raw IO elements
    )
    assert p == expected
    assert list(Position._fields)[-3:] == ["driver_badge", "buffered", "io"]


def test_no_badge_and_cleared_flags() -> None:
    record = make_record(T0, 0, 0, fix_valid=False, ext_power_mv=0)
    p = to_position(record, ctx(), T0)
    assert p.driver_badge is None
    assert not (p.fix_valid or p.ignition or p.doors_locked or p.external_power or p.buffered)


def test_event_code_is_the_lower_case_name_and_carries_its_position() -> None:
    record = make_record(T0, 1.0, 2.0)
    event = to_event(Event(7, EventCode.POWER_CUT, 3, record), ctx(fitting("veh_1", 0)), T0)
    assert (event.code, event.detail, event.time_ms) == ("power_cut", 3, T0)
    assert event.vehicle_id == event.position.vehicle_id == "veh_1"


def test_vehicle_is_the_one_fitted_at_the_record_time() -> None:
    c = ctx(fitting("veh_b", 2000, None), fitting("veh_a", 1000, 1500))  # unordered on purpose
    assert c.fittings.vehicle_at(999) is None
    assert c.fittings.vehicle_at(1000) == "veh_a"
    assert c.fittings.vehicle_at(1499) == "veh_a"
    assert c.fittings.vehicle_at(1500) is None  # to_ms is exclusive: the gap
    assert c.fittings.vehicle_at(2000) == "veh_b"
    assert c.fittings.vehicle_at(10**13) == "veh_b"


@st.composite
def histories(draw: st.DrawFn) -> list[Fitting]:
    cuts = sorted(draw(st.sets(st.integers(0, 10_000), min_size=0, max_size=12)))
    result = []
    for i in range(0, len(cuts) - 1, 2):
        if draw(st.booleans()):
            result.append(fitting(f"veh_{i}", cuts[i], cuts[i + 1]))
    if cuts and len(cuts) % 2 and draw(st.booleans()):
        result.append(fitting("veh_open", cuts[-1], None))
    return result


@given(histories(), st.integers(-10, 11_000))
def test_vehicle_at_matches_a_linear_scan(history: list[Fitting], t: int) -> None:
    expected = next(
        (f.vehicle_id for f in history if f.from_ms <= t and (f.to_ms is None or t < f.to_ms)),
        None,
    )
    assert Fittings.of(history).vehicle_at(t) == expected


@given(histories(), st.lists(st.integers(-10, 11_000), max_size=6))
def test_a_frame_gets_each_record_s_vehicle(history: list[Fitting], times: list[int]) -> None:
    # to_positions reads the fittings' tail without a lookup: it must agree with vehicle_at.
    c = ctx(*history)
    records = [make_record(T0, 1.0, 2.0)._replace(time_ms=t) for t in times if t >= 0]
    positions = to_positions(records, c, T0)
    assert [p.vehicle_id for p in positions] == [c.fittings.vehicle_at(r.time_ms) for r in records]
    assert positions == [to_position(r, c, T0) for r in records]
