"""Teltonika's TCP protocol (Codec 8, 8 Extended, 16, 12) as the device-session core sees it
(docs/teltonika.md).

`FRAMES` is the table: the opening IMEI is the login, an AVL packet is data (answered with its
record count once the records are durable), a Codec 12 response answers the outstanding command.
`TeltonikaSession` is one link's state: the decoder, the login, the device profile chosen at
login, and the one rule Teltonika's framing needs of the writer (a command never goes out between
a packet and its count). `to_position`/`to_events` turn records into storage models through a
`DeviceProfile`, which says which IO element feeds which gp8 field and which event ids become
which gp8 events.

Replies. Teltonika has no negative acknowledgement and no sequence numbers: a box waits for the
count of the packet it sent, and "if sent data number and reported by server doesn't match,
module resends sent data" (Teltonika's wiki). So the core's SERVER_BUSY (the records were not
stored) is answered with a count of 0: nothing was accepted, and the box sends the same records
again on the same link, exactly as a GP8 box resends after NACK SERVER_BUSY. We do not close
instead: that would also cost the box its login and any command waiting for it, and a box that
cannot reach us keeps its records until acknowledged either way. Every other refusal gets no
reply (`Silence`): it only happens to frames that end the session anyway.

Framing errors are final (protocol/teltonika/errors.py): the adapter hands the core the Problem,
so it is counted (and, before the login, answered 00 and counted as a refused login like GP8's),
then ends the session with `Closed`; records of earlier packets of the same read are still
stored and acknowledged, nothing of the bad packet is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from gateway.auth import LoginGuard, source_address
from gateway.context import LOOKUP_TIMEOUT_S, DeviceContext, load_fittings
from gateway.core import Closed, LoginDecision, Problem, Refusal, Role, Rule
from gateway.metrics import GatewayMetrics, SessionMetrics
from gateway.ports import DeviceDirectory
from protocol.gp8 import Command as Gp8Command
from protocol.gp8 import CommandType
from protocol.gp8.validation import MAX_BADGE, MAX_CLOCK_SKEW_MS, MIN_TIME_MS, RecordRejection
from protocol.teltonika import (
    AvlId,
    AvlPacket,
    AvlRecord,
    Command,
    Frame,
    FrameDecoder,
    FrameError,
    Imei,
    ImeiReply,
    RecordsAck,
    Response,
    encode,
)
from protocol.teltonika import commands as gprs
from storage.errors import StorageError
from storage.models import Device, DeviceModel, DeviceProtocol, DeviceStatus
from storage.models import Event as StoredEvent
from storage.models import Position as StoredPosition
from storage.privacy import PRIVACY_SWITCH_EVENT
from throttle import AuthThrottle

log = logging.getLogger(__name__)

FRAMES: dict[type[Frame | gprs.Answer], Rule] = {
    Imei: Rule("imei", Role.LOGIN),
    AvlPacket: Rule("avl", Role.DATA),
    # A Codec 12 response, matched to the command it answers (the box numbers nothing: at most
    # one command is outstanding). Nothing goes back to the box for it, but its "ack" is the
    # moment the next queued command may go (`NEXT_COMMAND`).
    gprs.Answer: Rule("codec12_response", Role.ANSWER),
}


@dataclass(frozen=True, slots=True)
class Silence:
    """A reply that puts nothing on the wire (Teltonika has no NACK)."""


@dataclass(frozen=True, slots=True)
class NextCommand:
    """After an answer: write the next queued command, if any."""


SILENCE = Silence()
NEXT_COMMAND = NextCommand()
# What the core's replies are, and what the command service writes (a GP8 COMMAND, which the
# session turns into Codec 12 text through the device profile).
Reply = ImeiReply | RecordsAck | Command | Silence | NextCommand | Gp8Command
# seq() of an answer: never a record count (those are 1..255), so ack() can tell them apart.
_ANSWER_SEQ = -1
# Commands the command service may have written while one is outstanding, per link.
MAX_QUEUED_COMMANDS = 16
# A command the box has not answered in this long no longer holds back the ones behind it (the
# default command TTL: by then it has expired anyway). An answer to it after that would be taken
# for the next command's; the box has had five minutes to give it.
ANSWER_TIMEOUT_S = 300.0

# --- device profiles ----------------------------------------------------------------------------

# What an event IO element's value becomes: (event code, detail), or None for no event. Codes are
# the lower-case names GP8 uses where one means the same (protocol.gp8.EventCode), else new ones.
EventRule = Callable[[int, Mapping[int, int | bytes]], tuple[str, int] | None]


def _same(code: str) -> EventRule:
    return lambda value, io: (code, value)


def _unplug(value: int, io: Mapping[int, int | bytes]) -> tuple[str, int]:
    # 252 Unplug: 1 the vehicle battery was disconnected, 0 it is back.
    return ("power_cut", 1) if value else ("power_restored", 0)


def _ignition(value: int, io: Mapping[int, int | bytes]) -> tuple[str, int]:
    return ("ignition_on" if value else "ignition_off", 0)


def _badge(value: int, io: Mapping[int, int | bytes]) -> tuple[str, int] | None:
    return ("driver_badge", 0) if value else None  # the badge is the position's driver_badge


def _privacy_switch(value: int, io: Mapping[int, int | bytes]) -> tuple[str, int]:
    # The profile's privacy input (DeviceProfile.privacy_input): detail 1 on, 0 off.
    return (PRIVACY_SWITCH_EVENT, 1 if value else 0)


_GREEN_DRIVING = {1: "harsh_acceleration", 2: "harsh_braking", 3: "harsh_cornering"}


def _green_driving(value: int, io: Mapping[int, int | bytes]) -> tuple[str, int] | None:
    # 253 says which, 254 (same record) how hard: g x 100, or rad x 100 for cornering.
    code = _GREEN_DRIVING.get(value)
    strength = io.get(AvlId.GREEN_DRIVING_VALUE, 0)
    return None if code is None else (code, strength if isinstance(strength, int) else 0)


def _zone(n: int) -> EventRule:
    # 155..159: 0 the vehicle left zone n, 1 it entered (2/3: overspeeding in it ended/started).
    return lambda value, io: (f"geofence_zone_{n}", value)


FMB_EVENTS: Mapping[int, EventRule] = {
    AvlId.IGNITION: _ignition,
    AvlId.IBUTTON: _badge,
    AvlId.TOWING: _same("towing"),
    AvlId.CRASH_DETECTION: _same("crash"),
    AvlId.JAMMING: _same("gsm_jamming"),
    AvlId.UNPLUG: _unplug,
    AvlId.GNSS_JAMMING: _same("gps_jamming"),
    AvlId.OVERSPEEDING: _same("overspeed"),  # detail: km/h
    AvlId.GREEN_DRIVING_TYPE: _green_driving,
    AvlId.TRIP: _same("trip"),  # detail 1: started, 0: ended
    AvlId.IDLING: _same("idling"),
    AvlId.AUTO_GEOFENCE: _same("auto_geofence"),
    **{AvlId.GEOFENCE_ZONE_1 + i: _zone(i + 1) for i in range(5)},
}

# GSM signal 21 is in bars (0..5); gp8 keeps 3GPP CSQ (0..31). Bar n is about CSQ 31 n / 5.
BARS_TO_CSQ = (0, 6, 12, 19, 25, 31)
CSQ_UNKNOWN = 99
HDOP_UNKNOWN = 25.5  # gp8's "that or worse": an absent HDOP must not look precise


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """How one kind of Teltonika box reports: which IO element feeds which gp8 field.

    An id of None means the box does not report it (the field takes its "unknown" value). Output
    ids are the states of the box's digital outputs, which is how an immobiliser relay or a
    central-locking line is wired to it.
    """

    name: str
    wiring: gprs.Wiring = field(default_factory=gprs.Wiring)
    ignition: int | None = AvlId.IGNITION
    odometer: int | None = AvlId.TOTAL_ODOMETER  # m
    external_voltage: int | None = AvlId.EXTERNAL_VOLTAGE  # mV
    battery_voltage: int | None = AvlId.BATTERY_VOLTAGE  # mV
    gsm_signal: int | None = AvlId.GSM_SIGNAL  # bars
    driver_badge: int | None = AvlId.IBUTTON
    hdop: int | None = AvlId.GNSS_HDOP  # 0.1
    gnss_status: int | None = AvlId.GNSS_STATUS  # 1: on with fix
    # A switch the driver sets for privacy mode (docs/privacy.md), as the digital input it is
    # wired to (e.g. 2, DIN2; configured on the box as an eventual "On change" element):
    # 1 private, 0 not. None: the box has none (the FMB default; the privacy badge still works).
    privacy_input: int | None = None
    # Below this external voltage the box runs on its own battery.
    external_power_min_mv: int = 6_000
    # Teltonika records carry no "sent late" flag: a record this much older than its arrival
    # was kept offline (a box online sends every minute or two).
    buffered_after_ms: int = 15 * 60 * 1000
    events: Mapping[int, EventRule] = field(default_factory=lambda: FMB_EVENTS)

    # The outputs' IO elements, from the wiring: one truth for the state read and the commands.
    @property
    def engine_start_inhibit(self) -> int | None:
        n = self.wiring.immobiliser
        return None if n is None else gprs.OUTPUT_IO_IDS[n]

    @property
    def doors_locked(self) -> int | None:
        n = self.wiring.lock
        return None if n is None else gprs.OUTPUT_IO_IDS[n]

    @property
    def mapped(self) -> frozenset[int]:
        """The IO ids that become a gp8 field (the others are the raw remainder)."""
        ids = (
            self.ignition,
            self.odometer,
            self.external_voltage,
            self.battery_voltage,
            self.gsm_signal,
            self.driver_badge,
            self.hdop,
            self.gnss_status,  # feeds fix_valid
            self.engine_start_inhibit,
            self.doors_locked,
        )
        return frozenset(i for i in ids if i is not None)


# FMB1xx/FMC1xx/FMM1xx: DOUT1 drives the immobiliser relay, DOUT2 the central locking.
FMB = DeviceProfile("FMB")
# FMB920: one digital output, wired to the immobiliser; no lock line.
FMB920 = DeviceProfile("FMB920", wiring=gprs.Wiring(outputs=1, lock=None))

PROFILES: Mapping[DeviceModel, DeviceProfile] = {DeviceModel.FMB920: FMB920}


def profile_for(model: DeviceModel, profiles: Mapping[DeviceModel, DeviceProfile]) -> DeviceProfile:
    """The profile of a box model: the overrides first, then gp8's, then the FMB default."""
    return profiles.get(model) or PROFILES.get(model) or FMB


