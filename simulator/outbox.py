"""A virtual box's protocol core, sans-IO: its outbox of records and all it says on a link
(docs/protocol.md §5 over TCP, §7.2 to §7.5 over MQTT).

Bytes and a clock value in, bytes to send out: no sockets, no asyncio. The async box
(simulator.box) feeds `receive_data` what its link reads and hands the link the `Unit`s this
module returns; a link (TCP stream, MQTT messages) only moves bytes and tells which `Framing`
it needs.

Every record is an `Entry` with a `Fate`: WAITING in the outbox, IN_FLIGHT in a frame sent and
not yet answered, then ACKED (stored) or REFUSED (a final NACK). The final fates are tallied per
kind (position, event) the moment they happen, so nobody has to infer them afterwards. What a
NACK means is one table, `NACK_VERDICTS` (§5.6): send again at once, send again after the
back-off, or refuse. A record goes back to WAITING, at the front and in order, when its frame
is NACKed for a retryable reason, when the link drops, when the link says the frame reached no
server (MQTT PUBACK 0x10, §7.4), or when its ACK is overdue (`expire`; §5.2: the caller then
treats the link as dead).

Commands (§5.5) in one order whatever the link: `receive_data` answers a COMMAND with its ACK at
once and queues the command; the caller sends that ACK (simulator.box waits until the link has
taken it), then calls `execute_due`, which executes each command number once (a repeated
number gets the remembered result) and returns the COMMAND_RESULTs. So the receipt ACK is out
before the command runs, on every link.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypedDict

from protocol.gp8 import (
    MAX_RECORDS_PER_FRAME,
    Ack,
    Challenge,
    Command,
    CommandFailure,
    CommandResult,
    CommandStatus,
    CommandType,
    Event,
    EventCode,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Ident,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
    RecordFlags,
    encode,
    login_proof,
)

FIRMWARE = (1, 4, 2)
# Records per POSITION frame unless told otherwise: what the GP8 firmware sends after a short
# offline period (its buffer flushes in batches of 50).
DEFAULT_BATCH_SIZE = 50
# Frames sent and not yet answered at any time (the firmware's window; §5.2 allows 16).
DEFAULT_WINDOW = 4
# After NACK SERVER_BUSY (or a message no gateway received) the firmware waits this long.
BUSY_BACKOFF_S = 1.0
# A frame without its ACK or NACK this long after it was sent means a dead link (§5.2, §7.4).
ACK_TIMEOUT_S = 60.0
# Command numbers remembered with their results, so that a command resent by the server (its
# ACK got lost) is answered again and not executed twice (§5.5 asks for at least 32).
COMMAND_MEMORY = 64
_MAX_SEQ = 0xFFFF_FFFF


class Framing(Enum):
    """How a link carries frames, which decides what the box says around them."""

    STREAM = "stream"  # TCP: one byte stream per connection, CHALLENGE → LOGIN first (§5.1)
    MESSAGES = "messages"  # MQTT: each message stands alone and starts with IDENT (§7.3)


class Phase(Enum):
    OFFLINE = "offline"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_LOGIN_RESULT = "await_login_result"
    ONLINE = "online"


class Fate(Enum):
    WAITING = "waiting"  # in the outbox, in no frame on the wire
    IN_FLIGHT = "in_flight"  # in a frame sent and not yet answered
    ACKED = "acked"  # stored by the server: final
    REFUSED = "refused"  # the server will never take it: final


class Kind(Enum):
    POSITION = "position"
    EVENT = "event"


class Verdict(Enum):
    """What a NACK makes of the records of the frame it answers."""

    RESEND = "resend"  # back to the outbox, sent again at once
    RESEND_LATER = "resend_later"  # back to the outbox, sent again after the back-off
    REFUSE = "refuse"  # final: refused and counted


# docs/protocol.md §5.6, one row per reason; a test checks that it covers every NackReason.
NACK_VERDICTS: dict[NackReason, Verdict] = {
    # Damaged in transit: the same content will do.
    NackReason.BAD_CRC: Verdict.RESEND,
    # Good CRC, bad layout: the same bytes would fail again.
    NackReason.MALFORMED: Verdict.REFUSE,
    # The server does not take this type from a box: nothing a resend changes.
    NackReason.UNKNOWN_TYPE: Verdict.REFUSE,
    # Nothing was stored; the server closes the link and the records go after the next login.
    NackReason.NOT_AUTHENTICATED: Verdict.RESEND,
    # Impossible content (§4.4): resending cannot help.
    NackReason.INVALID_DATA: Verdict.REFUSE,
    # Our frames are far below MAX_FRAME_SIZE: the length field was damaged in transit (§6).
    NackReason.TOO_LARGE: Verdict.RESEND,
    # We only speak version 1: a server that does not is being changed; keep the records.
    NackReason.UNSUPPORTED_VERSION: Verdict.RESEND_LATER,
    # Storage unavailable, nothing stored: keep them and let the server recover.
    NackReason.SERVER_BUSY: Verdict.RESEND_LATER,
    # The frame names another box: nothing will change that.
    NackReason.IMEI_MISMATCH: Verdict.REFUSE,
}
RETRYABLE_NACKS = frozenset(r for r, v in NACK_VERDICTS.items() if v is not Verdict.REFUSE)


class Resend(Enum):
    """Why records went back to the outbox to be sent again."""

    NACK = "nack"  # a retryable NACK
    LINK_LOST = "link_lost"  # the link dropped with their frame unanswered
    ACK_TIMEOUT = "ack_timeout"  # their frame went unanswered for ack_timeout_s
    UNROUTED = "unrouted"  # the link says no server got the frame (MQTT: no subscriber)


@dataclass(slots=True)
class BoxState:
    """What the box's relays and settings are; its records and COMMAND_RESULTs report it."""

    doors_locked: bool = False
    engine_start_inhibited: bool = False
    report_interval_s: int = 30
    reboots: int = 0

    @property
    def flags(self) -> int:
        flags = 0
        if self.doors_locked:
            flags |= RecordFlags.DOORS_LOCKED
        if self.engine_start_inhibited:
            flags |= RecordFlags.ENGINE_START_INHIBITED
        return int(flags)


