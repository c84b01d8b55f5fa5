"""The device-session core: one box's frames in, stored records and replies out, for every
protocol and every transport (docs/architecture.md).

A transport (gateway/connection.py for TCP, gateway/mqtt/uplink.py for MQTT) only moves bytes:
it hands each chunk it received to `DeviceSession.handle` and writes back the bytes it returns.
A protocol adapter (gateway/adapters/) knows the frames: it decodes, classifies each frame by a
table (`Rule`: login, data, keep-alive or command answer), converts records to storage models and
encodes replies. Between them this core decides, the same way everywhere:

- frames before a successful login are refused and end the session; framing errors are counted,
  refused when the frame said its sequence number, and a link producing MAX_ERRORS_IN_A_ROW of
  them without one good frame is closed;
- the good records of everything complete in the chunk are checked, converted and submitted to
  the shared ingest pipeline together; data frames are answered (in frame order, one write) only
  once the pipeline says their records are durable — or all refused SERVER_BUSY when storage
  failed. An impossible record is dropped alone and counted; its frame is still acknowledged
  (the box would resend the same values forever);
- keep-alives and command answers are answered at once; command answers go to the command
  service's hook, bounded by HOOK_TIMEOUT_S so that a hanging hook never stalls a box.

What differs per transport is injected, not copied: how long to keep trying the store
(`StorePolicy`: TCP answers SERVER_BUSY after one failed attempt, MQTT retries while the broker
holds the message), and how a box proves who it is (TCP: the adapter's LOGIN; MQTT: the broker,
so its session starts authenticated).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Generic, Protocol, TypeVar

from gateway.context import DeviceContext
from gateway.metrics import SessionMetrics
from storage.models import Event, Position

log = logging.getLogger(__name__)

# A link that sends this many bad frames (or garbage runs) without one good frame is not a box
# having a bad moment; it is noise or an attack, and it costs us CPU and refusal bandwidth.
MAX_ERRORS_IN_A_ROW = 50
# Hooks (command answers, login) run inside a box's read loop; one that hangs must not stall it.
HOOK_TIMEOUT_S = 10.0
# How long a chunk's records may wait for storage (TCP: then SERVER_BUSY; MQTT: per attempt);
# the pipeline's own store timeout is shorter, this bounds the wait for room in its queue.
STORE_WAIT_S = 60.0

F = TypeVar("F")  # a protocol's frame type
R = TypeVar("R")  # a protocol's reply type


class Refusal(StrEnum):
    """Why a frame is refused, in words every protocol adapter maps to its own reply."""

    BAD_CRC = "bad_crc"
    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    NOT_AUTHENTICATED = "not_authenticated"
    SERVER_BUSY = "server_busy"
    IMEI_MISMATCH = "imei_mismatch"


class Role(Enum):
    LOGIN = "login"
    DATA = "data"  # records to store; answered once durable
    KEEPALIVE = "keepalive"  # answered at once
    ANSWER = "answer"  # the box answering a command


@dataclass(frozen=True, slots=True)
class Rule:
    """How the core treats one kind of frame: a row of an adapter's table."""

    name: str  # metric label
    role: Role
    ack: bool = True  # whether the box expects an answer to it


@dataclass(frozen=True, slots=True)
class Problem:
    """A framing error as the adapter reads it."""

    reason: str  # metric label
    seq: int | None  # the frame's sequence number, when the header gave one
    refusal: Refusal | None  # what to tell the box (None: nothing, e.g. garbage)
    # Before login: refuse the login with this status (a metric label) and close. A GP8 box
    # speaking a newer protocol version is told so once instead of being NACKed in a loop.
    ends_login: str | None = None


@dataclass(frozen=True, slots=True)
class LoginDecision(Generic[R]):
    reply: R
    context: DeviceContext | None  # None: refused, the session ends
    status: str  # metric label