def with_privacy_input(io_id: int | None) -> dict[DeviceModel, DeviceProfile]:
    """gp8's profiles of every Teltonika model with ``io_id`` as their privacy switch
    (GP8_TELTONIKA__PRIVACY_INPUT); none when None."""
    if io_id is None:
        return {}
    return {
        model: replace(profile_for(model, {}), privacy_input=io_id)
        for model in DeviceModel
        if model.protocol is DeviceProtocol.TELTONIKA
    }


# --- conversion ---------------------------------------------------------------------------------


def check_record(record: AvlRecord, now_ms: int) -> RecordRejection | None:
    """Why ``record`` is impossible (as GP8's protocol.gp8.check_record), or None."""
    if not -900_000_000 <= record.lat_e7 <= 900_000_000:
        return RecordRejection.LATITUDE
    if not -1_800_000_000 <= record.lon_e7 <= 1_800_000_000:
        return RecordRejection.LONGITUDE
    if record.time_ms < MIN_TIME_MS:
        return RecordRejection.TIME_TOO_OLD
    if record.time_ms > now_ms + MAX_CLOCK_SKEW_MS:
        return RecordRejection.TIME_IN_FUTURE
    if record.angle_deg > 360:
        return RecordRejection.HEADING
    return None


def _int(io: Mapping[int, int | bytes], key: int | None, default: int) -> int:
    if key is None:
        return default
    value = io.get(key, default)
    return value if isinstance(value, int) else default


