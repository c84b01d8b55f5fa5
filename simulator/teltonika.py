"""A virtual Teltonika FMB box: the same scenarios as a GP8 box, spoken in Teltonika's protocol.

`TeltonikaOutbox` is the sans-IO side, a drop-in for simulator.outbox.Outbox: the driver and the
scenarios hand it GP8 position records and events as they do to any box, and it sends them as
an FMB device does (docs/teltonika.md): the IMEI first, then Codec 8 Extended packets of AVL
records, one at a time, each settled by the server's four-byte record count (0: nothing stored,
sent again after the back-off). The IO elements are those of an FMB1xx with the default wiring
(DOUT1 the immobiliser relay, DOUT2 the central locking).

Codec 12 commands (`setdigout`, `setparam`, `getrecord`, `cpureset`) are read back into gp8's
typed commands and executed by the same code as a GP8 box's (simulator.outbox.execute, with the
driver's hook), then answered with the text an FMB gives. A speed-gated `setdigout` switches
its output only once the vehicle is at or below the gate, as the firmware does. Teltonika has no
heartbeat and no command numbers: every command text is executed.

Everything here is the box's side, from protocol/ only: it borrows nothing of the server.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocol.gp8 import (
    Command,
    CommandFailure,
    CommandStatus,
    CommandType,
    EventCode,
    LoginResult,
    LoginStatus,
    Model,
    PositionRecord,
    RecordFlags,
)
from protocol.teltonika import (
    MAX_RECORDS,
    AvlId,
    AvlPacket,
    AvlRecord,
    Codec,
    DeviceDecoder,
    FrameError,
    Imei,
    ImeiReply,
    RecordsAck,
    Response,
    encode,
)
from protocol.teltonika import Command as Codec12Command
from protocol.teltonika import commands as gprs
from simulator.box import Box
from simulator.errors import BoxError
from simulator.links import Link, TcpLink
from simulator.outbox import (
    Entry,
    Fate,
    Framing,
    Outbox,
    Phase,
    Reaction,
    Unit,
    execute,
)

# An FMB1xx's outputs: DOUT1 drives the immobiliser relay, DOUT2 the central locking.
WIRING = gprs.Wiring()
# Every record is Codec 8 Extended: it carries 2-byte ids (318 GNSS jamming) and NX elements.
CODEC = Codec.CODEC_8E
HIGH_PRIORITY = 1  # Teltonika's priority of an eventual record
GNSS_FIX, GNSS_NO_FIX = 1, 2  # AVL 69 GNSS status
CSQ_UNKNOWN = 99

# What an FMB reports for a GP8 event: (event IO id, its value; None: the event's detail). An
# event with no FMB counterpart (SOS, tamper, battery low, a dashboard warning) goes as the
# plain periodic record an FMB would send.
EVENT_IO: dict[EventCode, tuple[int, int | None]] = {
    EventCode.TOWING: (AvlId.TOWING, 1),
    EventCode.CRASH: (AvlId.CRASH_DETECTION, 1),
    EventCode.GSM_JAMMING: (AvlId.JAMMING, 1),
    EventCode.GPS_JAMMING: (AvlId.GNSS_JAMMING, 1),
    EventCode.POWER_CUT: (AvlId.UNPLUG, 1),
    EventCode.POWER_RESTORED: (AvlId.UNPLUG, 0),
    EventCode.IGNITION_ON: (AvlId.IGNITION, 1),
    EventCode.IGNITION_OFF: (AvlId.IGNITION, 0),
    EventCode.DRIVER_BADGE: (AvlId.IBUTTON, None),
    EventCode.OVERSPEED: (AvlId.OVERSPEEDING, None),
    EventCode.HARSH_ACCELERATION: (AvlId.GREEN_DRIVING_TYPE, 1),
    EventCode.HARSH_BRAKING: (AvlId.GREEN_DRIVING_TYPE, 2),
    EventCode.HARSH_CORNERING: (AvlId.GREEN_DRIVING_TYPE, 3),
}


def _bars(csq: int) -> int | None:
    """3GPP CSQ (0..31) as an FMB's GSM bars (0..5); None when unknown."""
    return None if csq == CSQ_UNKNOWN else min(5, round(csq * 5 / 31))


