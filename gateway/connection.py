"""One box connection: a thin loop around the sans-IO codec and session.

CHALLENGE → read (with a timeout) → decode every complete frame of the read → let the session
decide → act → write the replies of the whole read in one write.

The records of all frames of one read are validated, submitted to the shared ingest pipeline
together, and ACKed (in frame order, one write) only once the pipeline says they are durably
stored; if storage fails, every data frame of the read gets NACK SERVER_BUSY and nothing is
ACKed. An impossible record (protocol.check_record) is dropped alone and counted; the good
records of its frame are stored and the frame is ACKed. A frame whose records are *all*
impossible is ACKed too: the box would resend exactly the same values, so a NACK could only
make it loop; the rejection counters are where the problem shows.

Framing errors are NACKed when the header gave a sequence number (the decoder has already
skipped the bad bytes and resynchronised), and reading goes on; a connection that produces
MAX_ERRORS_IN_A_ROW errors without one good frame is closed. Anything but LOGIN before a
successful login gets NACK NOT_AUTHENTICATED and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.auth import LoginChecker
from gateway.convert import DeviceContext, Fittings, to_event, to_position
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestPipeline
from gateway.ports import DeviceDirectory
from gateway.registry import SessionRegistry
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
    SessionError,
    UnsupportedVersion,
    check_record,
    encode,
)
from storage.errors import StorageError
from storage.models import Event as StoredEvent
from storage.models import Position as StoredPosition
from storage.models import now_ms

log = logging.getLogger(__name__)

# Bytes asked of the socket per read: a few full frames (a 255-record batch is 11,488 bytes),
# so a busy box's backlog is drained and stored in one go.
READ_SIZE = 64 * 1024
# A link that sends this many bad frames (or garbage runs) without one good frame is not a box
# having a bad moment; it is noise or an attack, and it costs us CPU and NACK bandwidth.
MAX_ERRORS_IN_A_ROW = 50
# How long a read's records may wait for storage before the box is told SERVER_BUSY; the
# pipeline's own store timeout is shorter, this bounds the wait for room in its queue.
STORE_WAIT_S = 60.0
# A box keeps its TCP session for days; its fitting history is re-read this often so a box
# fitted to a vehicle meanwhile has its records attributed to that vehicle.
FITTINGS_MAX_AGE_S = 60.0
# Reads of the store done by a connection (fittings) give up after this long.
LOOKUP_TIMEOUT_S = 10.0
# The command-result hook runs inside the read loop; one that hangs must not stall the box.
HOOK_TIMEOUT_S = 10.0
# Closing politely waits this long for the kernel to take our last bytes, then aborts.
CLOSE_TIMEOUT_S = 2.0

_MAX_SEQ = 0xFFFF_FFFF
# FrameError.reason → the NACK that tells the box about it (errors not listed get no NACK:
# garbage has no sequence number, and a too-short length field is most likely not a header).
NACK_FOR_ERROR: dict[str, NackReason] = {
    "bad_crc": NackReason.BAD_CRC,
    "too_large": NackReason.TOO_LARGE,
    "malformed": NackReason.MALFORMED,
    "unknown_type": NackReason.UNKNOWN_TYPE,
    "unsupported_version": NackReason.UNSUPPORTED_VERSION,
}

# Closes after which nothing more can be written: abort instead of flushing.
_IMPOLITE = frozenset({"write_timeout", "connection_lost", "superseded"})
_FRAME_NAMES: dict[type[Message], str] = {
    Login: "login",
    Position: "position",
    Event: "event",
    Heartbeat: "heartbeat",
    CommandResult: "command_result",
    Ack: "ack",
    Nack: "nack",
}

BoxReply = CommandResult | Ack | Nack
CommandResultHandler = Callable[[str, BoxReply], Awaitable[None]]
# Called with the IMEI once a login is answered OK (the box may be sent COMMANDs from then on).
LoginHandler = Callable[[str], Awaitable[None]]


async def log_command_result(imei: str, message: BoxReply) -> None:
    """Default hook for the box's answers to commands (commands come in a later issue)."""
    log.info("imei=%s answered a command: %r", imei, message)


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    idle_timeout_s: float
    login_timeout_s: float
    write_timeout_s: float
    store_wait_s: float = STORE_WAIT_S