CommandOutcome = tuple[CommandStatus, CommandFailure]
# Called when a command number is executed for the first time; returns an outcome to override
# the box's own execution, or None to let it run. Must not block.
CommandHook = Callable[[Command, BoxState], CommandOutcome | None]


def execute(command: Command, state: BoxState, hook: CommandHook | None) -> CommandOutcome:
    """Carry out ``command`` on the box's ``state``."""
    if hook is not None:
        custom = hook(command, state)
        if custom is not None:
            return custom
    match command.command:
        case CommandType.LOCK:
            state.doors_locked = True
        case CommandType.UNLOCK:
            state.doors_locked = False
        case CommandType.DISABLE_ENGINE_START:
            state.engine_start_inhibited = True
        case CommandType.ENABLE_ENGINE_START:
            state.engine_start_inhibited = False
        case CommandType.SET_REPORT_INTERVAL:
            if command.param == 0:
                return CommandStatus.FAILED, CommandFailure.INVALID_PARAMETER
            state.report_interval_s = command.param
        case CommandType.REBOOT:
            state.reboots += 1
        case CommandType.LOCATE:
            pass  # the caller's hook (or the simulator) sends the position
    return CommandStatus.DONE, CommandFailure.NONE


@dataclass(eq=False, slots=True)
class Entry:
    """One record in the outbox (an event when ``code`` is set) and what became of it."""

    record: PositionRecord
    code: EventCode | None = None
    detail: int = 0
    fate: Fate = Fate.WAITING
    sends: int = 0  # frames it went out in
    refusal: NackReason | None = None  # why it was REFUSED

    @property
    def kind(self) -> Kind:
        return Kind.POSITION if self.code is None else Kind.EVENT