def to_position(
    record: AvlRecord,
    io: Mapping[int, int | bytes],
    ctx: DeviceContext,
    received_ms: int,
    profile: DeviceProfile,
) -> StoredPosition:
    """The stored position of ``record`` (``io`` is ``record.io``, built once by the caller)."""
    gnss = _int(io, profile.gnss_status, 1)
    external_mv = _int(io, profile.external_voltage, 0)
    bars = _int(io, profile.gsm_signal, -1)
    hdop = _int(io, profile.hdop, -1)
    badge = _int(io, profile.driver_badge, 0)
    # Positional, in storage.models.Position's field order (the ingest hot path, as GP8's);
    # tests/gateway/adapters/test_teltonika.py pins it.
    return StoredPosition(
        ctx.fleet_id,
        ctx.device_id,
        ctx.fittings.vehicle_at(record.time_ms),
        record.time_ms,
        received_ms,
        record.lat_e7 / 1e7,
        record.lon_e7 / 1e7,
        record.altitude_m,
        float(record.speed_kmh),
        float(record.angle_deg % 360),
        record.satellites,
        hdop / 10 if hdop >= 0 else HDOP_UNKNOWN,
        # No satellites: the coordinates repeat the last fix (Teltonika's wiki).
        record.satellites > 0 and gnss == 1,
        _int(io, profile.ignition, 0) == 1,
        _int(io, profile.doors_locked, 0) == 1,
        _int(io, profile.engine_start_inhibit, 0) == 1,
        external_mv >= profile.external_power_min_mv,
        _int(io, profile.odometer, 0),
        external_mv,
        _int(io, profile.battery_voltage, 0),
        BARS_TO_CSQ[bars] if 0 <= bars < len(BARS_TO_CSQ) else CSQ_UNKNOWN,
        0,  # dashboard warnings: not reported by FMB boxes without a CAN adapter
        badge if 0 < badge <= MAX_BADGE else None,
        received_ms - record.time_ms > profile.buffered_after_ms,
        unmapped_io(io, profile),
    )


