"""Live box sessions of this gateway, by IMEI, and the connection state kept in storage.

One session per IMEI: when a box logs in while an older session of it is still open, the newer
one wins and the older is closed. That is what happens after a carrier NAT silently dropped the
mapping: the box reconnects, and the old socket would otherwise sit half-open until the idle
timeout. Commands find the box here with `send`.

Across processes (docs/scaling.md) the connection row is the shared truth: every state write
carries the session's version (`storage.models.connection_version`), so the newest observation
wins whichever process writes last. The writes go through one coalescing writer
(gateway/states.py): a reconnect storm's 10,000 logins are a few batched writes, not 10,000
transactions in front of the telemetry flushes. The rows of live sessions get ``seen_ms``
refreshed in one batched write every `TOUCH_INTERVAL_S`, which also tells which of them another
gateway took over (those sessions are closed, as superseded ones are here); and a login finding
its IMEI held live by another gateway goes down the same duplicate-box path as one superseding
a live session here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway.metrics import GatewayMetrics
from gateway.ports import ConnectionLedger, DeviceDirectory
from gateway.states import StateWriter
from protocol.gp8 import Message
from storage.errors import StorageError
from storage.models import DeviceConnection, Transport, connection_version, now_ms

log = logging.getLogger(__name__)

# Recording online/offline is bookkeeping: it must not hold a login or a close hostage.
STATE_WRITE_TIMEOUT_S = 5.0
# An older session that received a frame this recently is live, so a second login for its IMEI
# is a second box (a clone), not the same box back after losing its link. A box reconnects
# only after an unanswered frame timed out (60 s, docs/protocol.md §5.2) plus its back-off,
# so its dead session is always older than this; a clone fighting the real box over the
# session re-logs in within seconds of each supersede and is caught on the next round.
DUPLICATE_LIVE_WINDOW_S = 30.0
# How long a superseded session that looked live gets to end by itself before the new login
# counts as a duplicate box. A box that reconnects (a storm, a modem reset) aborted its old
# link, but under load we may read its new LOGIN before the old socket's reset: that old
# session then ends within this grace. A second live box keeps its link open.
DUPLICATE_GRACE_S = 2.0
# How often the rows of this gateway's live sessions get ``seen_ms`` refreshed (one write for
# all of them). Another process reads a session's idle time from it, late by up to this much,
# so it must stay well below DUPLICATE_LIVE_WINDOW_S.
TOUCH_INTERVAL_S = 10.0
# How often a login waiting out DUPLICATE_GRACE_S re-reads the row of a session held elsewhere.
ELSEWHERE_POLL_S = 0.1


class DuplicateHandler(Protocol):
    """Told when a login supersedes a session of the same IMEI that was still live."""

    async def __call__(
        self, imei: str, *, old_remote: str, new_remote: str, idle_s: float
    ) -> None: ...


class SessionHandle(Protocol):
    """What the registry needs of a live session (gateway.connection.Connection is one)."""

    @property
    def imei(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def remote(self) -> str: ...

    async def send(self, message: Message) -> None:
        """Write one message to the box; raises OSError/TimeoutError when it cannot."""
        ...

    def close(self, reason: str) -> None:
        """Ask the session to end now (it closes its socket and unregisters itself)."""
        ...

    async def ended_within(self, timeout_s: float) -> bool:
        """True if the session ends by itself (its link died) within ``timeout_s``."""
        ...


class SessionRegistry:
    def __init__(
        self,
        devices: DeviceDirectory,
        *,
        gateway_id: str,
        transport: Transport = Transport.TCP,
        metrics: GatewayMetrics | None = None,
        state_write_timeout_s: float = STATE_WRITE_TIMEOUT_S,
    ) -> None:
        self._devices = devices
        self.gateway_id = gateway_id
        self._transport = transport
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._state_write_timeout_s = state_write_timeout_s
        self.states = StateWriter(devices, metrics=self.metrics)
        self._sessions: dict[str, SessionHandle] = {}
        # Wall-clock start of each live session, by IMEI: its connection version.
        self._started_ms: dict[str, int] = {}
        # Set by the wiring (gp8/serve.py) to the store's devices: reads the rows other
        # processes write and refreshes this one's. None: this process is alone.
        self.ledger: ConnectionLedger | None = None
        self.touch_interval_s = TOUCH_INTERVAL_S
        self._toucher: asyncio.Task[None] | None = None
        # Set by the command service (duplicate-box alert and freeze); awaited before the
        # new session gets its login answer, so the freeze precedes any command.
        self.on_duplicate: DuplicateHandler | None = None
        self.duplicate_live_window_s = DUPLICATE_LIVE_WINDOW_S
        self.duplicate_grace_s = DUPLICATE_GRACE_S

    def __len__(self) -> int:
        return len(self._sessions)

    def is_online(self, imei: str) -> bool:
        return imei in self._sessions

    def get(self, imei: str) -> SessionHandle | None:
        return self._sessions.get(imei)

    async def register(self, session: SessionHandle) -> None:
        """Make ``session`` the box's live session, closing an older one; record it online."""
        old = self._sessions.get(session.imei)
        self._sessions[session.imei] = session
        # Strictly after the superseded session's start, so the rows order them even when
        # both logins fall in one millisecond.
        started_ms = max(now_ms(), self._started_ms.get(session.imei, 0) + 1)
        self._started_ms[session.imei] = started_ms
        if old is None:
            await self._check_elsewhere(session)
        elif old is not session:
            self.metrics.superseded += 1
            log.info(
                "imei=%s logged in again from %s; closing its session from %s",
                session.imei,
                session.remote,
                old.remote,
            )
            idle_s = self._idle_s(old)
            live = idle_s < self.duplicate_live_window_s and not await old.ended_within(
                self.duplicate_grace_s
            )
            old.close("superseded")
            if live:
                await self._report_duplicate(session, old, idle_s)
        await self._record(session, started_ms, online=True)
        self._start_touching()

    async def _check_elsewhere(self, session: SessionHandle) -> None:
        """Report a duplicate box when another gateway holds this IMEI's session live.

        The other process's row says so: online at another gateway, heard from within
        DUPLICATE_LIVE_WINDOW_S (its ``seen_ms``). As here, that session first gets
        DUPLICATE_GRACE_S to end by itself (a reconnect read before the old link's reset):
        its "offline" then lands in the row, which is not yet ours.
        """
        ledger = self.ledger
        if ledger is None:
            return
        try:
            async with asyncio.timeout(self._state_write_timeout_s + self.duplicate_grace_s):
                held = await self._held_elsewhere(ledger, session.device_id)
                if held is None:
                    return
                deadline = asyncio.get_running_loop().time() + self.duplicate_grace_s
                while asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(ELSEWHERE_POLL_S)
                    if await self._held_elsewhere(ledger, session.device_id) is None:
                        return
        except (StorageError, TimeoutError) as exc:
            self.metrics.storage_errors += 1
            log.warning("imei=%s: could not read its connection row: %r", session.imei, exc)
            return
        seen_ms = held.seen_ms if held.seen_ms is not None else held.since_ms
        idle_s = max(0.0, (now_ms() - seen_ms) / 1000)
        log.info(
            "imei=%s logged in from %s while gateway %s holds it live (from %s)",
            session.imei,
            session.remote,
            held.gateway_id,
            held.remote,
        )
        await self._call_duplicate(session.imei, held.remote or "?", session.remote, idle_s)

    async def _held_elsewhere(
        self, ledger: ConnectionLedger, device_id: str
    ) -> DeviceConnection | None:
        row = await ledger.connection(device_id)
        if row is None or not row.online or row.gateway_id in (None, self.gateway_id):
            return None
        if row.transport is not self._transport:
            return None  # an MQTT box's state is the broker's (gateway/mqtt/presence.py)
        seen_ms = row.seen_ms if row.seen_ms is not None else row.since_ms
        if (now_ms() - seen_ms) / 1000 >= self.duplicate_live_window_s:
            return None  # half-open there: the box is back after losing its link
        return row

    def _start_touching(self) -> None:
        if self.ledger is not None and (self._toucher is None or self._toucher.done()):
            self._toucher = asyncio.create_task(self._touch_loop(self.ledger))

    async def _touch_loop(self, ledger: ConnectionLedger) -> None:
        # Runs while this gateway holds sessions; `unregister` of the last one stops it.
        while self._sessions:
            await asyncio.sleep(self.touch_interval_s)
            loop_now = asyncio.get_running_loop().time()
            live = [
                s.device_id
                for s in self._sessions.values()
                if loop_now - getattr(s, "last_activity", float("-inf")) < self.touch_interval_s
            ]
            try:
                async with asyncio.timeout(self._state_write_timeout_s):
                    taken = await ledger.touch_connections(self.gateway_id, live, now_ms())
            except (StorageError, TimeoutError) as exc:
                self.metrics.storage_errors += 1
                log.warning("could not refresh %d connection rows: %r", len(live), exc)
                continue
            self._close_taken(taken)

    def _close_taken(self, taken: dict[str, str]) -> None:
        """Close the sessions whose box a newer session on another gateway holds: the same
        rule as a login superseding a session here, learned one touch later."""
        if not taken:
            return
        for session in [s for s in self._sessions.values() if s.device_id in taken]:
            self.metrics.superseded += 1
            log.info(
                "imei=%s is held by gateway %s now; closing its session from %s",
                session.imei,
                taken[session.device_id],
                session.remote,
            )
            session.close("superseded")

    @staticmethod
    def _idle_s(session: SessionHandle) -> float:
        # Sessions that do not track activity (``last_activity``) never count as live.
        last = getattr(session, "last_activity", None)
        if not isinstance(last, float):
            return float("inf")
        return asyncio.get_running_loop().time() - last

    async def _report_duplicate(
        self, new: SessionHandle, old: SessionHandle, idle_s: float
    ) -> None:
        await self._call_duplicate(new.imei, old.remote, new.remote, idle_s)

    async def _call_duplicate(
        self, imei: str, old_remote: str, new_remote: str, idle_s: float
    ) -> None:
        hook = self.on_duplicate
        if hook is None:
            return
        try:
            async with asyncio.timeout(self._state_write_timeout_s):
                await hook(imei, old_remote=old_remote, new_remote=new_remote, idle_s=idle_s)
        except Exception:
            log.exception("imei=%s: duplicate-login hook failed", imei)

    async def unregister(self, session: SessionHandle) -> None:
        """Forget ``session`` and record the box offline, unless a newer session replaced it."""
        if self._sessions.get(session.imei) is not session:
            return
        del self._sessions[session.imei]
        started_ms = self._started_ms.pop(session.imei)
        if not self._sessions and self._toucher is not None:
            self._toucher.cancel()
            self._toucher = None
        await self._record(session, started_ms, online=False)

    async def close(self, grace_s: float = STATE_WRITE_TIMEOUT_S) -> None:
        """Stop refreshing rows and write the states still queued (within ``grace_s``)."""
        if self._toucher is not None:
            self._toucher.cancel()
            await asyncio.gather(self._toucher, return_exceptions=True)
            self._toucher = None
        await self.states.stop(grace_s)

    async def send(self, imei: str, message: Message) -> bool:
        """Write ``message`` to the box if it is connected here; False if not, or if it failed."""
        session = self._sessions.get(imei)
        if session is None:
            return False
        try:
            await session.send(message)
        except (OSError, TimeoutError) as exc:
            log.info("send to imei=%s failed: %r", imei, exc)
            return False
        return True

    async def _record(self, session: SessionHandle, started_ms: int, *, online: bool) -> None:
        at_ms = now_ms()
        state = DeviceConnection(
            device_id=session.device_id,
            online=online,
            transport=self._transport,
            gateway_id=self.gateway_id,
            since_ms=at_ms,
            remote=session.remote,
            version=connection_version(started_ms, online=online),
            seen_ms=at_ms if online else None,
        )
        # Queued with the states of other boxes; waited for (bounded), so that the row says
        # online by the time the box has its LOGIN_RESULT. A wait that runs out leaves the
        # state queued: the writer retries until it is stored, and counts its failures.
        try:
            async with asyncio.timeout(self._state_write_timeout_s):
                await asyncio.shield(self.states.record(state))
        except TimeoutError:
            self.metrics.state_writes["wait_timed_out"] += 1
            log.info(
                "imei=%s: %s not stored yet; left queued",
                session.imei,
                "online" if online else "offline",
            )
        except RuntimeError as exc:  # the writer stopped (shutdown)
            log.warning("could not record imei=%s: %r", session.imei, exc)