def to_avl(record: PositionRecord, event: tuple[EventCode, int] | None = None) -> AvlRecord:
    """The AVL record an FMB would send for ``record`` (and ``event``: (code, detail))."""
    flags = record.flags
    io1: dict[int, int] = {
        AvlId.IGNITION: int(bool(flags & RecordFlags.IGNITION)),
        AvlId.MOVEMENT: int(record.speed_dkmh > 0),
        AvlId.GNSS_STATUS: GNSS_FIX if flags & RecordFlags.FIX_VALID else GNSS_NO_FIX,
        gprs.OUTPUT_IO_IDS[1]: int(bool(flags & RecordFlags.ENGINE_START_INHIBITED)),
        gprs.OUTPUT_IO_IDS[2]: int(bool(flags & RecordFlags.DOORS_LOCKED)),
    }
    bars = _bars(record.gsm_signal)
    if bars is not None:
        io1[AvlId.GSM_SIGNAL] = bars
    io2: dict[int, int] = {
        AvlId.EXTERNAL_VOLTAGE: record.ext_power_mv,
        AvlId.BATTERY_VOLTAGE: record.battery_mv,
        AvlId.GNSS_HDOP: record.hdop_d,
    }
    io4: dict[int, int] = {AvlId.TOTAL_ODOMETER: record.odometer_m}
    io8: dict[int, int] = {AvlId.IBUTTON: record.badge} if record.badge else {}
    event_id = 0
    if event is not None and event[0] in EVENT_IO:
        code, detail = event
        event_id, value = EVENT_IO[code]
        value = detail if value is None else value
        if code is EventCode.DRIVER_BADGE:
            value = record.badge
        # The element goes in the group its size needs; the state it reports replaces any other.
        for group in (io1, io2, io4, io8):
            group.pop(event_id, None)
        if event_id == AvlId.IBUTTON:
            io8[event_id] = value
        elif event_id == AvlId.GREEN_DRIVING_TYPE:
            io1[event_id] = value
            io2[AvlId.GREEN_DRIVING_VALUE] = detail
        elif value <= 0xFF:
            io1[event_id] = value
        else:
            io2[event_id] = min(value, 0xFFFF)
    return AvlRecord(
        record.time_ms,
        HIGH_PRIORITY if event_id else 0,
        record.lon_e7,
        record.lat_e7,
        record.altitude_m,
        record.heading_ddeg // 10,
        record.satellites if flags & RecordFlags.FIX_VALID else 0,
        record.speed_dkmh // 10,
        event_id,
        io1=tuple(io1.items()),
        io2=tuple(io2.items()),
        io4=tuple(io4.items()),
        io8=tuple(io8.items()),
    )


