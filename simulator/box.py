"""A virtual GP8 box: an asyncio client that speaks the protocol the way the firmware does.

It keeps every record in an outbox until the frame that carried it is ACKed, so nothing is lost
across NACKs, cut connections and reconnects: in-flight records go back to the outbox (in
order) when the link drops, and are resent, possibly in differently sized batches, after the
next login. NACK SERVER_BUSY and BAD_CRC mean "send it again later"; the other NACK reasons mean
the server will never take those bytes, so the records are dropped (and counted).

It also executes COMMANDs (lock, unlock, engine-start inhibit, ...) against a small box state
that its next records report, and answers COMMAND_RESULT; a command the box already executed
(same command sequence number) is answered again without being executed twice.

Used by the simulator CLI and by end-to-end tests; every network await has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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

log = logging.getLogger(__name__)

FIRMWARE = (1, 4, 2)
READ_SIZE = 64 * 1024
_MAX_SEQ = 0xFFFF_FFFF
# Records per POSITION frame unless told otherwise: what the GP8 firmware sends after a short
# offline period (its buffer flushes in batches of 50).
DEFAULT_BATCH_SIZE = 50
# Frames sent and not yet ACKed at any time (the firmware's window).
DEFAULT_WINDOW = 4
# After NACK SERVER_BUSY the firmware waits this long before resending.
BUSY_BACKOFF_S = 1.0
# Command sequence numbers remembered for de-duplication: a command resent by the server
# (its ACK got lost) is answered, not executed twice.
COMMAND_MEMORY = 64
# NACK reasons after which resending the same bytes can succeed.
RETRYABLE_NACKS = frozenset({NackReason.SERVER_BUSY, NackReason.BAD_CRC})


class BoxError(Exception):
    """Base class of the virtual box's errors."""


class BoxDisconnected(BoxError):
    """The connection is gone (or was never made); unacknowledged records stay in the outbox."""


class LoginRefused(BoxError):
    def __init__(self, status: LoginStatus) -> None:
        super().__init__(f"login refused: {status.name}")
        self.status = status


def make_record(
    time_ms: int,
    lat: float,
    lon: float,
    *,
    speed_kmh: float = 0.0,
    heading_deg: float = 0.0,
    altitude_m: int = 0,
    satellites: int = 9,
    hdop: float = 0.9,
    fix_valid: bool = True,
    ignition: bool = False,
    flags: int = 0,
    odometer_m: int = 0,
    ext_power_mv: int = 12_600,
    battery_mv: int = 4_100,
    gsm_signal: int = 20,
    warnings: int = 0,
    badge: int = 0,
    buffered: bool = False,
) -> PositionRecord:
    """A position record in wire units from physical values."""
    if fix_valid:
        flags |= RecordFlags.FIX_VALID
    if ignition:
        flags |= RecordFlags.IGNITION
    if ext_power_mv:
        flags |= RecordFlags.EXTERNAL_POWER
    if buffered:
        flags |= RecordFlags.BUFFERED
    return PositionRecord(
        time_ms=time_ms,
        lat_e7=round(lat * 1e7),
        lon_e7=round(lon * 1e7),
        altitude_m=altitude_m,
        speed_dkmh=round(speed_kmh * 10),
        heading_ddeg=round(heading_deg * 10) % 3600,
        satellites=satellites,
        hdop_d=round(hdop * 10),
        flags=int(flags),
        odometer_m=odometer_m,
        ext_power_mv=ext_power_mv,
        battery_mv=battery_mv,
        gsm_signal=gsm_signal,
        warnings=warnings,
        badge=badge,
    )


@dataclass(frozen=True, slots=True)
class _Item:
    """One outbox entry: a position record, or an event when ``code`` is set."""

    record: PositionRecord
    code: EventCode | None = None
    detail: int = 0


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


M = TypeVar("M", bound=Message)
CommandOutcome = tuple[CommandStatus, CommandFailure]
CommandHook = Callable[[Command, BoxState], CommandOutcome | None]
# Called on each ACK of a data frame: (records in it, whether it was an EVENT, seconds since it
# was written). For the simulator's report; must not block.
AckHook = Callable[[int, bool, float], None]


