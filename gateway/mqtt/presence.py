"""Online/offline state of boxes that talk MQTT, as far as this gateway can tell.

The broker, not the gateway, holds a box's MQTT connection, so the gateway cannot see it open or
close. A box counts as online from its first message and as offline once this gateway has had
nothing from it for ``idle_s`` (the TCP idle timeout's default: a box sends at least a heartbeat
every 120 s). With several gateways on a shared subscription each sees a share of a box's
messages; each one rewrites the online state at most every ``idle_s / 2`` while it hears from
the box, so an "offline" written by a gateway that happened to get none of them is corrected
within that time. State writes are bookkeeping: they run in the background, one at a time per
box, with a timeout, and never hold up a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.ports import DeviceDirectory
from gateway.registry import STATE_WRITE_TIMEOUT_S
from storage.errors import StorageError
from storage.models import DeviceConnection, Transport, now_ms

log = logging.getLogger(__name__)

IDLE_S = 300.0
# State writes running at once. Each is a small transaction of its own; when a few hundred
# boxes appear at once (a gateway or broker restart) they must queue here rather than in front
# of the telemetry writes, which share the store's writer (one thread on SQLite).
WRITE_CONCURRENCY = 2


@dataclass(slots=True)
class _Seen:
    device_id: str
    since_ms: int  # online since
    last: float  # loop time of the last message
    written: float  # loop time of the last "online" write (-inf: not yet)


class Presence:
    def __init__(
        self,
        devices: DeviceDirectory,
        *,
        gateway_id: str,
        idle_s: float = IDLE_S,
        write_timeout_s: float = STATE_WRITE_TIMEOUT_S,
        on_online: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._devices = devices
        # Called with the IMEI when a box comes online here: over MQTT its first message is the
        # nearest thing to a TCP login, the moment to deliver the commands queued for it.
        self._on_online = on_online
        self._hooks: set[asyncio.Task[None]] = set()
        self._gateway_id = gateway_id
        self.idle_s = idle_s
        self._write_timeout_s = write_timeout_s
        self._online: dict[str, _Seen] = {}  # by IMEI
        # The last write queued per device id: (online, task).
        self._writing: dict[str, tuple[bool, asyncio.Task[None]]] = {}
        self.write_failures = 0
        self._slots = asyncio.Semaphore(WRITE_CONCURRENCY)

    def __len__(self) -> int:
        return len(self._online)

    def is_online(self, imei: str) -> bool:
        seen = self._online.get(imei)
        return seen is not None and asyncio.get_running_loop().time() - seen.last < self.idle_s

    def seen(self, imei: str, device_id: str) -> None:
        """A message from the box was accepted just now."""
        now = asyncio.get_running_loop().time()
        seen = self._online.get(imei)
        if seen is None or seen.device_id != device_id:
            seen = self._online[imei] = _Seen(device_id, now_ms(), now, float("-inf"))
            if self._on_online is not None:
                hook = asyncio.create_task(self._call_on_online(imei))
                self._hooks.add(hook)
                hook.add_done_callback(self._hooks.discard)
        seen.last = now
        if now - seen.written >= self.idle_s / 2 and self._write(seen, online=True):
            seen.written = now

    async def _call_on_online(self, imei: str) -> None:
        assert self._on_online is not None
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._on_online(imei)
        except Exception as exc:  # a hook failure must not touch the uplink
            log.warning("on_online hook for %s failed: %r", imei, exc)

    async def sweep(self) -> int:
        """Record offline the boxes idle for ``idle_s``; returns how many."""
        now = asyncio.get_running_loop().time()
        idle = [imei for imei, seen in self._online.items() if now - seen.last >= self.idle_s]
        for imei in idle:
            self._write(self._online.pop(imei), online=False)
        return len(idle)

    async def close(self) -> None:
        """This gateway stops hearing from every box: record them offline, wait for the
        writes (each has its timeout)."""
        for seen in self._online.values():
            self._write(seen, online=False)
        self._online.clear()
        for hook in self._hooks:
            hook.cancel()
        await asyncio.gather(
            *self._hooks, *(t for _, t in self._writing.values()), return_exceptions=True
        )

    def _write(self, seen: _Seen, *, online: bool) -> bool:
        """Queue a state write for the box, after the one already queued for it (so the last
        written is the last decided); skipped when that one writes the same state."""
        previous = self._writing.get(seen.device_id)
        if previous is not None and previous[0] == online:
            return False
        state = DeviceConnection(
            device_id=seen.device_id,
            online=online,
            transport=Transport.MQTT,
            gateway_id=self._gateway_id,
            since_ms=seen.since_ms if online else now_ms(),
            remote=None,  # the box's address is known to the broker only
        )
        after = previous[1] if previous is not None else None
        task = asyncio.create_task(self._store(state, after))
        self._writing[seen.device_id] = (online, task)
        task.add_done_callback(lambda t: self._done(seen.device_id, t))
        return True

    def _done(self, device_id: str, task: asyncio.Task[None]) -> None:
        current = self._writing.get(device_id)
        if current is not None and current[1] is task:
            del self._writing[device_id]

    async def _store(self, state: DeviceConnection, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        try:
            async with self._slots, asyncio.timeout(self._write_timeout_s):
                await self._devices.set_connection(state)
        except (StorageError, TimeoutError) as exc:
            self.write_failures += 1
            log.warning(
                "could not record device %s online=%s: %r", state.device_id, state.online, exc
            )