class TeltonikaOutbox(Outbox):
    """An FMB box's records and its side of the protocol (see the module's docstring)."""

    def __init__(self, imei: str, secret: str = "", model: Model = Model.GP8000, **options: Any):
        # One packet at a time, as the firmware sends them: its count is the only answer.
        options["window"] = 1
        options["batch_size"] = min(options.get("batch_size", MAX_RECORDS), MAX_RECORDS)
        super().__init__(imei, secret, model, **options)
        self._device = DeviceDecoder()
        self._speed_kmh = 0  # of the newest record handed to the box: what a speed gate checks
        self._gated: list[tuple[Command, int]] = []  # (command, km/h) waiting for the speed
        self._received: list[_Received] = []  # command texts to execute, in order

    # --- records -----------------------------------------------------------------------------

    def enqueue(self, records: Iterable[PositionRecord]) -> list[Entry]:
        entries = super().enqueue(records)
        if entries:
            self._moved(entries[-1].record)
        return entries

    def enqueue_event(self, code: EventCode, record: PositionRecord, detail: int = 0) -> Entry:
        entry = super().enqueue_event(code, record, detail)
        self._moved(record)
        return entry

    def _moved(self, record: PositionRecord) -> None:
        self._speed_kmh = record.speed_dkmh // 10
        still = [(c, gate) for c, gate in self._gated if self._speed_kmh > gate]
        for command, gate in self._gated:
            if self._speed_kmh <= gate:
                execute(command, self.state, self.on_command)
        self._gated = still

    # --- the link ----------------------------------------------------------------------------

    def link_up(self, framing: Framing) -> None:
        if framing is not Framing.STREAM:
            raise ValueError("a Teltonika box speaks over TCP only")
        self.framing = framing
        self._device = DeviceDecoder()
        self.phase = Phase.AWAIT_LOGIN_RESULT  # the IMEI goes first, then its reply

    def greeting(self) -> list[Unit]:
        return [Unit(encode(Imei(self.imei)))]

    def link_lost(self) -> int:
        put_back = super().link_lost()
        self._device = DeviceDecoder()
        return put_back

    # --- sending -----------------------------------------------------------------------------

    def _data_unit(self, entries: list[Entry]) -> Unit:
        seq = self._next_seq()  # ours only: the count answers the oldest packet
        self._device.expect_ack()  # the next four bytes from the server are its count
        return Unit(_packet(entries), seq)

    def peek_frame(self) -> bytes:
        entries = self._next_batch(pop=False)
        return _packet(entries) if entries else b""

    def heartbeat(self, now: float) -> Unit:
        raise BoxError("a Teltonika box sends no heartbeat")

    def wrap(self, data: bytes) -> Unit:
        return Unit(data)

    # --- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> Reaction:
        self._device.feed(data)
        reaction = Reaction()
        for item in self._device:
            if isinstance(item, FrameError):
                self.frame_errors += 1
            elif isinstance(item, ImeiReply) and self.phase is Phase.AWAIT_LOGIN_RESULT:
                status = LoginStatus.OK if item.accepted else LoginStatus.UNKNOWN_DEVICE
                reaction.login = LoginResult(0, status, 0)
                self.phase = Phase.ONLINE if item.accepted else Phase.OFFLINE
            elif isinstance(item, RecordsAck) and self.online:
                self._on_count(item.count, now, reaction)
            elif isinstance(item, Codec12Command) and self.online:
                self._on_text(item.text)
        return reaction

    def _on_count(self, count: int, now: float, reaction: Reaction) -> None:
        if not self._in_flight:
            return
        seq, flight = next(iter(self._in_flight.items()))
        if count == len(flight.entries):
            answer = self._answer(seq, now, Fate.ACKED, None)
        else:
            # 0: the server stored nothing (busy); another count: the packet was misread. The
            # firmware sends the whole packet again, after a pause.
            answer = self._answer(seq, now, Fate.WAITING, None)
            self._retry_at = now + self.busy_backoff_s
        if answer is not None:
            reaction.answers.append(answer)

    def _on_text(self, text: str) -> None:
        command, gate = self._command_of(gprs.parse(text))
        if command is not None:
            self.commands.append(command)
        self._received.append(_Received(text, command, gate))

    @property
    def commands_due(self) -> int:
        return len(self._received)

    # --- commands ------------------------------------------------------------------------------

    def _command_of(self, order: gprs.Order) -> tuple[Command | None, int | None]:
        """The gp8 command an FMB text means and its speed gate; None: not understood."""
        seq = self._next_seq()  # Codec 12 has no command numbers: every text is executed
        if order.name == "setdigout" and len(order.outputs) == 1:
            ((output, state),) = order.outputs.items()
            gate = order.speed_gates.get(output)
            if output == WIRING.immobiliser:
                kind = (
                    CommandType.DISABLE_ENGINE_START if state else CommandType.ENABLE_ENGINE_START
                )
                return Command(seq, kind, 0), gate
            if output == WIRING.lock:
                return Command(seq, CommandType.LOCK if state else CommandType.UNLOCK, 0), gate
        if order.name == "setparam":
            periods = {order.parameters.get(p) for p in gprs.REPORT_PERIOD_PARAMETERS}
            value = periods.pop() if len(periods) == 1 else None
            if value is not None and value.isdigit():
                return Command(seq, CommandType.SET_REPORT_INTERVAL, int(value)), None
        if order.name == gprs.LOCATE:
            return Command(seq, CommandType.LOCATE, 0), None
        if order.name == gprs.REBOOT:
            return Command(seq, CommandType.REBOOT, 0), None
        return None, None

    def execute_due(self) -> list[Unit]:
        received, self._received = self._received, []
        return [Unit(encode(Response(self._run(r)))) for r in received]

    def _run(self, received: _Received) -> str:
        """Execute a received text and return the FMB's answer."""
        command, gate = received.command, received.gate
        if command is None:
            word = received.text.split()[0] if received.text.split() else ""
            return f"Unknown command: {word}"
        if command.command in _OUTPUT_COMMANDS:
            if gate is not None and self._speed_kmh > gate:
                # The firmware holds it until the vehicle slows down: a moving vehicle is never
                # cut (docs/teltonika.md).
                self._gated.append((command, gate))
                return f"{self._outputs()} queued until speed <= {gate} km/h"
            execute(command, self.state, self.on_command)
            return self._outputs()
        status, failure = execute(command, self.state, self.on_command)
        if status is not CommandStatus.DONE:
            return f"Error: {CommandFailure(failure).name.lower()}"
        if command.command is CommandType.SET_REPORT_INTERVAL:
            period = self.state.report_interval_s
            return "New value " + "".join(f"{p}:{period};" for p in gprs.REPORT_PERIOD_PARAMETERS)
        if command.command is CommandType.REBOOT:
            return "Restarting"
        return "Data sending: records sent"

    def _outputs(self) -> str:
        """ "DOUT1:1 DOUT2:0", the outputs' states as an FMB answers ``setdigout``."""
        states = {
            WIRING.immobiliser: self.state.engine_start_inhibited,
            WIRING.lock: self.state.doors_locked,
        }
        return " ".join(
            f"DOUT{n}:{int(states[n])}" if n in states else f"DOUT{n}:IGNORED"
            for n in range(1, WIRING.outputs + 1)
        )


@dataclass(frozen=True, slots=True)
class _Received:
    """A command text, what it means (None: not understood) and its speed gate (km/h)."""

    text: str
    command: Command | None
    gate: int | None


_OUTPUT_COMMANDS = frozenset(
    {
        CommandType.LOCK,
        CommandType.UNLOCK,
        CommandType.DISABLE_ENGINE_START,
        CommandType.ENABLE_ENGINE_START,
    }
)


def _packet(entries: list[Entry]) -> bytes:
    records = tuple(
        to_avl(e.record, None if e.code is None else (e.code, e.detail)) for e in entries
    )
    return encode(AvlPacket(CODEC, records))


class TeltonikaBox(Box):
    """A Teltonika FMB box on a TCP connection to gp8's Teltonika listener."""

    DEFAULT_PORT = 5028
    OUTBOX = TeltonikaOutbox

    def __init__(self, *args: Any, tls: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tls = tls  # simulator.tls.client_context, or None for plain TCP

    async def _open_link(self) -> Link:
        return await TcpLink.open(
            self.host, self.port, io_timeout_s=self.io_timeout_s, tls=self.tls
        )


__all__ = ["EVENT_IO", "TeltonikaBox", "TeltonikaOutbox", "to_avl"]