@dataclass(eq=False)
class _Link:
    """One TCP connection; a box has at most one live link."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    reader_task: asyncio.Task[None] | None = None
    heartbeat_task: asyncio.Task[None] | None = None
    alive: bool = True


class OutboxDelivery:
    """What every virtual box does with its outbox, whatever the transport: send records and
    keep reconnecting until the server has acknowledged all of them. Subclasses provide the
    link (connect, flush, what to do with a broken one)."""

    imei: str
    _LOG_NAME = "box"

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        raise NotImplementedError

    def enqueue(self, records: Iterable[PositionRecord]) -> None:
        raise NotImplementedError

    async def connect(self) -> None:
        raise NotImplementedError

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        raise NotImplementedError

    async def _abandon_link(self) -> None:
        """Forget a link that failed, so the next round connects anew."""
        raise NotImplementedError

    async def send_positions(
        self,
        records: Iterable[PositionRecord],
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        """Enqueue ``records`` and flush the outbox."""
        self.enqueue(records)
        await self.flush(timeout)

    async def deliver(
        self,
        timeout: float = 60.0,  # noqa: ASYNC109
        *,
        reconnect_delay_s: float = 0.05,
    ) -> None:
        """Flush the outbox, reconnecting as often as needed, until it is empty."""
        async with asyncio.timeout(timeout):
            while self.pending:
                try:
                    if not self.connected:
                        await self.connect()
                    await self.flush(timeout=None)
                except (BoxDisconnected, OSError, TimeoutError) as exc:
                    # A TimeoutError here is ours (connect, login, ACKs): the outer deadline
                    # reaches this code as a cancellation.
                    log.debug("%s %s: %r; reconnecting", self._LOG_NAME, self.imei, exc)
                    await self._abandon_link()
                    await asyncio.sleep(reconnect_delay_s)


class VirtualBox(OutboxDelivery):
    def __init__(
        self,
        imei: str,
        secret: str,
        model: Model = Model.GP8000,
        *,
        host: str = "127.0.0.1",
        port: int = 5027,
        batch_size: int = DEFAULT_BATCH_SIZE,
        window: int = DEFAULT_WINDOW,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = 30.0,
        busy_backoff_s: float = BUSY_BACKOFF_S,
        heartbeat_interval_s: float | None = None,
        on_command: CommandHook | None = None,
        on_ack: AckHook | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_RECORDS_PER_FRAME:
            raise ValueError(f"batch_size must be 1..{MAX_RECORDS_PER_FRAME}")
        self.imei = imei
        self.secret = secret
        self.model = model
        self.host = host
        self.port = port
        self.batch_size = batch_size
        self.window = max(1, window)
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.busy_backoff_s = busy_backoff_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.on_command = on_command
        self.on_ack = on_ack
        self.state = BoxState()
        # Counters, for tests and the CLI.
        self.acked = 0  # records (positions + events) the server ACKed
        self.dropped = 0  # records the server refused for good
        self.requeued = 0  # records put back in the outbox to be sent again (drop, NACK)
        self.nacks: Counter[NackReason] = Counter()
        self.frame_errors = 0
        self.logins = 0
        self.commands: list[Command] = []
        self.server_time_offset_ms = 0  # server clock minus ours, from the last CHALLENGE
        self._seq = 0
        self._unsent: deque[_Item] = deque()
        self._inflight: OrderedDict[int, list[_Item]] = OrderedDict()
        self._sent_at: dict[int, float] = {}  # loop time each in-flight frame was written
        self._heartbeats: dict[int, asyncio.Future[None]] = {}
        self._executed: OrderedDict[int, CommandOutcome] = OrderedDict()
        self._retry_at = 0.0
        self._changed = asyncio.Event()
        self._link: _Link | None = None

    # --- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.alive

    @property
    def pending(self) -> int:
        """Records not yet ACKed (unsent or in flight)."""
        return len(self._unsent) + sum(map(len, self._inflight.values()))

    def record(
        self, time_ms: int, lat: float, lon: float, *, flags: int = 0, **kwargs: Any
    ) -> PositionRecord:
        """`make_record` with the box's current relay state in the flags."""
        return make_record(time_ms, lat, lon, flags=flags | self.state.flags, **kwargs)

    # --- connecting --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, answer the CHALLENGE and log in. Raises LoginRefused, BoxDisconnected,
        TimeoutError, OSError."""
        self._drop_link()
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        link = _Link(reader, writer)
        try:
            async with asyncio.timeout(self.io_timeout_s):
                challenge = await self._expect(link, Challenge)
                self.server_time_offset_ms = challenge.server_time_ms - _now_ms()
                proof = login_proof(self.secret, challenge.nonce, self.imei, self.model)
                login = Login(self._next_seq(), self.imei, self.model, FIRMWARE, proof)
                writer.write(encode(login))
                await writer.drain()
                result = await self._expect(link, LoginResult)
        except BaseException:
            writer.transport.abort()
            raise
        if result.status is not LoginStatus.OK:
            writer.transport.abort()
            raise LoginRefused(result.status)
        self.logins += 1
        self._link = link
        link.reader_task = asyncio.create_task(self._read_loop(link), name=f"box-{self.imei}")
        if self.heartbeat_interval_s:
            link.heartbeat_task = asyncio.create_task(self._heartbeat_loop(link))
        self._changed.set()

    async def _expect(self, link: _Link, kind: type[M]) -> M:
        while True:
            try:
                message = link.decoder.next_frame()
            except FrameError:
                self.frame_errors += 1
                continue
            if message is None:
                data = await link.reader.read(READ_SIZE)
                if not data:
                    raise BoxDisconnected("server closed the connection during login")
                link.decoder.feed(data)
            elif isinstance(message, kind):
                return message
            elif isinstance(message, Nack):
                raise BoxDisconnected(f"server NACKed the login: {message.reason.name}")

    async def close(self) -> None:
        """Close the connection politely; unacknowledged records stay in the outbox."""
        link = self._link
        if link is None:
            return
        self._drop_link()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.io_timeout_s):
                await link.writer.wait_closed()
        await self._reap(link)

    def cut(self) -> None:
        """Lose the connection abruptly, mid-frame: write the first half of the next frame
        (or of a heartbeat) and abort the socket, as a box losing coverage would."""
        link = self._link
        if link is None:
            return
        items = self._next_frame_items(peek=True)
        message = self._frame_for(items, self._seq + 1) if items else Heartbeat(self._seq + 1)
        frame = encode(message)
        if not link.writer.transport.is_closing():
            link.writer.write(frame[: len(frame) // 2])
        self._drop_link(abort=True)

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as is on the live link (the simulator's corrupted frames); raises
        BoxDisconnected when there is none."""
        link = self._require_link()
        link.writer.write(data)

    def _drop_link(self, *, abort: bool = False) -> None:
        """Forget the current link; everything it had in flight goes back to the outbox."""
        link = self._link
        if link is None:
            return
        self._link = None
        link.alive = False
        transport = link.writer.transport
        if abort:
            transport.abort()
        else:
            transport.close()
        for task in (link.reader_task, link.heartbeat_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        # In-flight frames in reverse order to the front, so the outbox keeps record order.
        for items in reversed(self._inflight.values()):
            self._unsent.extendleft(reversed(items))
            self.requeued += len(items)
        self._inflight.clear()
        self._sent_at.clear()
        for waiter in self._heartbeats.values():
            if not waiter.done():
                waiter.set_exception(BoxDisconnected("connection lost"))
        self._heartbeats.clear()
        self._changed.set()

    async def _reap(self, link: _Link) -> None:
        tasks = [t for t in (link.reader_task, link.heartbeat_task) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- sending -----------------------------------------------------------------------------

    def enqueue(self, records: Iterable[PositionRecord]) -> None:
        """Put position records in the outbox (sent by the next `send_frames`/`flush`)."""
        self._unsent.extend(_Item(r) for r in records)

    def enqueue_event(self, code: EventCode, record: PositionRecord, detail: int = 0) -> None:
        self._unsent.append(_Item(record, code, detail))

    async def send_frames(self, max_frames: int | None = None) -> int:
        """Write up to ``max_frames`` frames from the outbox without waiting for their ACKs
        (the window is not applied); returns how many were written."""
        link = self._require_link()
        frames: list[bytes] = []
        now = asyncio.get_running_loop().time()
        while self._unsent and (max_frames is None or len(frames) < max_frames):
            items = self._next_frame_items(peek=False)
            seq = self._next_seq()
            self._inflight[seq] = items
            self._sent_at[seq] = now
            frames.append(encode(self._frame_for(items, seq)))
        if frames:
            link.writer.write(b"".join(frames))
            await self._drain(link)
        return len(frames)

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send the whole outbox and wait until every record is ACKed or dropped.

        Raises BoxDisconnected if the link drops (the rest stays in the outbox) and
        TimeoutError after ``timeout`` seconds (default: io_timeout_s).
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.io_timeout_s if timeout is None else timeout):
            while self._unsent or self._inflight:
                self._require_link()
                self._changed.clear()
                delay = self._retry_at - loop.time()
                room = self.window - len(self._inflight)
                if self._unsent and room > 0 and delay <= 0:
                    await self.send_frames(room)
                elif delay > 0 and not self._inflight:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._changed.wait()
                else:
                    await self._changed.wait()

    async def _abandon_link(self) -> None:
        self._drop_link(abort=True)

    async def heartbeat(self) -> None:
        """Send a HEARTBEAT and wait for its ACK."""
        link = self._require_link()
        seq = self._next_seq()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._heartbeats[seq] = waiter
        try:
            link.writer.write(encode(Heartbeat(seq)))
            await self._drain(link)
            async with asyncio.timeout(self.io_timeout_s):
                await waiter
        finally:
            self._heartbeats.pop(seq, None)

    def _next_frame_items(self, *, peek: bool) -> list[_Item]:
        if not self._unsent:
            return []
        if self._unsent[0].code is not None:
            items = [self._unsent[0]]
        else:
            items = []
            for item in self._unsent:
                if item.code is not None or len(items) == self.batch_size:
                    break
                items.append(item)
        if not peek:
            for _ in items:
                self._unsent.popleft()
        return items

    @staticmethod
    def _frame_for(items: list[_Item], seq: int) -> Position | Event:
        first = items[0]
        if first.code is not None:
            return Event(seq, first.code, first.detail, first.record)
        return Position(seq, tuple(i.record for i in items))

    def _require_link(self) -> _Link:
        link = self._link
        if link is None or not link.alive:
            raise BoxDisconnected("not connected")
        return link

    async def _drain(self, link: _Link) -> None:
        try:
            async with asyncio.timeout(self.io_timeout_s):
                await link.writer.drain()
        except (OSError, TimeoutError) as exc:
            if link is self._link:
                self._drop_link(abort=True)
            raise BoxDisconnected(f"write failed: {exc!r}") from exc

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & _MAX_SEQ
        return self._seq

    # --- receiving ---------------------------------------------------------------------------

    async def _read_loop(self, link: _Link) -> None:
        # No timeout on this read, by design: the server may rightly say nothing for hours.
        # A dead link is found by the heartbeats (heartbeat_interval_s) and by flush timeouts.
        try:
            while link.alive:
                data = await link.reader.read(READ_SIZE)
                if not data:
                    break
                link.decoder.feed(data)
                for item in link.decoder:
                    if isinstance(item, FrameError):
                        self.frame_errors += 1
                    else:
                        self._on_message(link, item)
        except (OSError, EOFError) as exc:
            log.debug("box %s: read failed: %r", self.imei, exc)
        finally:
            if link is self._link:
                self._drop_link(abort=True)

    def _on_message(self, link: _Link, message: Message) -> None:
        if isinstance(message, Ack):
            items = self._inflight.pop(message.acked_seq, None)
            sent_at = self._sent_at.pop(message.acked_seq, None)
            if items is not None:
                self.acked += len(items)
                self._changed.set()
                if self.on_ack is not None and sent_at is not None:
                    latency = asyncio.get_running_loop().time() - sent_at
                    self.on_ack(len(items), items[0].code is not None, latency)
            waiter = self._heartbeats.get(message.acked_seq)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(message, Nack):
            self.nacks[message.reason] += 1
            items = self._inflight.pop(message.nacked_seq, None)
            if items is None:
                return
            self._sent_at.pop(message.nacked_seq, None)
            if message.reason in RETRYABLE_NACKS:
                self._unsent.extendleft(reversed(items))
                self.requeued += len(items)
                if message.reason is NackReason.SERVER_BUSY:
                    self._retry_at = asyncio.get_running_loop().time() + self.busy_backoff_s
            else:
                log.info("box %s: %d records refused (%s)", self.imei, len(items), message.reason)
                self.dropped += len(items)
            self._changed.set()
        elif isinstance(message, Command):
            self._on_command(link, message)

    def _on_command(self, link: _Link, command: Command) -> None:
        self.commands.append(command)
        # protocol.md §5.5 step 1: ACK on receipt (the server records it delivered), then
        # execute (once per command number) and answer COMMAND_RESULT. Writes without waiting:
        # the reader must not block on a slow socket; the transport buffers them, and a dead
        # link shows up as EOF on the next read.
        link.writer.write(encode(Ack(self._next_seq(), command.seq)))
        outcome = self._executed.get(command.seq)
        if outcome is None:
            outcome = self._execute(command)
            self._executed[command.seq] = outcome
            if len(self._executed) > COMMAND_MEMORY:
                self._executed.popitem(last=False)
        status, failure = outcome
        reply = CommandResult(self._next_seq(), command.seq, status, failure, self.state.flags)
        link.writer.write(encode(reply))

    def _execute(self, command: Command) -> CommandOutcome:
        return execute(command, self.state, self.on_command)

    async def _heartbeat_loop(self, link: _Link) -> None:
        assert self.heartbeat_interval_s is not None
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if link is not self._link:
                return
            try:
                await self.heartbeat()
            except (BoxError, TimeoutError) as exc:
                # No ACK in time: the link is dead (a half-open TCP link never says so itself).
                log.debug("box %s: heartbeat failed: %r", self.imei, exc)
                if link is self._link:
                    self._drop_link(abort=True)
                return


def execute(command: Command, state: BoxState, hook: CommandHook | None) -> CommandOutcome:
    """Carry out ``command`` on the box's ``state`` (any transport's box uses this)."""
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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
