"""A virtual GP8 box: an asyncio shell that drives a sans-IO `Outbox` (simulator.outbox) over
one link at a time (simulator.links: TCP; simulator.mqtt_link: MQTT).

The outbox decides what the box says and what becomes of each record; this shell moves bytes
between it and the link and keeps the time. It connects (and, over TCP, logs in), sends the
outbox's frames within its window, hands every answer to the outbox, and executes COMMANDs in
one order on every link: the ACK goes out on receipt, then the command runs, then its
COMMAND_RESULT goes out (docs/protocol.md §5.5). A link whose heartbeat or data frame goes
unanswered too long is dead, on either transport: the box drops it, everything it had in
flight goes back to the outbox, and the next `connect` (from `deliver`, or the simulator's
driver) starts a new one.

`VirtualBox` is the TCP box; simulator.mqtt_box.MqttBox is the MQTT one. Used by the simulator
and by end-to-end tests; every network await has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.gp8 import (
    Command,
    EventCode,
    LoginStatus,
    Model,
    Nack,
    NackReason,
    PositionRecord,
)
from simulator.errors import BoxDisconnected, BoxError, LoginRefused
from simulator.links import Link, TcpLink
from simulator.outbox import (
    ACK_TIMEOUT_S,
    BUSY_BACKOFF_S,
    COMMAND_MEMORY,
    DEFAULT_BATCH_SIZE,
    DEFAULT_WINDOW,
    FIRMWARE,
    RETRYABLE_NACKS,
    Answer,
    BoxState,
    CommandHook,
    CommandOutcome,
    Fate,
    Outbox,
    OutboxOptions,
    Reaction,
    Unit,
    execute,
)
from simulator.records import make_record

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ACK_TIMEOUT_S",
    "BUSY_BACKOFF_S",
    "COMMAND_MEMORY",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WINDOW",
    "FIRMWARE",
    "RETRYABLE_NACKS",
    "AckHook",
    "AnswerHook",
    "Box",
    "BoxDisconnected",
    "BoxError",
    "BoxOptions",
    "BoxState",
    "CommandHook",
    "CommandOutcome",
    "LoginRefused",
    "VirtualBox",
    "execute",
    "make_record",
]

log = logging.getLogger(__name__)

# Called on each ACK of a data frame: (records in it, whether it was an EVENT, seconds since it
# was written). Must not block.
AckHook = Callable[[int, bool, float], None]
# Called on each answer that settles a data frame's records for good (ACKED or REFUSED), with
# the entries and their fate. Must not block.
AnswerHook = Callable[[Answer], None]


class BoxOptions(OutboxOptions, total=False):
    """What every box takes, whatever its link."""

    host: str
    port: int
    connect_timeout_s: float
    io_timeout_s: float
    heartbeat_interval_s: float | None
    on_ack: AckHook | None
    on_answer: AnswerHook | None


@dataclass(eq=False)
class _Session:
    """One link and the tasks that serve it; a box has at most one current session."""

    link: Link
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Box:
    """A box over some link; subclasses say which (`_open_link`) and its default port."""

    DEFAULT_PORT = 0
    OUTBOX: type[Outbox] = Outbox  # the protocol it speaks (simulator.teltonika has another)

    def __init__(
        self,
        imei: str,
        secret: str,
        model: Model = Model.GP8000,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = 30.0,
        heartbeat_interval_s: float | None = None,
        on_ack: AckHook | None = None,
        on_answer: AnswerHook | None = None,
        **outbox: Unpack[OutboxOptions],
    ) -> None:
        self.outbox = self.OUTBOX(imei, secret, model, **outbox)
        self.host = host
        self.port = self.DEFAULT_PORT if port is None else port  # read at each connect
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.on_ack = on_ack
        self.on_answer = on_answer
        self.logins = 0  # links opened (and, over TCP, logged in)
        self.server_time_offset_ms = 0  # server clock minus ours, from the last CHALLENGE
        self._session: _Session | None = None
        self._dropped_sessions: list[_Session] = []  # lost links, released at the next call
        self._heartbeat_waiters: dict[int, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()

    # --- what the outbox knows ---------------------------------------------------------------

    @property
    def imei(self) -> str:
        return self.outbox.imei

    @property
    def model(self) -> Model:
        return self.outbox.model

    @property
    def secret(self) -> str:
        return self.outbox.secret

    @secret.setter
    def secret(self, value: str) -> None:
        self.outbox.secret = value

    @property
    def state(self) -> BoxState:
        return self.outbox.state

    @property
    def on_command(self) -> CommandHook | None:
        return self.outbox.on_command

    @on_command.setter
    def on_command(self, hook: CommandHook | None) -> None:
        self.outbox.on_command = hook

    @property
    def commands(self) -> list[Command]:
        return self.outbox.commands

    @property
    def nacks(self) -> Counter[NackReason]:
        return self.outbox.nacks

    @property
    def frame_errors(self) -> int:
        return self.outbox.frame_errors

    @property
    def pending(self) -> int:
        """Records not yet ACKed or refused (unsent or in flight)."""
        return self.outbox.pending

    @property
    def acked(self) -> int:
        """Records (positions and events) the server ACKed."""
        return self.outbox.acked

    @property
    def dropped(self) -> int:
        """Records the server refused for good."""
        return self.outbox.refused

    @property
    def resent(self) -> int:
        """Records put back in the outbox to be sent again (retryable NACK, lost link, ACK
        timeout)."""
        return self.outbox.resent

    requeued = resent  # its first name, kept for the tests and benchmarks that use it

    @property
    def unrouted(self) -> int:
        """Records the link could not get to any server (MQTT: no gateway subscribed)."""
        return self.outbox.unrouted

    @property
    def connected(self) -> bool:
        return self._session is not None and self.outbox.online

    def record(
        self, time_ms: int, lat: float, lon: float, *, flags: int = 0, **kwargs: Any
    ) -> PositionRecord:
        """`make_record` with the box's current relay state in the flags."""
        return make_record(time_ms, lat, lon, flags=flags | self.state.flags, **kwargs)

    def enqueue(self, records: Iterable[PositionRecord]) -> None:
        """Put position records in the outbox (sent by the next `send_frames`/`flush`)."""
        self.outbox.enqueue(records)

    def enqueue_event(self, code: EventCode, record: PositionRecord, detail: int = 0) -> None:
        self.outbox.enqueue_event(code, record, detail)

    # --- the link ----------------------------------------------------------------------------

    async def _open_link(self) -> Link:
        raise NotImplementedError

    async def connect(self) -> None:
        """Open a link and log in. Raises LoginRefused, BoxDisconnected, TimeoutError,
        OSError."""
        await self.close()
        async with asyncio.timeout(self.connect_timeout_s):
            link = await self._open_link()
        session = _Session(link)
        self._session = session
        self.outbox.link_up(link.framing)
        try:
            greeting = self.outbox.greeting()
            if greeting:
                await self._send(session, greeting)
            # Over TCP: CHALLENGE → LOGIN → LOGIN_RESULT (§5.1); over MQTT the broker has
            # already checked the box's credentials, and the box is online at once.
            async with asyncio.timeout(self.io_timeout_s):
                while not self.outbox.online:
                    reaction = self.outbox.receive_data(await link.receive(), self._now())
                    await self._react(session, reaction)
                    _check_login(reaction)
        except BaseException:
            self._lose_link()
            raise
        challenge = self.outbox.challenge
        if challenge is not None:
            self.server_time_offset_ms = challenge.server_time_ms - _now_ms()
        self.logins += 1
        session.tasks.append(asyncio.create_task(self._read_loop(session), name=f"box-{self.imei}"))
        if self.heartbeat_interval_s:
            session.tasks.append(asyncio.create_task(self._heartbeat_loop(session)))
        self._changed.set()

    async def close(self) -> None:
        """Close the link politely; unacknowledged records stay in the outbox."""
        session = self._session
        if session is not None:
            self._forget(session)
            await session.link.close()
        await self._release()

    def cut(self) -> None:
        """Lose the link abruptly, as a box losing coverage does: over TCP mid-frame (the first
        half of the next frame, or of a heartbeat, gets out)."""
        session = self._session
        if session is not None:
            session.link.abort(self.outbox.peek_frame())
            self._lose_link()

    async def _abandon_link(self) -> None:
        """Forget a link that failed, so the next round connects anew."""
        self._lose_link()
        await self._release()

    def _lose_link(self) -> None:
        """The current link is dead: abort it; everything it had in flight goes back to the
        outbox."""
        session = self._session
        if session is not None:
            session.link.abort()
            self._forget(session)

    def _forget(self, session: _Session) -> None:
        self._session = None
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._dropped_sessions.append(session)
        self.outbox.link_lost()
        for waiter in self._heartbeat_waiters.values():
            if not waiter.done():
                waiter.set_exception(BoxDisconnected("connection lost"))
        self._heartbeat_waiters.clear()
        self._changed.set()

    async def _release(self) -> None:
        """Close what is left of dropped links and wait for their tasks."""
        sessions, self._dropped_sessions = self._dropped_sessions, []
        for session in sessions:
            await session.link.close()
            await asyncio.gather(*session.tasks, return_exceptions=True)

    def _require_session(self) -> _Session:
        session = self._session
        if session is None or not self.outbox.online:
            raise BoxDisconnected("not connected")
        return session

    # --- sending -----------------------------------------------------------------------------

    async def send_frames(self, max_frames: int | None = None) -> int:
        """Send up to ``max_frames`` frames from the outbox without waiting for their ACKs
        (the window is not applied); returns how many were sent."""
        session = self._require_session()
        units = self.outbox.take(self._now(), max_frames)
        if units:
            await self._send(session, units)
        return len(units)

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send the whole outbox and wait until every record is ACKed or refused.

        Raises BoxDisconnected if the link drops or a frame goes unanswered for ack_timeout_s
        (the rest stays in the outbox), and TimeoutError after ``timeout`` seconds (default:
        io_timeout_s).
        """
        outbox = self.outbox
        async with asyncio.timeout(self.io_timeout_s if timeout is None else timeout):
            while outbox.pending:
                self._require_session()
                self._changed.clear()
                now = self._now()
                if outbox.expire(now):
                    self._lose_link()
                    raise BoxDisconnected("a frame went unanswered: the link is dead")
                if outbox.may_send(now):
                    await self.send_frames(outbox.room)
                    continue
                deadline = outbox.next_deadline(now)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._changed.wait()

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
                    log.debug("box %s: %r; reconnecting", self.imei, exc)
                    await self._abandon_link()
                    await asyncio.sleep(reconnect_delay_s)

    async def heartbeat(self) -> None:
        """Send a HEARTBEAT and wait for its answer. Raises BoxError and TimeoutError."""
        session = self._require_session()
        unit = self.outbox.heartbeat(self._now())
        assert unit.seq is not None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._heartbeat_waiters[unit.seq] = waiter
        try:
            if not await self._send(session, [unit]):
                raise BoxError("the heartbeat reached no server")
            async with asyncio.timeout(self.io_timeout_s):
                await waiter
        finally:
            self._heartbeat_waiters.pop(unit.seq, None)

    def send_raw(self, data: bytes) -> None:
        """Send ``data`` as is (the simulator's corrupted frames; over MQTT after an IDENT);
        raises BoxDisconnected when there is no link."""
        self._post(self._require_session(), [self.outbox.wrap(data)])

    async def _send(self, session: _Session, units: list[Unit]) -> bool:
        """Send and wait until the link has taken them; False when some reached no server
        (their records go out again after the back-off)."""
        try:
            routed = await session.link.send([u.data for u in units])
        except BoxDisconnected:
            if session is self._session:
                self._lose_link()
            raise
        lost = [u.seq for u, ok in zip(units, routed, strict=True) if not ok and u.seq is not None]
        if lost:
            self.outbox.undelivered(lost, self._now())
            self._changed.set()
        return not lost

    def _post(self, session: _Session, units: list[Unit]) -> None:
        """Send without waiting (the reader must not wait on the link it reads)."""
        if not units or session is not self._session:
            return  # the link went while a command ran: the server sends the command again
        try:
            session.link.post([u.data for u in units])
        except BoxDisconnected:
            self._lose_link()

    # --- receiving ---------------------------------------------------------------------------

    async def _read_loop(self, session: _Session) -> None:
        try:
            while session is self._session:
                data = await session.link.receive()
                if session is self._session:
                    await self._react(session, self.outbox.receive_data(data, self._now()))
        except BoxDisconnected as exc:
            log.debug("box %s: %s", self.imei, exc)
        finally:
            if session is self._session:
                self._lose_link()

    async def _react(self, session: _Session, reaction: Reaction) -> None:
        for answer in reaction.answers:
            self._on_answer(answer)
        if self.outbox.commands_due:
            # §5.5: a COMMAND's ACK is out, taken by the link (TCP: in the socket; MQTT:
            # PUBACKed by the broker), before the command runs. If the link fails meanwhile the
            # command still runs: the server sends it again and gets the remembered result.
            with contextlib.suppress(BoxDisconnected):
                await self._send(session, reaction.send)
            self._post(session, self.outbox.execute_due())
        else:
            self._post(session, reaction.send)
        self._changed.set()

    def _on_answer(self, answer: Answer) -> None:
        waiter = self._heartbeat_waiters.get(answer.seq)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        if not answer.entries or answer.fate is Fate.WAITING:
            return
        if self.on_answer is not None:
            self.on_answer(answer)
        if answer.fate is Fate.ACKED and self.on_ack is not None:
            self.on_ack(len(answer.entries), answer.is_event, answer.latency_s)

    async def _heartbeat_loop(self, session: _Session) -> None:
        assert self.heartbeat_interval_s is not None
        while session is self._session:
            await asyncio.sleep(self.heartbeat_interval_s)
            if session is not self._session:
                return
            try:
                await self.heartbeat()
            except (BoxError, TimeoutError) as exc:
                # No answer in time: the link is dead, whatever carries it (a half-open TCP
                # link never says so itself; an MQTT broker may be up while gp8 hears nothing).
                log.debug("box %s: heartbeat failed: %r", self.imei, exc)
                if session is self._session:
                    self._lose_link()
                return

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


class VirtualBox(Box):
    """A box on a TCP connection to the gateway (docs/protocol.md §5)."""

    DEFAULT_PORT = 5027

    async def _open_link(self) -> Link:
        return await TcpLink.open(self.host, self.port, io_timeout_s=self.io_timeout_s)


def _check_login(reaction: Reaction) -> None:
    login = reaction.login
    if isinstance(login, Nack):
        raise BoxDisconnected(f"server NACKed the login: {login.reason.name}")
    if login is not None and login.status is not LoginStatus.OK:
        raise LoginRefused(login.status)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