def to_event(
    record: AvlRecord,
    io: Mapping[int, int | bytes],
    position: StoredPosition,
    profile: DeviceProfile,
) -> StoredEvent | None:
    """The gp8 event of an eventual record (its event IO id in the profile), or None."""
    if not record.event_id:
        return None
    rule = profile.events.get(record.event_id)
    if record.event_id == profile.privacy_input:
        rule = _privacy_switch
    if rule is None:
        return None
    value = io.get(record.event_id, 0)
    decided = rule(value if isinstance(value, int) else 0, io)
    if decided is None:
        return None
    code, detail = decided
    return StoredEvent(
        fleet_id=position.fleet_id,
        device_id=position.device_id,
        vehicle_id=position.vehicle_id,
        time_ms=position.time_ms,
        received_ms=position.received_ms,
        code=code,
        detail=detail,
        position=position,
    )


# The largest integer both engines store as a number (BSON and SQLite integers are signed 64-bit).
_MAX_STORED_INT = 2**63 - 1


def unmapped_io(
    io: Mapping[int, int | bytes], profile: DeviceProfile
) -> dict[str, int | str] | None:
    """The IO elements with no gp8 field, raw: id → value; None when there are none.

    Kept with the position (its ``io`` field) so nothing a box reports is thrown away and a
    profile can be changed later. Variable-size values are hex, and so are 8-byte values above
    2^63-1 (16 hex digits, big-endian as on the wire): no engine stores them as integers.
    """
    mapped = profile.mapped
    out: dict[str, int | str] = {}
    for io_id, value in io.items():
        if io_id in mapped:
            continue
        if isinstance(value, bytes):
            out[str(io_id)] = value.hex()
        elif value > _MAX_STORED_INT:
            out[str(io_id)] = value.to_bytes(8, "big").hex()
        else:
            out[str(io_id)] = value
    return out or None


# --- commands ------------------------------------------------------------------------------------

_TEXTS: dict[CommandType, Callable[[gprs.Wiring, int], str | None]] = {
    CommandType.LOCK: lambda w, p: gprs.lock(w, True),
    CommandType.UNLOCK: lambda w, p: gprs.lock(w, False),
    CommandType.DISABLE_ENGINE_START: lambda w, p: gprs.immobilise(w, True),
    CommandType.ENABLE_ENGINE_START: lambda w, p: gprs.immobilise(w, False),
    CommandType.LOCATE: lambda w, p: gprs.LOCATE,
    CommandType.SET_REPORT_INTERVAL: lambda w, p: gprs.report_period(p),
    CommandType.REBOOT: lambda w, p: gprs.REBOOT,
}


def command_text(command: Gp8Command, profile: DeviceProfile) -> str | None:
    """The Codec 12 text of a gp8 command for this profile; None when the box is not wired for
    it (an FMB920 has no lock line)."""
    return _TEXTS[CommandType(command.command)](profile.wiring, command.param)


def answer_of(command_seq: int | None, text: str, profile: DeviceProfile) -> gprs.Answer:
    """A response read through the profile: done or refused, and the outputs it reports."""
    states = gprs.output_states(text)
    wiring = profile.wiring
    return gprs.Answer(
        command_seq,
        text,
        ok=not gprs.refused(text),
        engine_start_inhibited=None
        if wiring.immobiliser not in states
        else states[wiring.immobiliser] == 1,
        doors_locked=None if wiring.lock not in states else states[wiring.lock] == 1,
    )


