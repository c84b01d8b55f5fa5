"""One box's TCP connection: a thin link between a socket and the device-session core.

CHALLENGE → read (with a timeout) → hand the bytes to the core (gateway/core.py), which decodes,
decides, stores and builds the replies → write the replies of the whole read in one write. The
link knows nothing of frame types; it owns the socket, the timeouts (login, idle, write), the
registry entry that lets commands find the box, and the store policy of a stream link: a read's
records that cannot be stored within ``store_wait_s`` are answered SERVER_BUSY, and the box
resends them.

Load shedding: the pipeline bounds what it holds (``queue_limit``) and makes submitters wait for
room, but the submitters waiting are not bounded; under overload (storage slower than the
fleet for minutes) they would pile up for ``store_wait_s`` each. So the connections of a
listener count the records they have submitted and not yet had answered (`Backlog`), and above
its high-water mark a read's records are answered SERVER_BUSY at once, without queueing: the
box waits its back-off and resends them (nothing is lost, nothing was ACKed), and the gateway
keeps answering quickly instead of slowly.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from gateway.context import FITTINGS_MAX_AGE_S, LOOKUP_TIMEOUT_S, DeviceContext, load_fittings
from gateway.core import (
    STORE_WAIT_S,
    AnswerHook,
    Closed,
    DeviceSession,
    LoginHook,
    ProtocolSession,
    log_answer,
)
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestPipeline
from gateway.ports import DeviceDirectory
from gateway.registry import SessionRegistry
from storage.errors import StorageError
from storage.models import Event as StoredEvent
from storage.models import Position as StoredPosition
from storage.models import now_ms

log = logging.getLogger(__name__)

# Bytes asked of the socket per read: a few full frames (a 255-record batch is 11,488 bytes),
# so a busy box's backlog is drained and stored in one go.
READ_SIZE = 64 * 1024
# The login hook runs once LOGIN_RESULT is out; one that hangs must not stall the box.
HOOK_TIMEOUT_S = 10.0
# Closing politely waits this long for the kernel to take our last bytes, then aborts.
CLOSE_TIMEOUT_S = 2.0
# A 255-record batch (11,488 bytes) over a 2G link at ~10 kbit/s takes ~9 s: twice that.
FRAME_TIMEOUT_S = 20.0

# Closes after which nothing more can be written: abort instead of flushing.
_IMPOLITE = frozenset({"write_timeout", "connection_lost", "superseded"})


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    idle_timeout_s: float
    login_timeout_s: float
    write_timeout_s: float
    store_wait_s: float = STORE_WAIT_S
    # Longest a read may leave bytes of an incomplete frame waiting with no frame consumed:
    # a trickle that never completes one is closed ("frame_timeout"), not kept until idle.
    frame_timeout_s: float = FRAME_TIMEOUT_S


@dataclass(slots=True)
class Backlog:
    """Records the connections of a gateway submitted and whose fate is not known yet
    (queued, being written, or waiting for room in the pipeline), with the high-water mark
    above which new ones are shed (answered SERVER_BUSY at once)."""

    high_water: int
    records: int = 0

    def admits(self, size: int) -> bool:
        # A read larger than the whole mark still goes through when nothing else waits.
        return self.records == 0 or self.records + size <= self.high_water


# Opens one link's protocol session: the listener's protocol (GP8 today; one per port).
SessionFactory = Callable[[], ProtocolSession[Any, Any]]


@dataclass(frozen=True, slots=True)
class Services:
    """What every connection of a listener shares."""

    config: ConnectionConfig
    pipeline: IngestPipeline
    open_session: SessionFactory
    registry: SessionRegistry
    devices: DeviceDirectory
    metrics: GatewayMetrics
    on_command_result: AnswerHook = log_answer
    on_login: LoginHook | None = None
    # Shared by the connections of every listener; None: never shed (wait for room).
    backlog: Backlog | None = None


# The box session the running task serves (one task per TCP connection); None elsewhere.
session_id_var: ContextVar[str | None] = ContextVar("gp8_box_session", default=None)


def current_session_id() -> str | None:
    return session_id_var.get()


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
        self.session_id = secrets.token_hex(6)
        self._protocol = services.open_session()
        self._core: DeviceSession[Any, Any] = DeviceSession(
            self._protocol,
            self._store,
            services.metrics,
            services.on_command_result,
            peer=self.remote,
        )
        self._fittings_loaded = 0.0
        self._refreshing: asyncio.Task[None] | None = None  # a fittings refresh under way
        self._registered = False
        self._reading = False
        self._stopping = False
        self._close_reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        # Loop time of the last bytes received: the registry tells a live session from a
        # silently dead one with it (duplicate-box detection).
        self.last_activity = float("-inf")
        self._ended = asyncio.Event()

    # --- SessionHandle (gateway.registry) ---------------------------------------------------

    @property
    def imei(self) -> str:
        return self._core.imei

    @property
    def device_id(self) -> str:
        ctx = self._core.context
        return ctx.device_id if ctx is not None else ""

    async def send(self, message: Any) -> None:
        """Write one frame of the link's protocol (a COMMAND) to the box."""
        await self._write(self._protocol.encode([message]))

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
        # Every log line of this connection's task carries its id (gp8/logs.py), so one box
        # session's lines can be followed across modules and told from its reconnections.
        session_id_var.set(self.session_id)
        loop = asyncio.get_running_loop()
        config = self._s.config
        login_deadline = loop.time() + config.login_timeout_s
        # Loop time since which bytes of an incomplete frame wait with no frame consumed.
        waiting_since: float | None = None
        reason = "closed"
        try:
            await self._write(self._protocol.encode(self._protocol.greeting()))
            while not self._stopping and self._close_reason is None:
                if self._protocol.authenticated:
                    deadline = loop.time() + config.idle_timeout_s
                    timeout_reason = "idle_timeout"
                else:
                    deadline = login_deadline
                    timeout_reason = "login_timeout"
                if waiting_since is not None and waiting_since + config.frame_timeout_s < deadline:
                    deadline = waiting_since + config.frame_timeout_s
                    timeout_reason = "frame_timeout"
                try:
                    data = await self._read(deadline)
                except TimeoutError:
                    reason = timeout_reason
                    break
                if not data:
                    reason = "eof"
                    if self._protocol.buffered:
                        # The link died mid-frame; the box resends what we did not ACK.
                        self._metrics.frame_errors["truncated"] += 1
                    break
                held = self._protocol.buffered + len(data)
                await self._handle(data)
                if self._protocol.buffered < held:  # bytes were consumed: a frame went through
                    waiting_since = None
                if self._protocol.buffered and waiting_since is None:
                    waiting_since = loop.time()
            else:
                reason = "shutdown" if self._stopping else "closed"
        except Closed as close:
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
            self._protocol.close()
            if self._refreshing is not None:
                self._refreshing.cancel()
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
        self.last_activity = asyncio.get_running_loop().time()
        if self._core.context is not None:
            self._maybe_refresh_fittings(self._core.context)
        step = await self._core.handle(data, now_ms())
        if step.logged_in:  # at most once: the session allows one login
            self._fittings_loaded = asyncio.get_running_loop().time()
            # Before LOGIN_RESULT goes out: a duplicate-box freeze precedes any command.
            await self._s.registry.register(self)
            self._registered = True
        if step.wire:
            await self._write(step.wire)
        if step.close is not None:
            raise Closed(step.close)
        if step.logged_in and self._s.on_login is not None:
            # Only now, with LOGIN_RESULT on the wire: a COMMAND must never precede it.
            await self._announce_login()

    async def _store(
        self, positions: Sequence[StoredPosition], events: Sequence[StoredEvent]
    ) -> bool:
        """The stream link's store policy: one attempt, bounded; False → SERVER_BUSY (at once
        when the backlog is above its high-water mark)."""
        size = len(positions) + len(events)
        backlog = self._s.backlog
        if backlog is not None:
            if not backlog.admits(size):
                self._metrics.shed += size
                return False
            backlog.records += size
        try:
            await self._s.pipeline.submit(positions, events, wait_s=self._s.config.store_wait_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # StorageError, PipelineClosed, timeout, or a store bug
            log.warning("imei=%s: %d records not stored: %r", self.imei, len(positions), exc)
            return False
        finally:
            if backlog is not None:
                backlog.records -= size
        return True

    def _maybe_refresh_fittings(self, ctx: DeviceContext) -> None:
        loop = asyncio.get_running_loop()
        if (
            self._refreshing is not None
            or loop.time() - self._fittings_loaded <= FITTINGS_MAX_AGE_S
        ):
            return
        # In the background: the read, queued behind others (a storm's logins), must not hold
        # up this read's ACK; its records use the history we have, one refresh period old.
        self._refreshing = asyncio.create_task(self._refresh_fittings(ctx))

    async def _refresh_fittings(self, ctx: DeviceContext) -> None:
        try:
            fittings = await load_fittings(self._s.devices, ctx.device_id, LOOKUP_TIMEOUT_S)
        except (StorageError, TimeoutError) as exc:
            # Keep the history we have; the next read tries again.
            log.info("imei=%s: fittings refresh failed: %r", ctx.imei, exc)
            return
        finally:
            self._refreshing = None
        self._fittings_loaded = asyncio.get_running_loop().time()
        self._core.context = DeviceContext(ctx.fleet_id, ctx.device_id, ctx.imei, fittings)

    async def _announce_login(self) -> None:
        assert self._s.on_login is not None
        try:
            async with asyncio.timeout(HOOK_TIMEOUT_S):
                await self._s.on_login(self.imei)
        except Exception:
            self._metrics.hook_failures["login"] += 1
            log.exception("imei=%s: login hook failed", self.imei)

    # --- writing ----------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
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
