"""Live box sessions of this gateway, by IMEI, and the connection state kept in storage.

One session per IMEI: when a box logs in while an older session of it is still open, the newer
one wins and the older is closed. That is what happens after a carrier NAT silently dropped the
mapping: the box reconnects, and the old socket would otherwise sit half-open until the idle
timeout. Commands (a later issue) find the box here with `send`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway.metrics import GatewayMetrics
from gateway.ports import DeviceDirectory
from protocol.gp8 import Message
from storage.errors import StorageError
from storage.models import DeviceConnection, Transport, now_ms

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
        self._sessions: dict[str, SessionHandle] = {}
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
        if old is not None and old is not session:
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
        await self._record(session, online=True)

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
        hook = self.on_duplicate
        if hook is None:
            return
        try:
            async with asyncio.timeout(self._state_write_timeout_s):
                await hook(new.imei, old_remote=old.remote, new_remote=new.remote, idle_s=idle_s)
        except Exception:
            log.exception("imei=%s: duplicate-login hook failed", new.imei)

    async def unregister(self, session: SessionHandle) -> None:
        """Forget ``session`` and record the box offline, unless a newer session replaced it."""
        if self._sessions.get(session.imei) is not session:
            return
        del self._sessions[session.imei]
        await self._record(session, online=False)

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

    async def _record(self, session: SessionHandle, *, online: bool) -> None:
        state = DeviceConnection(
            device_id=session.device_id,
            online=online,
            transport=self._transport,
            gateway_id=self.gateway_id,
            since_ms=now_ms(),
            remote=session.remote,
        )
        try:
            async with asyncio.timeout(self._state_write_timeout_s):
                await self._devices.set_connection(state)
        except (StorageError, TimeoutError) as exc:
            self.metrics.storage_errors += 1
            log.warning(
                "could not record imei=%s %s: %r",
                session.imei,
                "online" if online else "offline",
                exc,
            )