# --- login --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImeiLogin:
    """The IMEI-only login: a provisioned, active ``teltonika`` box in some fleet (no secret
    exists to check: docs/security.md says what mitigates that)."""

    devices: DeviceDirectory
    metrics: GatewayMetrics
    lookup_timeout_s: float = LOOKUP_TIMEOUT_S
    # Failed logins throttled per (source, IMEI) and per source, as GP8's (gateway/auth.py): a
    # guesser walking an IMEI range from one address is answered 00 unchecked once locked out.
    throttle: AuthThrottle | None = None

    async def check(self, imei: str, peer: str) -> tuple[str, Device | None]:
        """(status, the device when "ok"); counts it and logs refusals; never raises."""
        guard = LoginGuard(self.throttle, self.metrics)
        source = source_address(peer)
        throttled = guard.wait(source, imei) is not None
        status, device = ("throttled", None) if throttled else await self._decide(imei)
        self.metrics.logins[status] += 1
        if device is not None:
            log.info("teltonika login ok: imei=%s peer=%s", imei, peer)
        else:
            log.warning("teltonika login refused (%s): imei=%s peer=%s", status, imei, peer)
        if not throttled:
            guard.settle(source, imei, status, ok=device is not None)
        return status, device

    async def _decide(self, imei: str) -> tuple[str, Device | None]:
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                device = await self.devices.get_by_imei(imei)
        except (StorageError, TimeoutError) as exc:
            log.warning("teltonika login: lookup of %s failed: %r", imei, exc)
            return "server_busy", None
        if device is None:
            return "unknown_device", None
        if device.protocol is not DeviceProtocol.TELTONIKA:
            # A GP8 box's IMEI: logging it in without its HMAC proof would bypass that proof.
            return "wrong_protocol", None
        if device.status is not DeviceStatus.ACTIVE:
            return "device_disabled", None
        return "ok", device


# --- the session --------------------------------------------------------------------------------