@dataclass(frozen=True, slots=True)
class Services:
    """What every connection of a gateway shares."""

    config: ConnectionConfig
    pipeline: IngestPipeline
    checker: LoginChecker
    registry: SessionRegistry
    devices: DeviceDirectory
    metrics: GatewayMetrics
    on_command_result: CommandResultHandler = log_command_result
    on_login: LoginHandler | None = None


@dataclass(slots=True)
class _DataFrame:
    """Placeholder in the reply list for a POSITION/EVENT frame awaiting storage."""

    seq: int


class _Close(Exception):
    """Internal: end the connection for ``reason`` once the pending replies are written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, services: Services
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._s = services
        self._metrics = services.metrics
        peer = writer.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._decoder = FrameDecoder()
        self._session = DeviceSession()
        self._nonce = secrets.token_bytes(NONCE_SIZE)
        self._ctx: DeviceContext | None = None
        self._fittings_loaded = 0.0
        self._seq = -1
        self._errors_in_a_row = 0
        self._registered = False
        self._reading = False
        self._stopping = False
        self._close_reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        # Loop time of the last bytes received: the registry tells a live session from a
        # silently dead one with it (duplicate-box detection).
        self.last_activity = float("-inf")
        self._login_to_announce = False
        self._ended = asyncio.Event()

    # --- SessionHandle (gateway.registry) ---------------------------------------------------

    @property
    def imei(self) -> str:
        return self._ctx.imei if self._ctx is not None else ""

    @property
    def device_id(self) -> str:
        return self._ctx.device_id if self._ctx is not None else ""

    async def send(self, message: Message) -> None:
        await self._write([message])

    def close(self, reason: str) -> None:
        """End the connection now (from another task): the socket is aborted."""
        if self._close_reason is None:
            self._close_reason = reason
        self._writer.transport.abort()

    async def ended_within(self, timeout_s: float) -> bool:
        """True if the session ends by itself (its link died) within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._ended.wait()
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Graceful shutdown: read no more; what was read is still stored and ACKed."""
        self._stopping = True
        if self._reading and self._task is not None:
            self._task.cancel()  # only ever interrupts a read: nothing is in flight then

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        login_deadline = loop.time() + self._s.config.login_timeout_s
        reason = "closed"
        try:
            await self._write([Challenge(self._next_seq(), self._nonce, now_ms())])
            while not self._stopping and self._close_reason is None:
                if self._session.is_authenticated:
                    deadline = loop.time() + self._s.config.idle_timeout_s
                    timeout_reason = "idle_timeout"
                else:
                    deadline = login_deadline
                    timeout_reason = "login_timeout"
                try:
                    data = await self._read(deadline)
                except TimeoutError:
                    reason = timeout_reason
                    break
                if not data:
                    reason = "eof"
                    if self._decoder.buffered:
                        # The link died mid-frame; the box resends what we did not ACK.
                        self._metrics.frame_errors["truncated"] += 1
                    break
                await self._handle(data)
            else:
                reason = "shutdown" if self._stopping else "closed"
        except _Close as close:
            reason = close.reason
        except asyncio.CancelledError:
            task = self._task
            if not (self._stopping and task is not None and task.uncancel() == 0):
                raise
            reason = "shutdown"
        except TimeoutError:
            reason = "write_timeout"
        except (OSError, EOFError) as exc:
            reason = "connection_lost"
            log.debug("peer=%s: %r", self.remote, exc)
        finally:
            reason = self._close_reason or reason
            self._session.close()
            self._ended.set()
            self._metrics.closes[reason] += 1
            self._close_transport(polite=reason not in _IMPOLITE)
            if self._registered:
                await self._s.registry.unregister(self)
        log.debug("peer=%s imei=%s closed: %s", self.remote, self.imei or "-", reason)

    async def _read(self, deadline: float) -> bytes:
        self._reading = True
        try:
            async with asyncio.timeout_at(deadline):
                return await self._reader.read(READ_SIZE)
        finally:
            self._reading = False

    async def _handle(self, data: bytes) -> None:
        """Decode, act on and answer everything complete in the buffer after ``data``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.last_activity = started
        received_ms = now_ms()
        self._decoder.feed(data)
        replies: list[Message | _DataFrame] = []
        positions: list[StoredPosition] = []
        events: list[StoredEvent] = []
        close: _Close | None = None
        try:
            for item in self._decoder:
                if isinstance(item, FrameError):
                    self._on_frame_error(item, replies)
                    continue
                try:
                    self._session.receive(item)
                except SessionError:
                    self._on_unexpected(item, replies)
                    continue
                self._errors_in_a_row = 0
                self._metrics.frames[_FRAME_NAMES.get(type(item), "other")] += 1
                if isinstance(item, Login):
                    await self._login(item, replies)
                elif isinstance(item, Position):
                    ctx = await self._context()
                    for record in item.records:
                        rejection = check_record(record, received_ms)
                        if rejection is None:
                            positions.append(to_position(record, ctx, received_ms))
                        else:
                            self._metrics.records_rejected[rejection.value] += 1
                    replies.append(_DataFrame(item.seq))
                elif isinstance(item, Event):
                    ctx = await self._context()
                    rejection = check_record(item.record, received_ms)
                    if rejection is None:
                        events.append(to_event(item, ctx, received_ms))
                    else:
                        self._metrics.records_rejected[rejection.value] += 1
                    replies.append(_DataFrame(item.seq))
                elif isinstance(item, Heartbeat):
                    replies.append(Ack(self._next_seq(), item.seq))
                elif isinstance(item, (CommandResult, Ack, Nack)):
                    await self._command_reply(item)
                    if isinstance(item, CommandResult):
                        replies.append(Ack(self._next_seq(), item.seq))
        except _Close as exc:
            close = exc  # answer what came before, then close
        stored = True
        if positions or events:
            stored = await self._store(positions, events)
        if replies:
            await self._write([self._finish(r, stored) for r in replies])
            if any(isinstance(r, _DataFrame) for r in replies):
                self._metrics.observe_ack_latency(loop.time() - started)
        if close is not None:
            raise close
        if self._login_to_announce:
            # Only now, with LOGIN_RESULT on the wire: a COMMAND must never precede it.
            self._login_to_announce = False
            await self._announce_login()

    def _finish(self, reply: Message | _DataFrame, stored: bool) -> Message:
        if not isinstance(reply, _DataFrame):
            return reply
        if stored:
            return Ack(self._next_seq(), reply.seq)
        self._metrics.nacks[NackReason.SERVER_BUSY.name.lower()] += 1
        return Nack(self._next_seq(), reply.seq, NackReason.SERVER_BUSY)

    async def _store(self, positions: list[StoredPosition], events: list[StoredEvent]) -> bool:
        try:
            async with asyncio.timeout(self._s.config.store_wait_s):
                await self._s.pipeline.submit(positions, events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # StorageError, PipelineClosed, timeout, or a store bug
            log.warning("imei=%s: %d records not stored: %r", self.imei, len(positions), exc)
            return False
        return True

    # --- what each kind of frame does -------------------------------------------------------

    def _on_frame_error(self, error: FrameError, replies: list[Message | _DataFrame]) -> None:
        self._metrics.frame_errors[error.reason] += 1
        self._errors_in_a_row += 1
        if isinstance(error, UnsupportedVersion) and not self._session.is_authenticated:
            # Most likely the LOGIN of a box speaking a newer protocol: tell it, once.
            self._metrics.logins[LoginStatus.UNSUPPORTED_VERSION.name.lower()] += 1
            replies.append(LoginResult(self._next_seq(), LoginStatus.UNSUPPORTED_VERSION, now_ms()))
            raise _Close("unsupported_version")
        nack_reason = NACK_FOR_ERROR.get(error.reason)
        if nack_reason is not None and error.seq is not None:
            self._nack(replies, error.seq, nack_reason)
        if self._errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            log.warning("peer=%s imei=%s: too many bad frames", self.remote, self.imei or "-")
            raise _Close("too_many_errors")

    def _on_unexpected(self, message: Message, replies: list[Message | _DataFrame]) -> None:
        if not self._session.is_authenticated:
            self._metrics.frame_errors["not_authenticated"] += 1
            log.warning("peer=%s sent %s before logging in", self.remote, type(message).__name__)
            self._nack(replies, message.seq, NackReason.NOT_AUTHENTICATED)
            raise _Close("not_authenticated")
        # A second LOGIN, or a server-to-box message type: the box has a bug.
        self._metrics.frame_errors["unexpected_message"] += 1
        self._errors_in_a_row += 1
        self._nack(replies, message.seq, NackReason.UNKNOWN_TYPE)
        if self._errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            raise _Close("too_many_errors")

    def _nack(self, replies: list[Message | _DataFrame], seq: int, reason: NackReason) -> None:
        self._metrics.nacks[reason.name.lower()] += 1
        replies.append(Nack(self._next_seq(), seq, reason))

    async def _login(self, login: Login, replies: list[Message | _DataFrame]) -> None:
        outcome = await self._s.checker.check(login, self._nonce, peer=self.remote)
        device = outcome.device
        status = outcome.status
        if device is not None:
            try:
                fittings = await self._load_fittings(device.id)
            except (StorageError, TimeoutError) as exc:
                log.warning("imei=%s: fittings unavailable: %r", login.imei, exc)
                status = LoginStatus.SERVER_BUSY
            else:
                self._ctx = DeviceContext(device.fleet_id, device.id, device.imei, fittings)
        replies.append(LoginResult(self._next_seq(), status, now_ms()))
        if status is not LoginStatus.OK:
            raise _Close("login_refused")
        self._session.authenticated()
        await self._s.registry.register(self)
        self._registered = True
        self._login_to_announce = self._s.on_login is not None

    async def _load_fittings(self, device_id: str) -> Fittings:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            history = await self._s.devices.fittings(device_id)
        self._fittings_loaded = asyncio.get_running_loop().time()
        return Fittings.of(history)

    async def _context(self) -> DeviceContext:
        ctx = self._ctx
        assert ctx is not None  # the session only lets data through after login
        if asyncio.get_running_loop().time() - self._fittings_loaded > FITTINGS_MAX_AGE_S:
            try:
                fittings = await self._load_fittings(ctx.device_id)
            except (StorageError, TimeoutError) as exc:
                # Keep the history we have; the next read tries again.
                log.info("imei=%s: fittings refresh failed: %r", ctx.imei, exc)
            else:
                ctx = self._ctx = DeviceContext(ctx.fleet_id, ctx.device_id, ctx.imei, fittings)
        return ctx

    async def _announce_login(self) -> None:
        assert self._s.on_login is not None
        try:
            async with asyncio.timeout(HOOK_TIMEOUT_S):
                await self._s.on_login(self.imei)
        except Exception:
            log.exception("imei=%s: login hook failed", self.imei)

    async def _command_reply(self, message: BoxReply) -> None:
        try:
            async with asyncio.timeout(HOOK_TIMEOUT_S):
                await self._s.on_command_result(self.imei, message)
        except Exception:
            log.exception("imei=%s: command result hook failed", self.imei)

    # --- writing ----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & _MAX_SEQ
        return self._seq

    async def _write(self, messages: list[Message]) -> None:
        self._writer.write(b"".join(map(encode, messages)))
        async with asyncio.timeout(self._s.config.write_timeout_s):
            await self._writer.drain()

    def _close_transport(self, *, polite: bool) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            return
        if not polite:
            # After a write timeout or an abuse, close() would wait for the peer to take the
            # buffered bytes, which a half-open or stalled peer never does.
            transport.abort()
            return
        transport.close()
        if transport.get_write_buffer_size():
            # close() flushes what is buffered first; a peer that never reads must not keep
            # the socket open forever.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort)
