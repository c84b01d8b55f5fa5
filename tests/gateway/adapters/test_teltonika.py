"""The Teltonika adapter: records through the FMB device profile, events, and the session
driven by the real device-session core (gateway/core.py) with in-memory storage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from gateway.adapters.teltonika import (
    BARS_TO_CSQ,
    FMB,
    FMB920,
    HDOP_UNKNOWN,
    SILENCE,
    DeviceProfile,
    TeltonikaSession,
    check_record,
    command_text,
    profile_for,
    sessions,
    to_event,
    to_position,
    unmapped_io,
)
from gateway.context import DeviceContext, Fittings
from gateway.core import DeviceSession, Refusal
from gateway.metrics import GatewayMetrics
from protocol.gp8 import Command as Gp8Command
from protocol.gp8 import CommandType
from protocol.teltonika import (
    AvlId,
    AvlPacket,
    AvlRecord,
    Codec,
    Command,
    Imei,
    ImeiReply,
    RecordsAck,
    Response,
    encode,
)
from protocol.teltonika import commands as gprs
from storage.models import (
    Device,
    DeviceModel,
    DeviceProtocol,
    DeviceStatus,
    Event,
    Fitting,
    Position,
    new_id,
)
from tests.gateway.fakes import FakeDevices

T0 = 1_700_000_000_000
IMEI = "356307042441013"
CTX = DeviceContext("flt_a", "dev_1", IMEI, Fittings.of([Fitting("flt_a", "dev_1", "veh_1", 0)]))


def record(time_ms: int = T0, *, event_id: int = 0, satellites: int = 9, **io: Any) -> AvlRecord:
    """A Codec 8 Extended record at Paris whose IO elements are given by AvlId name."""
    values = {int(AvlId[name.upper()]): v for name, v in io.items()}
    by_size: dict[int, list[tuple[int, int]]] = {1: [], 2: [], 4: [], 8: []}
    for io_id, value in values.items():
        size = 8 if value > 0xFFFF_FFFF else 4 if value > 0xFFFF else 2 if value > 0xFF else 1
        by_size[size].append((io_id, value))
    return AvlRecord(
        time_ms, 1, 23_522_219, 488_566_101, 35, 271, satellites, 87, event_id,
        io1=tuple(by_size[1]), io2=tuple(by_size[2]), io4=tuple(by_size[4]),
        io8=tuple(by_size[8]),
    )  # fmt: skip


def convert(r: AvlRecord, profile: DeviceProfile = FMB, received_ms: int = T0 + 500) -> Position:
    return to_position(r, r.io, CTX, received_ms, profile)


# --- records → positions -----------------------------------------------------------------------


def test_positional_construction_matches_the_model_fields() -> None:
    r = record(
        ignition=1, total_odometer=123_456, external_voltage=12_345, battery_voltage=4_100,
        gsm_signal=4, ibutton=0x1234_5678_9ABC, gnss_hdop=13, gnss_status=1,
        digital_output_1=1, digital_output_2=0,
    )  # fmt: skip
    assert convert(r) == Position(
        fleet_id="flt_a",
        device_id="dev_1",
        vehicle_id="veh_1",
        time_ms=T0,
        received_ms=T0 + 500,
        lat=48.8566101,
        lon=2.3522219,  # longitude came first on the wire
        altitude_m=35,
        speed_kmh=87.0,
        heading_deg=271.0,
        satellites=9,
        hdop=1.3,
        fix_valid=True,
        ignition=True,
        doors_locked=False,
        engine_start_inhibited=True,
        external_power=True,
        odometer_m=123_456,
        external_power_mv=12_345,
        battery_mv=4_100,
        gsm_signal=BARS_TO_CSQ[4],
        warnings=0,
        driver_badge=0x1234_5678_9ABC,
        buffered=False,
    )


def test_no_satellites_is_no_fix() -> None:
    assert not convert(record(satellites=0)).fix_valid
    assert convert(record(satellites=5)).fix_valid
    # GNSS status 2: on, without a fix, whatever the satellite count says.
    assert not convert(record(satellites=5, gnss_status=2)).fix_valid


def test_absent_elements_take_unknown_values() -> None:
    p = convert(record())
    assert (p.hdop, p.gsm_signal, p.driver_badge) == (HDOP_UNKNOWN, 99, None)
    assert (p.odometer_m, p.external_power_mv, p.battery_mv) == (0, 0, 0)
    assert not (p.ignition or p.external_power or p.doors_locked or p.engine_start_inhibited)


def test_outputs_per_profile() -> None:
    r = record(digital_output_1=0, digital_output_2=1)
    assert convert(r, FMB).doors_locked
    assert not convert(r, FMB920).doors_locked  # FMB920: one output, no lock line
    swapped = dataclasses.replace(FMB, wiring=gprs.Wiring(immobiliser=2, lock=1))
    assert (swapped.engine_start_inhibit, swapped.doors_locked) == (180, 179)
    p = convert(r, swapped)
    assert p.engine_start_inhibited and not p.doors_locked


def test_profile_for_models() -> None:
    assert profile_for(DeviceModel.FMB920, {}) is FMB920
    assert profile_for(DeviceModel.FMC130, {}) is FMB
    custom = DeviceProfile("custom", ignition=AvlId.DIGITAL_INPUT_1)
    assert profile_for(DeviceModel.FMC130, {DeviceModel.FMC130: custom}) is custom
    assert convert(record(digital_input_1=1), custom).ignition


def test_gsm_bars_heading_and_lateness() -> None:
    assert [convert(record(gsm_signal=b)).gsm_signal for b in range(6)] == [0, 6, 12, 19, 25, 31]
    assert convert(record(gsm_signal=9)).gsm_signal == 99
    assert convert(record()._replace(angle_deg=360)).heading_deg == 0.0
    assert convert(record(), received_ms=T0 + FMB.buffered_after_ms + 1).buffered
    assert not convert(record(), received_ms=T0 + FMB.buffered_after_ms).buffered


def test_badge_beyond_storage_range_is_dropped_not_the_record() -> None:
    assert convert(record(ibutton=2**63)).driver_badge is None


def test_impossible_records() -> None:
    assert check_record(record(), T0) is None
    assert check_record(record()._replace(lat_e7=900_000_001), T0) == "latitude_out_of_range"
    assert check_record(record()._replace(lon_e7=-1_800_000_001), T0) == "longitude_out_of_range"
    assert check_record(record(0), T0) == "time_too_old"
    assert check_record(record(T0 + 11 * 60_000), T0) == "time_in_future"
    assert check_record(record()._replace(angle_deg=361), T0) == "heading_out_of_range"


# --- events ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_id", "io", "expected"),
    [
        (AvlId.TOWING, {"towing": 1}, ("towing", 1)),
        (AvlId.CRASH_DETECTION, {"crash_detection": 1}, ("crash", 1)),
        (AvlId.JAMMING, {"jamming": 1}, ("gsm_jamming", 1)),
        (AvlId.UNPLUG, {"unplug": 1}, ("power_cut", 1)),
        (AvlId.UNPLUG, {"unplug": 0}, ("power_restored", 0)),
        (AvlId.GNSS_JAMMING, {"gnss_jamming": 2}, ("gps_jamming", 2)),
        (AvlId.AUTO_GEOFENCE, {"auto_geofence": 0}, ("auto_geofence", 0)),
        (AvlId.GEOFENCE_ZONE_1, {"geofence_zone_1": 1}, ("geofence_zone_1", 1)),
        (AvlId.GEOFENCE_ZONE_5, {"geofence_zone_5": 0}, ("geofence_zone_5", 0)),
        (AvlId.TRIP, {"trip": 1}, ("trip", 1)),
        (AvlId.IDLING, {"idling": 1}, ("idling", 1)),
        (AvlId.OVERSPEEDING, {"overspeeding": 132}, ("overspeed", 132)),
        (AvlId.GREEN_DRIVING_TYPE, {"green_driving_type": 2, "green_driving_value": 45},
         ("harsh_braking", 45)),
        (AvlId.GREEN_DRIVING_TYPE, {"green_driving_type": 1}, ("harsh_acceleration", 0)),
        (AvlId.GREEN_DRIVING_TYPE, {"green_driving_type": 3}, ("harsh_cornering", 0)),
        (AvlId.IGNITION, {"ignition": 1}, ("ignition_on", 0)),
        (AvlId.IGNITION, {"ignition": 0}, ("ignition_off", 0)),
        (AvlId.IBUTTON, {"ibutton": 77}, ("driver_badge", 0)),
    ],
)  # fmt: skip
def test_event_ids(event_id: int, io: dict[str, int], expected: tuple[str, int]) -> None:
    r = record(event_id=event_id, **io)
    position = convert(r)
    event = to_event(r, r.io, position, FMB)
    assert event == Event(
        "flt_a", "dev_1", "veh_1", T0, T0 + 500, expected[0], expected[1], position
    )


@pytest.mark.parametrize(
    ("event_id", "io"),
    [(0, {}), (AvlId.MOVEMENT, {"movement": 1}), (AvlId.IBUTTON, {"ibutton": 0}),
     (AvlId.GREEN_DRIVING_TYPE, {"green_driving_type": 9})],
)  # fmt: skip
def test_records_that_are_no_event(event_id: int, io: dict[str, int]) -> None:
    r = record(event_id=event_id, **io)
    assert to_event(r, r.io, convert(r), FMB) is None


def test_unmapped_io_is_kept_raw_with_the_position() -> None:
    r = record(ignition=1, movement=1, gnss_pdop=12)._replace(iox=((385, b"\x01\xab"),))
    assert unmapped_io(r.io, FMB) == {"240": 1, "181": 12, "385": "01ab"}
    assert convert(r).io == {"240": 1, "181": 12, "385": "01ab"}


def test_unmapped_io_beyond_a_signed_64_bit_integer_is_hex() -> None:
    # No engine stores an integer above 2^63-1 (BSON, SQLite): it would fail the whole batch.
    r = record()._replace(io8=((400, 2**64 - 2), (401, 2**63 - 1)))
    assert unmapped_io(r.io, FMB) == {"400": "fffffffffffffffe", "401": 2**63 - 1}


def test_no_unmapped_io_is_none() -> None:
    r = record(ignition=1)
    assert unmapped_io(r.io, FMB) is None and convert(r).io is None


# --- the session, through the real core ---------------------------------------------------------


def teltonika_device(
    devices: FakeDevices,
    imei: str = IMEI,
    *,
    protocol: DeviceProtocol = DeviceProtocol.TELTONIKA,
    status: DeviceStatus = DeviceStatus.ACTIVE,
    model: DeviceModel = DeviceModel.FMC130,
) -> Device:
    device = Device(new_id("dev"), "flt_a", imei, model, "", T0, status=status, protocol=protocol)
    devices.by_imei[imei] = device
    return device


class Harness:
    """A TeltonikaSession in a DeviceSession, with a store policy that can fail."""

    def __init__(self, devices: FakeDevices) -> None:
        self.metrics = GatewayMetrics()
        self.session: TeltonikaSession = sessions(devices, self.metrics)()
        self.stored: list[tuple[Sequence[Position], Sequence[Event]]] = []
        self.answers: list[Any] = []
        self.store_ok = True
        self.core = DeviceSession(self.session, self._store, self.metrics, self._answer)

    async def _store(self, positions: Sequence[Position], events: Sequence[Event]) -> bool:
        if not self.store_ok:
            return False
        self.stored.append((positions, events))
        return True

    async def _answer(self, imei: str, frame: Any) -> None:
        self.answers.append((imei, frame))

    async def send(self, data: bytes) -> Any:
        return await self.core.handle(data, T0 + 1_000)

    @property
    def positions(self) -> list[Position]:
        return [p for ps, _ in self.stored for p in ps]


def packet(*records: AvlRecord) -> AvlPacket:
    return AvlPacket(Codec.CODEC_8E, records)


async def logged_in(devices: FakeDevices) -> Harness:
    teltonika_device(devices)
    h = Harness(devices)
    step = await h.send(encode(Imei(IMEI)))
    assert step.wire == b"\x01" and step.close is None and step.logged_in
    return h


async def test_login_then_records_acknowledged_by_count() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    assert h.metrics.logins["ok"] == 1
    step = await h.send(encode(packet(record(T0), record(T0 + 1_000))))
    assert step.wire == bytes.fromhex("00000002")
    assert [p.time_ms for p in h.positions] == [T0, T0 + 1_000]
    assert h.metrics.frames["avl"] == 1


@pytest.mark.parametrize(
    ("setup", "status"),
    [
        (lambda d: None, "unknown_device"),
        (lambda d: teltonika_device(d, protocol=DeviceProtocol.GP8), "wrong_protocol"),
        (lambda d: teltonika_device(d, status=DeviceStatus.DISABLED), "device_disabled"),
    ],
)
async def test_login_refused_with_00_and_closed(setup: Any, status: str) -> None:
    devices = FakeDevices()
    setup(devices)
    h = Harness(devices)
    step = await h.send(encode(Imei(IMEI)) + encode(packet(record())))
    assert step.wire == b"\x00"
    assert step.close == "login_refused"
    assert h.metrics.logins[status] == 1
    assert h.stored == []


async def test_storage_down_at_login() -> None:
    devices = FakeDevices()
    teltonika_device(devices)
    devices.unavailable = True
    h = Harness(devices)
    step = await h.send(encode(Imei(IMEI)))
    assert (step.wire, step.close) == (b"\x00", "login_refused")
    assert h.metrics.logins["server_busy"] == 1


async def test_garbage_instead_of_an_imei_is_a_refused_login() -> None:
    h = Harness(FakeDevices())
    step = await h.send(b"GET / HTTP/1.1\r\n")
    assert step.wire == b"\x00" and step.close == "bad_imei"
    assert h.metrics.logins["bad_imei"] == 1
    assert h.metrics.frame_errors["bad_imei"] == 1


async def test_failed_store_answers_zero_so_the_box_resends() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    h.store_ok = False
    data = encode(packet(record(T0)))
    step = await h.send(data)
    assert step.wire == bytes.fromhex("00000000") and step.close is None
    assert h.metrics.nacks[Refusal.SERVER_BUSY.value] == 1
    h.store_ok = True
    step = await h.send(data)  # the resend
    assert step.wire == bytes.fromhex("00000001")
    assert [p.time_ms for p in h.positions] == [T0]


async def test_bad_packet_closes_after_the_good_ones_before_it() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    bad = bytearray(encode(packet(record(T0 + 1))))
    bad[-1] ^= 1
    step = await h.send(encode(packet(record(T0))) + bytes(bad) + encode(packet(record(T0 + 2))))
    assert step.close == "bad_crc"
    assert step.wire == bytes.fromhex("00000001")  # the packet before the damage
    assert [p.time_ms for p in h.positions] == [T0]
    assert h.metrics.frame_errors["bad_crc"] == 1
    assert h.metrics.logins["bad_crc"] == 0  # after the login: not a login refusal


async def test_impossible_records_are_dropped_and_the_packet_still_acknowledged() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    step = await h.send(encode(packet(record(0), record(T0))))
    assert step.wire == bytes.fromhex("00000002")
    assert [p.time_ms for p in h.positions] == [T0]
    assert h.metrics.records_rejected["time_too_old"] == 1


async def test_events_are_stored_with_their_positions() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    await h.send(encode(packet(record(T0, event_id=AvlId.UNPLUG, unplug=1))))
    ((positions, events),) = h.stored
    assert [e.code for e in events] == ["power_cut"]
    assert events[0].position == positions[0]


def gp8_command(seq: int, kind: CommandType, param: int = 0) -> Gp8Command:
    return Gp8Command(seq, kind, param)


async def test_an_unsolicited_response_reaches_the_hook_unmatched() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    step = await h.send(encode(Response("DOUT1:1 DOUT2:0")))
    assert step.wire == b""
    assert h.answers == [(IMEI, gprs.Answer(None, "DOUT1:1 DOUT2:0", True, True, False))]


async def test_commands_go_one_at_a_time_and_the_response_completes_the_first() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    session = h.session
    disable = gp8_command(7, CommandType.DISABLE_ENGINE_START)
    assert session.encode([disable]) == encode(Command("setdigout 1? ? ? 5 ?"))
    # The command service writes the next one, and resends the first: nothing goes out.
    assert session.encode([gp8_command(8, CommandType.LOCK), disable]) == b""
    step = await h.send(encode(Response("DOUT1:1 DOUT2:IGNORED")))
    assert h.answers[-1] == (IMEI, gprs.Answer(7, "DOUT1:1 DOUT2:IGNORED", True, True, None))
    assert step.wire == encode(Command("setdigout ?1"))  # the next one, once answered
    await h.send(encode(Response("DOUT1 Is disabled from CFG")))
    assert h.answers[-1] == (IMEI, gprs.Answer(8, "DOUT1 Is disabled from CFG", False))


@pytest.mark.parametrize(
    ("kind", "param", "profile", "text"),
    [
        (CommandType.DISABLE_ENGINE_START, 0, FMB, "setdigout 1? ? ? 5 ?"),
        (CommandType.DISABLE_ENGINE_START, 0, FMB920, "setdigout 1 ? 5"),
        (CommandType.ENABLE_ENGINE_START, 0, FMB, "setdigout 0?"),
        (CommandType.LOCK, 0, FMB, "setdigout ?1"),
        (CommandType.UNLOCK, 0, FMB, "setdigout ?0"),
        (CommandType.LOCATE, 0, FMB, "getrecord"),
        (CommandType.SET_REPORT_INTERVAL, 30, FMB, "setparam 10050:30;10150:30;10250:30"),
        (CommandType.REBOOT, 0, FMB, "cpureset"),
    ],
)
def test_command_texts(kind: CommandType, param: int, profile: DeviceProfile, text: str) -> None:
    assert command_text(gp8_command(1, kind, param), profile) == text


def test_engine_start_inhibit_always_has_the_speed_gate() -> None:
    for profile in (FMB, FMB920, dataclasses.replace(FMB, wiring=gprs.Wiring(3, 3, 1))):
        text = command_text(gp8_command(1, CommandType.DISABLE_ENGINE_START), profile)
        assert text is not None
        assert text.split()[-profile.wiring.outputs :][profile.wiring.immobiliser - 1] == "5"  # type: ignore[operator]


async def test_a_command_the_profile_cannot_express_fails_at_once() -> None:
    devices = FakeDevices()
    teltonika_device(devices, model=DeviceModel.FMB920)
    h = Harness(devices)
    await h.send(encode(Imei(IMEI)))
    assert h.session.encode([gp8_command(3, CommandType.LOCK)]) == b""
    await h.send(encode(packet(record(T0))))
    assert h.answers == [(IMEI, gprs.Answer(3, "not wired in profile FMB920", False))]


async def test_a_command_never_goes_between_a_packet_and_its_count() -> None:
    devices = FakeDevices()
    h = await logged_in(devices)
    session = h.session
    # The records are being stored (the core has read the packet, not answered it yet) when
    # the command service writes a command to the link.
    frames = session.feed(encode(packet(record(T0))))
    (frame,) = list(frames)
    assert session.encode([gp8_command(1, CommandType.LOCATE)]) == b""  # held
    wire = session.encode([session.ack(session.seq(frame))])
    assert wire == bytes.fromhex("00000001") + encode(Command("getrecord"))


def test_replies() -> None:
    session = sessions(FakeDevices(), GatewayMetrics())()
    assert session.greeting() == []
    assert session.refuse_login("unknown_device") == ImeiReply(False)
    assert session.refuse(3, Refusal.SERVER_BUSY) == RecordsAck(0)
    assert session.refuse(3, Refusal.UNKNOWN_TYPE) is SILENCE
    assert session.encode([SILENCE, RecordsAck(5)]) == bytes.fromhex("00000005")


async def test_an_unanswered_command_stops_holding_the_queue_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.adapters.teltonika as adapter

    devices = FakeDevices()
    h = await logged_in(devices)
    session = h.session
    assert session.encode([gp8_command(1, CommandType.LOCATE)]) == encode(Command("getrecord"))
    assert session.encode([gp8_command(2, CommandType.REBOOT)]) == b""
    monkeypatch.setattr(adapter, "ANSWER_TIMEOUT_S", -1.0)
    assert session.encode([]) == encode(Command("cpureset"))