@dataclass(slots=True)
class TeltonikaSession:
    """One link's Teltonika state; satisfies gateway.core.ProtocolSession."""

    login_check: ImeiLogin
    profiles: Mapping[DeviceModel, DeviceProfile] = field(default_factory=dict)
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    profile: DeviceProfile = FMB
    lookup_timeout_s: float = LOOKUP_TIMEOUT_S
    _authenticated: bool = False
    _closed: bool = False
    # Packets handed to the core whose count has not been encoded yet, and commands written
    # meanwhile: the box reads the four bytes after its packet as the count, so a command put
    # there would be misread (protocol.teltonika.DeviceDecoder); it goes out right after.
    _counts_owed: int = 0
    # At most one command outstanding: the one written and not answered yet, the ones waiting,
    # and answers made here (a command the profile cannot express), handed over with the next
    # frames the box sends.
    _outstanding: Gp8Command | None = None
    _outstanding_since: float = 0.0  # time.monotonic() when it was written
    _queued: deque[Gp8Command] = field(default_factory=deque)
    _own_answers: list[gprs.Answer] = field(default_factory=list)

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def buffered(self) -> int:
        return self.decoder.buffered

    def greeting(self) -> list[Reply]:
        return []  # the box speaks first

    def feed(self, data: bytes) -> Iterator[Frame | gprs.Answer | Problem]:
        self.decoder.feed(data)
        return self._frames()

    def _frames(self) -> Iterator[Frame | gprs.Answer | Problem]:
        while self._own_answers:
            yield self._own_answers.pop(0)
        for item in self.decoder:
            if isinstance(item, FrameError):
                # Before the login the core answers 00 and counts a refused login.
                yield Problem(item.reason, None, None, ends_login=item.reason)
                raise Closed(item.reason)
            if isinstance(item, AvlPacket) and self._authenticated:
                self._counts_owed += 1
            if isinstance(item, Response) and self._authenticated:
                answered, self._outstanding = self._outstanding, None
                seq = None if answered is None else answered.seq
                yield answer_of(seq, item.text, self.profile)
                continue
            yield item

    def rule(self, frame: Frame | gprs.Answer) -> Rule | None:
        return FRAMES.get(type(frame))

    def allowed(self, frame: Frame | gprs.Answer) -> bool:
        if self._closed:
            return False
        return isinstance(frame, Imei) != self._authenticated

    def seq(self, frame: Frame | gprs.Answer) -> int:
        # What the box's answer is made of: the record count of a packet.
        if isinstance(frame, gprs.Answer):
            return _ANSWER_SEQ
        return len(frame.records) if isinstance(frame, AvlPacket) else 0

    async def login(self, frame: Frame, peer: str) -> LoginDecision[Reply]:
        assert isinstance(frame, Imei)
        status, device = await self.login_check.check(frame.imei, peer)
        context = None
        if device is not None:
            try:
                fittings = await load_fittings(
                    self.login_check.devices, device.id, self.lookup_timeout_s
                )
            except (StorageError, TimeoutError):
                status = "server_busy"
            else:
                context = DeviceContext(device.fleet_id, device.id, device.imei, fittings)
                self.profile = profile_for(device.model, self.profiles)
        return LoginDecision(ImeiReply(context is not None), context, status)

    def refuse_login(self, status: str) -> Reply:
        return ImeiReply(False)

    def mark_authenticated(self) -> None:
        self._authenticated = True

    def records(
        self, frame: Frame, context: DeviceContext, received_ms: int, metrics: SessionMetrics
    ) -> tuple[Sequence[StoredPosition], Sequence[StoredEvent]]:
        assert isinstance(frame, AvlPacket)
        profile = self.profile
        positions: list[StoredPosition] = []
        events: list[StoredEvent] = []
        for record in frame.records:
            rejection = check_record(record, received_ms)
            if rejection is not None:
                metrics.records_rejected[rejection.value] += 1
                continue
            io = record.io
            position = to_position(record, io, context, received_ms, profile)
            positions.append(position)
            event = to_event(record, io, position, profile)
            if event is not None:
                events.append(event)
        return positions, events

    def ack(self, seq: int) -> Reply:
        return NEXT_COMMAND if seq == _ANSWER_SEQ else RecordsAck(seq)

    def refuse(self, seq: int, refusal: Refusal) -> Reply:
        if refusal is Refusal.SERVER_BUSY:
            return RecordsAck(0)  # none accepted: the box sends them again
        return SILENCE

    def encode(self, replies: Sequence[Reply]) -> bytes:
        """The replies' bytes; a GP8 COMMAND (from the command service, through the link) is
        queued and goes out as Codec 12 text once nothing is outstanding and no count owed."""
        out = bytearray()
        for reply in replies:
            if isinstance(reply, Gp8Command):
                self._enqueue(reply)
            elif isinstance(reply, RecordsAck):
                out += encode(reply)
                self._counts_owed = max(0, self._counts_owed - 1)
            elif not isinstance(reply, Silence | NextCommand):
                out += encode(reply)
        return bytes(out + self._next_command())

    def _enqueue(self, command: Gp8Command) -> None:
        outstanding = self._outstanding
        if outstanding is not None and outstanding.seq == command.seq:
            return  # written on this link and not answered: a resend would be a second answer
        if any(q.seq == command.seq for q in self._queued):
            return
        if len(self._queued) >= MAX_QUEUED_COMMANDS:
            log.warning("teltonika: command queue full, %d not written", command.seq)
            return  # it stays "sent" and goes again at the next login (docs/commands.md)
        self._queued.append(command)

    def _next_command(self) -> bytes:
        now = time.monotonic()
        if self._outstanding is not None and now - self._outstanding_since > ANSWER_TIMEOUT_S:
            log.warning("teltonika: command %d never answered", self._outstanding.seq)
            self._outstanding = None
        while self._outstanding is None and not self._counts_owed and self._queued:
            command = self._queued.popleft()
            text = command_text(command, self.profile)
            if text is None:
                self._own_answers.append(
                    gprs.Answer(command.seq, f"not wired in profile {self.profile.name}", False)
                )
                continue
            self._outstanding, self._outstanding_since = command, now
            return encode(Command(text))
        return b""

    def close(self) -> None:
        self._closed = True


def sessions(
    devices: DeviceDirectory,
    metrics: GatewayMetrics,
    profiles: Mapping[DeviceModel, DeviceProfile] | None = None,
    *,
    throttle: AuthThrottle | None = None,
) -> Callable[[], TeltonikaSession]:
    """Teltonika for a TCP listener: IMEI, then AVL packets and Codec 12 responses."""
    login_check = ImeiLogin(devices, metrics, throttle=throttle)
    overrides = dict(profiles or {})
    return lambda: TeltonikaSession(login_check, overrides)
