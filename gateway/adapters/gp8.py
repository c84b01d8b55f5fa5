"""The GP8 v1 protocol as the device-session core sees it (docs/protocol.md).

`FRAMES` is the table: each message type a box sends, the role the core gives it, and whether
the box expects an ACK. `Gp8Session` is one link's GP8 state — decoder, the login state machine
of protocol/gp8/session.py, the CHALLENGE nonce, reply numbering — and `to_positions`/`to_event`
turn wire records into storage models with the vehicle fitted at each record's time.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from gateway.auth import LoginChecker
from gateway.context import LOOKUP_TIMEOUT_S, DeviceContext, load_fittings
from gateway.core import LoginDecision, Problem, Refusal, Role, Rule
from gateway.metrics import SessionMetrics
from gateway.ports import DeviceDirectory
from protocol.gp8 import (
    NONCE_SIZE,
    Ack,
    Challenge,
    CommandResult,
    DeviceSession,
    Event,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    Nack,
    NackReason,
    Position,
    PositionRecord,
    RecordFlags,
    SessionError,
    UnsupportedVersion,
    check_record,
    encode,
)
from protocol.gp8.validation import all_plausible
from storage.errors import StorageError
from storage.models import Event as StoredEvent
from storage.models import Position as StoredPosition
from storage.models import now_ms

FRAMES: dict[type[Message], Rule] = {
    Login: Rule("login", Role.LOGIN),
    Position: Rule("position", Role.DATA),
    Event: Rule("event", Role.DATA),
    Heartbeat: Rule("heartbeat", Role.KEEPALIVE),
    CommandResult: Rule("command_result", Role.ANSWER),  # ACKed: the box resends it otherwise
    Ack: Rule("ack", Role.ANSWER, ack=False),  # the box's receipt of a COMMAND
    Nack: Rule("nack", Role.ANSWER, ack=False),
}

# FrameError.reason → what the box is told (errors not listed get no NACK: garbage has no
# sequence number, and a too-short length field is most likely not a header).
REFUSAL_FOR_ERROR: dict[str, Refusal] = {
    "bad_crc": Refusal.BAD_CRC,
    "too_large": Refusal.TOO_LARGE,
    "malformed": Refusal.MALFORMED,
    "unknown_type": Refusal.UNKNOWN_TYPE,
    "unsupported_version": Refusal.UNSUPPORTED_VERSION,
}
NACK_FOR_REFUSAL: dict[Refusal, NackReason] = {r: NackReason[r.name] for r in Refusal}

# What a GP8 box answers to a COMMAND: a receipt (ACK), a refusal (NACK), the result.
BoxReply = CommandResult | Ack | Nack

_MAX_SEQ = 0xFFFF_FFFF


@dataclass(slots=True)
class Numbering:
    """Sequence numbers of the frames gp8 sends on a link (wrapping at 32 bits)."""

    last: int = -1

    def next(self) -> int:
        self.last = (self.last + 1) & _MAX_SEQ
        return self.last


@dataclass(slots=True)
class Gp8Session:
    """One link's GP8 protocol state; satisfies gateway.core.ProtocolSession."""

    checker: LoginChecker | None = None  # None: the link authenticates otherwise (MQTT)
    devices: DeviceDirectory | None = None
    numbering: Numbering = field(default_factory=Numbering)
    # The CHALLENGE nonce of a stream link (see `sessions`); MQTT links have no login.
    nonce: bytes = b""
    # Made on the first feed: an MQTT message is decoded whole before its session exists.
    decoder: FrameDecoder | None = None
    state: DeviceSession = field(default_factory=DeviceSession)
    lookup_timeout_s: float = LOOKUP_TIMEOUT_S

    @property
    def authenticated(self) -> bool:
        return self.state.is_authenticated

    @property
    def buffered(self) -> int:
        return self.decoder.buffered if self.decoder is not None else 0

    def greeting(self) -> list[Message]:
        assert len(self.nonce) == NONCE_SIZE  # a stream link's session is made by `sessions`
        return [Challenge(self.numbering.next(), self.nonce, now_ms())]

    def feed(self, data: bytes) -> Iterator[Message | Problem]:
        if self.decoder is None:
            self.decoder = FrameDecoder()
        self.decoder.feed(data)
        return self.frames(self.decoder)

    @staticmethod
    def frames(items: Iterable[Message | FrameError]) -> Iterator[Message | Problem]:
        """Decoded items as the core takes them (framing errors read as Problems)."""
        for item in items:
            if isinstance(item, FrameError):
                yield _problem(item)
            else:
                yield item

    def rule(self, frame: Message) -> Rule | None:
        return FRAMES.get(type(frame))

    def allowed(self, frame: Message) -> bool:
        try:
            self.state.receive(frame)
        except SessionError:
            return False
        return True

    def seq(self, frame: Message) -> int:
        return frame.seq

    async def login(self, frame: Message, peer: str) -> LoginDecision[Message]:
        assert isinstance(frame, Login) and self.checker is not None and self.devices is not None
        outcome = await self.checker.check(frame, self.nonce, peer=peer)
        status, context = outcome.status, None
        if outcome.device is not None:
            device = outcome.device
            try:
                fittings = await load_fittings(self.devices, device.id, self.lookup_timeout_s)
            except (StorageError, TimeoutError):
                status = LoginStatus.SERVER_BUSY
            else:
                context = DeviceContext(device.fleet_id, device.id, device.imei, fittings)
        reply = LoginResult(self.numbering.next(), status, now_ms())
        return LoginDecision(reply, context, status.name.lower())

    def refuse_login(self, status: str) -> Message:
        return LoginResult(self.numbering.next(), LoginStatus[status.upper()], now_ms())

    def mark_authenticated(self) -> None:
        self.state.authenticated()

    def records(
        self, frame: Message, context: DeviceContext, received_ms: int, metrics: SessionMetrics
    ) -> tuple[Sequence[StoredPosition], Sequence[StoredEvent]]:
        if isinstance(frame, Position):
            records = frame.records
            if not all_plausible(records, received_ms):  # rare: an impossible record in it
                kept: list[PositionRecord] = []
                for record in records:
                    rejection = check_record(record, received_ms)
                    if rejection is None:
                        kept.append(record)
                    else:
                        metrics.records_rejected[rejection.value] += 1
                records = tuple(kept)
            return to_positions(records, context, received_ms), ()
        assert isinstance(frame, Event)
        rejection = check_record(frame.record, received_ms)
        if rejection is not None:
            metrics.records_rejected[rejection.value] += 1
            return (), ()
        return (), (to_event(frame, context, received_ms),)

    def ack(self, seq: int) -> Message:
        return Ack(self.numbering.next(), seq)

    def refuse(self, seq: int, refusal: Refusal) -> Message:
        return Nack(self.numbering.next(), seq, NACK_FOR_REFUSAL[refusal])

    def encode(self, replies: Sequence[Message]) -> bytes:
        return b"".join(map(encode, replies))

    def close(self) -> None:
        self.state.close()