class Closed(Exception):
    """The session must end for ``reason`` once its pending replies are written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolSession(Protocol[F, R]):
    """One link's protocol state, made by an adapter: decoder, login state machine, reply
    numbering. Everything protocol-specific the core needs, and nothing of the transport."""

    @property
    def authenticated(self) -> bool: ...
    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held by the decoder."""
        ...

    def greeting(self) -> list[R]:
        """What the server says first on a new stream link (GP8: CHALLENGE)."""
        ...

    def feed(self, data: bytes) -> Iterable[F | Problem]:
        """Decode every complete frame in the buffer after ``data``."""
        ...

    def rule(self, frame: F) -> Rule | None:
        """The frame's row of the table; None for a type a box never sends."""
        ...

    def allowed(self, frame: F) -> bool:
        """Whether the frame may arrive in the session's current state."""
        ...

    def seq(self, frame: F) -> int: ...
    async def login(self, frame: F, peer: str) -> LoginDecision[R]: ...
    def refuse_login(self, status: str) -> R: ...
    def mark_authenticated(self) -> None: ...
    def records(
        self, frame: F, context: DeviceContext, received_ms: int, metrics: SessionMetrics
    ) -> tuple[Sequence[Position], Sequence[Event]]:
        """The frame's good records, converted; impossible ones counted and dropped."""
        ...

    def ack(self, seq: int) -> R: ...
    def refuse(self, seq: int, refusal: Refusal) -> R: ...
    def encode(self, replies: Sequence[R]) -> bytes: ...
    def close(self) -> None:
        """The link is gone: nothing more is accepted."""
        ...


StorePolicy = Callable[[Sequence[Position], Sequence[Event]], Awaitable[bool]]
"""Submit records to the pipeline; True once durable, False when the box must be told BUSY."""
AnswerHook = Callable[[str, Any], Awaitable[None]]
"""(imei, the box's answer frame): the command service's reply handler."""
LoginHook = Callable[[str], Awaitable[None]]
"""Called with the IMEI once the box may be sent commands (after its login is answered)."""


async def log_answer(imei: str, message: Any) -> None:
    """Default answer hook, when no command service is wired."""
    log.info("imei=%s answered a command: %r", imei, message)


@dataclass(slots=True)
class Step(Generic[R]):
    """What handling one chunk came to: the replies to send back, and whether to end."""

    replies: list[R] = field(default_factory=list)
    wire: bytes = b""  # the replies, encoded
    close: str | None = None
    records: int = 0  # records submitted for storage
    data_frames: int = 0  # frames answered once their records were stored
    logged_in: bool = False  # a login succeeded in this chunk (announce it once replies are out)


@dataclass(slots=True)
class _Awaiting:
    """Placeholder in the reply list for a data frame whose records are being stored."""

    seq: int