@dataclass(frozen=True, slots=True)
class Unit:
    """Bytes the link sends as one piece: one MQTT message; TCP writes them back to back."""

    data: bytes
    seq: int | None = None  # the frame in it that awaits an answer, if any


@dataclass(frozen=True, slots=True)
class Answer:
    """The server's answer to one of our frames, and the fate it gave the frame's records."""

    seq: int
    entries: tuple[Entry, ...]  # empty for a HEARTBEAT
    fate: Fate  # ACKED, REFUSED, or WAITING (to be sent again)
    reason: NackReason | None  # the NACK's; None for an ACK
    latency_s: float  # from handing the frame to the link to reading its answer

    @property
    def is_event(self) -> bool:
        # A frame holds one event alone or positions only.
        return bool(self.entries) and self.entries[0].kind is Kind.EVENT


@dataclass(slots=True)
class Reaction:
    """What received data calls for."""

    send: list[Unit] = field(default_factory=list)  # now, in this order
    answers: list[Answer] = field(default_factory=list)
    login: LoginResult | Nack | None = None  # how the login ended, if it did in this data


@dataclass(slots=True)
class _Flight:
    entries: list[Entry]
    sent_at: float


_Handler = Callable[["Outbox", Any, float, Reaction], None]


class OutboxOptions(TypedDict, total=False):
    """`Outbox`'s keyword arguments, for whoever passes them through (simulator.box)."""

    batch_size: int
    window: int
    busy_backoff_s: float
    ack_timeout_s: float | None
    on_command: CommandHook | None
    firmware: tuple[int, int, int]