def _problem(error: FrameError) -> Problem:
    return Problem(
        error.reason,
        error.seq,
        REFUSAL_FOR_ERROR.get(error.reason),
        # Most likely the LOGIN of a box speaking a newer protocol: tell it, once.
        ends_login="unsupported_version" if isinstance(error, UnsupportedVersion) else None,
    )


def sessions(checker: LoginChecker, devices: DeviceDirectory) -> Callable[[], Gp8Session]:
    """GP8 for a TCP listener: CHALLENGE, LOGIN with an HMAC proof, then GP8 frames."""
    return lambda: Gp8Session(checker, devices, nonce=secrets.token_bytes(NONCE_SIZE))


_FIX_VALID = int(RecordFlags.FIX_VALID)
_IGNITION = int(RecordFlags.IGNITION)
_DOORS_LOCKED = int(RecordFlags.DOORS_LOCKED)
_INHIBITED = int(RecordFlags.ENGINE_START_INHIBITED)
_EXTERNAL_POWER = int(RecordFlags.EXTERNAL_POWER)
_BUFFERED = int(RecordFlags.BUFFERED)


_new_tuple = tuple.__new__


def to_positions(
    records: Iterable[PositionRecord], ctx: DeviceContext, received_ms: int
) -> list[StoredPosition]:
    """The records as storage models, stamped with the box's context: the ingest hot path.

    One comprehension for the whole frame, so nothing is called per record but the Position's
    construction: each record is unpacked once and Position built from a tuple in
    storage.models.Position's field order, every field given (io last), by tuple.__new__ in C
    (the NamedTuple's own constructor is a generated Python function, for its defaults);
    tests/gateway/adapters/test_gp8_convert.py pins the order. The vehicle is the fittings'
    tail (`Fittings.tail_vehicle`) for every record from its start on, looked up otherwise.
    Flags are tested with != 0, not bool(): no call per flag.
    """
    fleet_id, device_id = ctx.fleet_id, ctx.device_id
    fittings = ctx.fittings
    tail_from, tail_vehicle, vehicle_at = (
        fittings.tail_from_ms,
        fittings.tail_vehicle,
        fittings.vehicle_at,
    )
    return [
        _new_tuple(
            StoredPosition,
            (
                fleet_id,
                device_id,
                tail_vehicle if time_ms >= tail_from else vehicle_at(time_ms),
                time_ms,
                received_ms,
                lat_e7 / 1e7,
                lon_e7 / 1e7,
                altitude_m,
                speed_dkmh / 10,
                heading_ddeg / 10,
                satellites,
                hdop_d / 10,
                (flags & _FIX_VALID) != 0,
                (flags & _IGNITION) != 0,
                (flags & _DOORS_LOCKED) != 0,
                (flags & _INHIBITED) != 0,
                (flags & _EXTERNAL_POWER) != 0,
                odometer_m,
                ext_power_mv,
                battery_mv,
                gsm_signal,
                warnings,
                badge or None,
                (flags & _BUFFERED) != 0,
                None,  # io: a GP8 box reports no raw IO elements
            ),
        )
        for (
            time_ms,
            lat_e7,
            lon_e7,
            altitude_m,
            speed_dkmh,
            heading_ddeg,
            satellites,
            hdop_d,
            flags,
            odometer_m,
            ext_power_mv,
            battery_mv,
            gsm_signal,
            warnings,
            badge,
        ) in records
    ]


def to_position(record: PositionRecord, ctx: DeviceContext, received_ms: int) -> StoredPosition:
    """One record as a storage model (`to_positions` of one)."""
    return to_positions((record,), ctx, received_ms)[0]


def to_event(event: Event, ctx: DeviceContext, received_ms: int) -> StoredEvent:
    position = to_position(event.record, ctx, received_ms)
    return StoredEvent(
        fleet_id=ctx.fleet_id,
        device_id=ctx.device_id,
        vehicle_id=position.vehicle_id,
        time_ms=position.time_ms,
        received_ms=received_ms,
        code=event.code.name.lower(),
        detail=event.detail,
        position=position,
    )