@dataclass(slots=True)
class DeviceSession(Generic[F, R]):
    """The core of one box session over any link (see the module docstring)."""

    protocol: ProtocolSession[F, R]
    store: StorePolicy
    metrics: SessionMetrics
    on_answer: AnswerHook
    peer: str = "?"
    context: DeviceContext | None = None
    hook_timeout_s: float = HOOK_TIMEOUT_S
    _errors_in_a_row: int = 0

    @property
    def imei(self) -> str:
        return self.context.imei if self.context is not None else ""

    def start_authenticated(self, context: DeviceContext) -> None:
        """For links whose box was authenticated by someone else (the MQTT broker)."""
        self.context = context
        self.protocol.mark_authenticated()

    async def handle(self, data: bytes, received_ms: int) -> Step[R]:
        """Decode, act on and answer everything complete in the buffer after ``data``."""
        return await self.handle_frames(self.protocol.feed(data), received_ms)

    async def handle_frames(self, items: Iterable[F | Problem], received_ms: int) -> Step[R]:
        """Act on and answer frames already decoded (a link that decodes a message whole)."""
        started = time.perf_counter()
        step: Step[R] = Step()
        pending: list[R | _Awaiting] = []
        positions: list[Position] = []
        events: list[Event] = []
        item: F | Problem | None = None
        try:
            for item in items:
                if isinstance(item, Problem):
                    self._problem(item, pending)
                    continue
                await self._frame(item, pending, positions, events, received_ms, step)
            # The last frame is garbage now (its records converted): not kept while they are
            # stored. Fewer live objects, fewer garbage collections on the ingest path.
            item = None
        except Closed as closed:
            step.close = closed.reason  # answer what came before, then close
        stored = True
        if positions or events:
            step.records = len(positions) + len(events)
            stored = await self.store(positions, events)
        if pending:
            step.replies = [self._finish(r, stored, step) for r in pending]
            step.wire = self.protocol.encode(step.replies)
            if step.data_frames:
                self.metrics.observe_ack_latency(time.perf_counter() - started)
        return step

    # --- one frame --------------------------------------------------------------------------

    async def _frame(
        self,
        frame: F,
        pending: list[R | _Awaiting],
        positions: list[Position],
        events: list[Event],
        received_ms: int,
        step: Step[R],
    ) -> None:
        protocol = self.protocol
        rule = protocol.rule(frame)
        if rule is None or not protocol.allowed(frame):
            self._unexpected(frame, pending)
            return
        self._errors_in_a_row = 0
        self.metrics.frames[rule.name] += 1
        if rule.role is Role.DATA:
            assert self.context is not None  # allowed() lets data through only after login
            p, e = protocol.records(frame, self.context, received_ms, self.metrics)
            positions.extend(p)
            events.extend(e)
            pending.append(_Awaiting(protocol.seq(frame)))
            return
        await _BY_ROLE[rule.role](self, frame, rule, pending, step)

    async def _login(
        self, frame: F, rule: Rule, pending: list[R | _Awaiting], step: Step[R]
    ) -> None:
        decision = await self.protocol.login(frame, self.peer)  # the adapter counts logins
        pending.append(decision.reply)
        if decision.context is None:
            raise Closed("login_refused")
        self.context = decision.context
        self.protocol.mark_authenticated()
        step.logged_in = True

    async def _keepalive(
        self, frame: F, rule: Rule, pending: list[R | _Awaiting], step: Step[R]
    ) -> None:
        pending.append(self.protocol.ack(self.protocol.seq(frame)))

    async def _answer(
        self, frame: F, rule: Rule, pending: list[R | _Awaiting], step: Step[R]
    ) -> None:
        try:
            async with asyncio.timeout(self.hook_timeout_s):
                await self.on_answer(self.imei, frame)
        except Exception:
            self.metrics.hook_failures["command_reply"] += 1
            log.exception("imei=%s: command answer hook failed", self.imei)
        if rule.ack:
            pending.append(self.protocol.ack(self.protocol.seq(frame)))

    # --- errors -----------------------------------------------------------------------------

    def _problem(self, problem: Problem, pending: list[R | _Awaiting]) -> None:
        self.metrics.frame_errors[problem.reason] += 1
        self._errors_in_a_row += 1
        if problem.ends_login is not None and not self.protocol.authenticated:
            self.metrics.logins[problem.ends_login] += 1
            pending.append(self.protocol.refuse_login(problem.ends_login))
            raise Closed(problem.reason)
        if problem.refusal is not None and problem.seq is not None:
            self._refuse(pending, problem.seq, problem.refusal)
        if self._errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            log.warning("peer=%s imei=%s: too many bad frames", self.peer, self.imei or "-")
            raise Closed("too_many_errors")

    def _unexpected(self, frame: F, pending: list[R | _Awaiting]) -> None:
        seq = self.protocol.seq(frame)
        if not self.protocol.authenticated:
            self.metrics.frame_errors["not_authenticated"] += 1
            log.warning("peer=%s sent %s before logging in", self.peer, type(frame).__name__)
            self._refuse(pending, seq, Refusal.NOT_AUTHENTICATED)
            raise Closed("not_authenticated")
        # A second login, or a server-to-box message type: the box has a bug.
        self.metrics.frame_errors["unexpected_message"] += 1
        self._errors_in_a_row += 1
        self._refuse(pending, seq, Refusal.UNKNOWN_TYPE)
        if self._errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            raise Closed("too_many_errors")

    def _refuse(self, pending: list[R | _Awaiting], seq: int, refusal: Refusal) -> None:
        self.metrics.nacks[refusal.value] += 1
        pending.append(self.protocol.refuse(seq, refusal))

    def _finish(self, reply: R | _Awaiting, stored: bool, step: Step[R]) -> R:
        if not isinstance(reply, _Awaiting):
            return reply
        step.data_frames += 1
        if stored:
            return self.protocol.ack(reply.seq)
        self.metrics.nacks[Refusal.SERVER_BUSY.value] += 1
        return self.protocol.refuse(reply.seq, Refusal.SERVER_BUSY)


# What each role does, by the rule's role (data frames, the hot path, are handled inline in
# DeviceSession._frame). One table at module level: a session, made per MQTT message, builds
# nothing for it.
_BY_ROLE: dict[Role, Callable[..., Awaitable[None]]] = {
    Role.LOGIN: DeviceSession._login,
    Role.KEEPALIVE: DeviceSession._keepalive,
    Role.ANSWER: DeviceSession._answer,
}