class Outbox:
    """The records of one box and its side of the protocol; ``now`` is any monotonic clock in
    seconds (the event loop's)."""

    def __init__(
        self,
        imei: str,
        secret: str,
        model: Model = Model.GP8000,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        window: int = DEFAULT_WINDOW,
        busy_backoff_s: float = BUSY_BACKOFF_S,
        ack_timeout_s: float | None = ACK_TIMEOUT_S,
        on_command: CommandHook | None = None,
        firmware: tuple[int, int, int] = FIRMWARE,
    ) -> None:
        if not 1 <= batch_size <= MAX_RECORDS_PER_FRAME:
            raise ValueError(f"batch_size must be 1..{MAX_RECORDS_PER_FRAME}")
        self.imei = imei
        self.secret = secret
        self.model = model
        self.firmware = firmware
        self.batch_size = batch_size
        self.window = max(1, window)
        self.busy_backoff_s = busy_backoff_s
        self.ack_timeout_s = ack_timeout_s
        self.on_command = on_command
        self.state = BoxState()
        self.phase = Phase.OFFLINE
        self.framing = Framing.STREAM
        self.challenge: Challenge | None = None  # the last one, with the server's clock
        # Counters: final fates per kind, resends per cause, NACKs per reason.
        self.tally: Counter[tuple[Kind, Fate]] = Counter()
        self.resends: Counter[Resend] = Counter()
        self.nacks: Counter[NackReason] = Counter()
        self.frame_errors = 0
        self.commands: list[Command] = []  # every COMMAND received, repeats included
        self._seq = 0
        self._waiting: deque[Entry] = deque()
        self._in_flight: OrderedDict[int, _Flight] = OrderedDict()  # by seq, in send order
        self._heartbeats: dict[int, float] = {}  # seq → sent at
        self._due: list[Command] = []  # ACKed, to be executed
        self._executed: OrderedDict[int, CommandOutcome] = OrderedDict()
        self._retry_at = -math.inf
        self._decoder = FrameDecoder()

    # --- counts ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records not yet ACKed or refused (waiting or in flight)."""
        return len(self._waiting) + sum(len(f.entries) for f in self._in_flight.values())

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def frames_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def room(self) -> int:
        """Frames that may go out before the window is full."""
        return max(0, self.window - len(self._in_flight))

    def count(self, fate: Fate, kind: Kind | None = None) -> int:
        """Records that reached a final ``fate`` (of ``kind``, or both kinds)."""
        kinds = Kind if kind is None else (kind,)
        return sum(self.tally[k, fate] for k in kinds)

    @property
    def acked(self) -> int:
        return self.count(Fate.ACKED)

    @property
    def refused(self) -> int:
        return self.count(Fate.REFUSED)

    @property
    def resent(self) -> int:
        """Records sent again after a frame of theirs may have reached the server (a retryable
        NACK, a lost link, an ACK timeout); unrouted ones, which reached no server, apart."""
        return sum(n for cause, n in self.resends.items() if cause is not Resend.UNROUTED)

    @property
    def unrouted(self) -> int:
        return self.resends[Resend.UNROUTED]

    @property
    def commands_due(self) -> int:
        return len(self._due)

    @property
    def online(self) -> bool:
        return self.phase is Phase.ONLINE

    # --- records -----------------------------------------------------------------------------

    def enqueue(self, records: Iterable[PositionRecord]) -> list[Entry]:
        """Position records into the outbox; their entries show what becomes of them."""
        entries = [Entry(r) for r in records]
        self._waiting.extend(entries)
        return entries

    def enqueue_event(self, code: EventCode, record: PositionRecord, detail: int = 0) -> Entry:
        entry = Entry(record, code, detail)
        self._waiting.append(entry)
        return entry

    # --- the link ----------------------------------------------------------------------------

    def link_up(self, framing: Framing) -> None:
        """A link is open: over a stream the server speaks first (CHALLENGE, §5.1); over
        messages the broker has already authenticated the box (§7.2)."""
        self.framing = framing
        self._decoder = FrameDecoder()
        self.phase = Phase.AWAIT_CHALLENGE if framing is Framing.STREAM else Phase.ONLINE

    def greeting(self) -> list[Unit]:
        """What the box says first on a new link: nothing, a GP8 box waits for the CHALLENGE
        (a Teltonika box sends its IMEI: simulator.teltonika)."""
        return []

    def link_lost(self) -> int:
        """The link is gone: every frame in flight goes back to the front of the outbox, in
        order, and unanswered heartbeats are forgotten. Returns the records put back."""
        flights = list(self._in_flight.values())
        self._in_flight.clear()
        self._heartbeats.clear()
        self.phase = Phase.OFFLINE
        self._decoder = FrameDecoder()
        return self._put_back(flights, Resend.LINK_LOST)

    # --- sending -----------------------------------------------------------------------------

    def may_send(self, now: float) -> bool:
        """Records wait, the window has room and no back-off is running."""
        return bool(self._waiting) and len(self._in_flight) < self.window and now >= self._retry_at

    def take(self, now: float, max_frames: int | None = None) -> list[Unit]:
        """Up to ``max_frames`` data frames from the outbox, in flight from ``now`` (neither
        the window nor the back-off is applied: `may_send` says when they allow more)."""
        units: list[Unit] = []
        while self._waiting and (max_frames is None or len(units) < max_frames):
            entries = self._next_batch(pop=True)
            unit = self._data_unit(entries)
            assert unit.seq is not None
            for entry in entries:
                entry.fate = Fate.IN_FLIGHT
                entry.sends += 1
            self._in_flight[unit.seq] = _Flight(entries, now)
            units.append(unit)
        return units

    def _data_unit(self, entries: list[Entry]) -> Unit:
        """The frame carrying ``entries``, under a sequence number of its own (what a protocol
        of another box says instead: simulator.teltonika)."""
        prefix = self._prefix()
        seq = self._next_seq()
        return Unit(prefix + encode(_frame(entries, seq)), seq)

    def peek_frame(self) -> bytes:
        """The next frame as it would go out (a HEARTBEAT when nothing waits), changing nothing:
        for a link lost in the middle of sending it."""
        entries = self._next_batch(pop=False)
        seq = (self._seq + 1) & _MAX_SEQ
        return encode(_frame(entries, seq) if entries else Heartbeat(seq))

    def heartbeat(self, now: float) -> Unit:
        prefix = self._prefix()
        seq = self._next_seq()
        self._heartbeats[seq] = now
        return Unit(prefix + encode(Heartbeat(seq)), seq)

    def wrap(self, data: bytes) -> Unit:
        """Raw bytes (the simulator's corrupted frames) as the link's framing needs them."""
        return Unit(self._prefix() + data)

    def undelivered(self, seqs: Iterable[int], now: float) -> int:
        """The link says these frames reached no server: their records go back to the outbox,
        sent again after the back-off. Returns the records put back."""
        wanted = set(seqs)
        for seq in wanted & self._heartbeats.keys():
            del self._heartbeats[seq]
        flights = [self._in_flight.pop(s) for s in list(self._in_flight) if s in wanted]
        if flights:
            self._retry_at = now + self.busy_backoff_s
        return self._put_back(flights, Resend.UNROUTED)

    # --- time --------------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Frames unanswered for ``ack_timeout_s`` go back to the outbox; returns the records
        put back. Anything but 0 means the link is dead (§5.2)."""
        if self.ack_timeout_s is None:
            return 0
        late: list[_Flight] = []
        for seq, flight in list(self._in_flight.items()):
            if now - flight.sent_at < self.ack_timeout_s:
                break  # in send order: the rest are younger
            late.append(self._in_flight.pop(seq))
        return self._put_back(late, Resend.ACK_TIMEOUT)

    def next_deadline(self, now: float) -> float | None:
        """When something changes without any input (a back-off ends, an ACK is overdue)."""
        deadlines: list[float] = []
        if self._waiting and self._retry_at > now:
            deadlines.append(self._retry_at)
        if self._in_flight and self.ack_timeout_s is not None:
            deadlines.append(next(iter(self._in_flight.values())).sent_at + self.ack_timeout_s)
        return min(deadlines, default=None)

    # --- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> Reaction:
        """Bytes the link read (a piece of the stream, or one whole message)."""
        if self.framing is Framing.MESSAGES:
            # Each message stands alone: what is left of a torn one must not eat the next.
            self._decoder = FrameDecoder()
        self._decoder.feed(data)
        reaction = Reaction()
        for item in self._decoder:
            if isinstance(item, FrameError):
                self.frame_errors += 1
                continue
            handler = _HANDLERS[self.phase].get(type(item))
            if handler is not None:  # what the box does not expect now, it ignores
                handler(self, item, now, reaction)
        return reaction

    def execute_due(self) -> list[Unit]:
        """Execute the commands ACKed since the last call, each number once; their
        COMMAND_RESULTs, to send."""
        due, self._due = self._due, []
        units: list[Unit] = []
        for command in due:
            outcome = self._executed.get(command.seq)
            if outcome is None:
                outcome = execute(command, self.state, self.on_command)
                self._executed[command.seq] = outcome
                if len(self._executed) > COMMAND_MEMORY:
                    self._executed.popitem(last=False)
            status, failure = outcome
            prefix = self._prefix()
            result = CommandResult(self._next_seq(), command.seq, status, failure, self.state.flags)
            units.append(Unit(prefix + encode(result)))
        return units

    def _on_challenge(self, challenge: Challenge, now: float, reaction: Reaction) -> None:
        self.challenge = challenge
        proof = login_proof(self.secret, challenge.nonce, self.imei, self.model)
        login = Login(self._next_seq(), self.imei, self.model, self.firmware, proof)
        reaction.send.append(Unit(encode(login)))
        self.phase = Phase.AWAIT_LOGIN_RESULT

    def _on_login_result(self, result: LoginResult, now: float, reaction: Reaction) -> None:
        reaction.login = result
        self.phase = Phase.ONLINE if result.status is LoginStatus.OK else Phase.OFFLINE

    def _on_login_nack(self, nack: Nack, now: float, reaction: Reaction) -> None:
        reaction.login = nack
        self.phase = Phase.OFFLINE

    def _on_ack(self, ack: Ack, now: float, reaction: Reaction) -> None:
        answer = self._answer(ack.acked_seq, now, Fate.ACKED, None)
        if answer is not None:
            reaction.answers.append(answer)

    def _on_nack(self, nack: Nack, now: float, reaction: Reaction) -> None:
        self.nacks[nack.reason] += 1
        verdict = NACK_VERDICTS[nack.reason]
        fate = Fate.REFUSED if verdict is Verdict.REFUSE else Fate.WAITING
        answer = self._answer(nack.nacked_seq, now, fate, nack.reason)
        if answer is None:
            return
        if verdict is Verdict.RESEND_LATER:
            self._retry_at = now + self.busy_backoff_s
        reaction.answers.append(answer)

    def _on_command(self, command: Command, now: float, reaction: Reaction) -> None:
        # §5.5 step 1: ACK on receipt, before executing (`execute_due`).
        self.commands.append(command)
        prefix = self._prefix()
        reaction.send.append(Unit(prefix + encode(Ack(self._next_seq(), command.seq))))
        self._due.append(command)

    # --- internals ---------------------------------------------------------------------------

    def _answer(self, seq: int, now: float, fate: Fate, reason: NackReason | None) -> Answer | None:
        """Settle the frame ``seq`` with ``fate``; None when it is not ours to settle (already
        answered, put back, or a NACK of a damaged header, §5.6)."""
        flight = self._in_flight.pop(seq, None)
        if flight is None:
            sent_at = self._heartbeats.pop(seq, None)
            return None if sent_at is None else Answer(seq, (), fate, reason, now - sent_at)
        if fate is Fate.WAITING:
            self._put_back([flight], Resend.NACK)
        else:
            for entry in flight.entries:
                entry.fate = fate
                entry.refusal = reason
                self.tally[entry.kind, fate] += 1
        return Answer(seq, tuple(flight.entries), fate, reason, now - flight.sent_at)

    def _put_back(self, flights: list[_Flight], cause: Resend) -> int:
        # In reverse to the front, so that the outbox keeps record order.
        count = 0
        for flight in reversed(flights):
            for entry in flight.entries:
                entry.fate = Fate.WAITING
            self._waiting.extendleft(reversed(flight.entries))
            count += len(flight.entries)
        self.resends[cause] += count
        return count

    def _next_batch(self, *, pop: bool) -> list[Entry]:
        """An event alone, or up to batch_size positions up to the next event."""
        waiting = self._waiting
        if not waiting:
            return []
        if waiting[0].code is not None:
            entries = [waiting[0]]
        else:
            entries = []
            for entry in waiting:
                if entry.code is not None or len(entries) == self.batch_size:
                    break
                entries.append(entry)
        if pop:
            for _ in entries:
                waiting.popleft()
        return entries

    def _prefix(self) -> bytes:
        """What each unit starts with: nothing on a stream, IDENT on messages (§7.3)."""
        if self.framing is Framing.STREAM:
            return b""
        return encode(Ident(self._next_seq(), self.imei, self.model, self.firmware))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & _MAX_SEQ
        return self._seq


def _frame(entries: list[Entry], seq: int) -> Position | Event:
    first = entries[0]
    if first.code is not None:
        return Event(seq, first.code, first.detail, first.record)
    return Position(seq, tuple(e.record for e in entries))


# What the box handles in each phase; anything else it ignores (a stray CHALLENGE once logged
# in, an ACK before login).
_LOGIN_NACK: dict[type[Message], _Handler] = {Nack: Outbox._on_login_nack}
_HANDLERS: dict[Phase, dict[type[Message], _Handler]] = {
    Phase.OFFLINE: {},
    Phase.AWAIT_CHALLENGE: {Challenge: Outbox._on_challenge, **_LOGIN_NACK},
    Phase.AWAIT_LOGIN_RESULT: {LoginResult: Outbox._on_login_result, **_LOGIN_NACK},
    Phase.ONLINE: {Ack: Outbox._on_ack, Nack: Outbox._on_nack, Command: Outbox._on_command},
}
