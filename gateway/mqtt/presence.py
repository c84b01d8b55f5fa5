"""Online/offline state of boxes that talk MQTT, as far as this gateway can tell.

The broker, not the gateway, holds a box's MQTT connection. A box that publishes its status
(docs/protocol.md §7.6: a retained birth message on connect, the same topic as its last will)
is online or offline as the broker says: every gateway subscribes to every box's status, so
each learns of an unclean disconnect within the box's keep-alive, and its state is ordered by
the box's session stamp (the birth and the will of one connection carry the same).

For a box that publishes no status, the fallback: it counts as online from its first message
and as offline once this gateway has had nothing from it for ``idle_s`` (the TCP idle
timeout's default: a box sends at least a heartbeat every 120 s). With several gateways on a
shared subscription each sees a share of a box's messages; each one rewrites the online state
at most every ``idle_s / 2`` while it hears from the box, so an "offline" written by a gateway
that happened to get none of them is corrected within that time: each write carries the time
of the last message it rests on as its version, and the store keeps the newest
(docs/scaling.md).

State writes are bookkeeping: they run in the background, one at a time per box, with a
timeout, and never hold up a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.ports import DeviceDirectory
from gateway.registry import STATE_WRITE_TIMEOUT_S
from protocol.gp8.topics import BoxStatus
from storage.errors import StorageError
from storage.models import DeviceConnection, Transport, connection_version, now_ms

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
    last_ms: int  # wall-clock time of the last message: the date of the state observed
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
        self._online: dict[str, _Seen] = {}  # by IMEI, boxes without a status
        # By IMEI: the newest status each box published. Once a box has one, it decides.
        self._status: dict[str, BoxStatus] = {}
        # The last write queued per device id: (online, task).
        self._writing: dict[str, tuple[bool, asyncio.Task[None]]] = {}
        self.write_failures = 0
        self._slots = asyncio.Semaphore(WRITE_CONCURRENCY)

    def __len__(self) -> int:
        return len(self._online) + sum(s.online for s in self._status.values())

    def is_online(self, imei: str) -> bool:
        status = self._status.get(imei)
        if status is not None:
            return status.online
        seen = self._online.get(imei)
        return seen is not None and asyncio.get_running_loop().time() - seen.last < self.idle_s

    def seen(self, imei: str, device_id: str) -> None:
        """A message from the box was accepted just now."""
        if imei in self._status:
            return  # the broker's word decides; a late message is no proof of presence
        now = asyncio.get_running_loop().time()
        seen = self._online.get(imei)
        if seen is None or seen.device_id != device_id:
            seen = self._online[imei] = _Seen(device_id, now_ms(), now, 0, float("-inf"))
            self._came_online(imei)
        seen.last = now
        seen.last_ms = now_ms()
        if now - seen.written >= self.idle_s / 2 and self._write_seen(seen, online=True):
            seen.written = now

    def status(self, imei: str, device_id: str, status: BoxStatus) -> None:
        """The box's status message (birth or will), as the broker delivered it."""
        known = self._status.get(imei)
        # Within a session "offline" comes after "online"; a repeat (the retained copy on a
        # reconnection, or another path) or an older session changes nothing.
        if known is not None and _order(status) <= _order(known):
            return
        self._status[imei] = status
        self._online.pop(imei, None)  # the fallback's guess is over
        # A box's clock ahead of ours must not outrank every later word about it.
        at_ms = min(status.session, now_ms())
        self._write(
            device_id,
            online=status.online,
            since_ms=at_ms if status.online else now_ms(),
            version=connection_version(at_ms, online=status.online),
        )
        if status.online:
            self._came_online(imei)

    def left(self, imei: str, device_id: str) -> None:
        """The box cleared its status as it disconnected cleanly: the end of the session this
        gateway last heard of (none heard: nothing to order it by, so nothing to say)."""
        known = self._status.get(imei)
        if known is not None and known.online:
            self.status(imei, device_id, BoxStatus(False, known.session))

    def _came_online(self, imei: str) -> None:
        if self._on_online is not None:
            hook = asyncio.create_task(self._call_on_online(imei))
            self._hooks.add(hook)
            hook.add_done_callback(self._hooks.discard)

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
            self._write_seen(self._online.pop(imei), online=False)
        return len(idle)

    async def close(self) -> None:
        """This gateway stops hearing from the boxes without a status: record them offline,
        wait for the writes (each has its timeout). Those with a status stay as the broker
        said: it still holds them, and the other gateways hear it."""
        for seen in self._online.values():
            self._write_seen(seen, online=False)
        self._online.clear()
        for hook in self._hooks:
            hook.cancel()
        await asyncio.gather(
            *self._hooks, *(t for _, t in self._writing.values()), return_exceptions=True
        )

    def _write_seen(self, seen: _Seen, *, online: bool) -> bool:
        return self._write(
            seen.device_id,
            online=online,
            since_ms=seen.since_ms if online else now_ms(),
            # "Heard at" / "not heard since" the last message: with a shared subscription
            # each gateway hears a share of the box, and the newest word of any of them wins.
            version=connection_version(seen.last_ms, online=online),
        )

    def _write(self, device_id: str, *, online: bool, since_ms: int, version: int) -> bool:
        """Queue a state write for the box, after the one already queued for it (so the last
        written is the last decided); skipped when that one writes the same state."""
        previous = self._writing.get(device_id)
        if previous is not None and previous[0] == online:
            return False
        state = DeviceConnection(
            device_id=device_id,
            online=online,
            transport=Transport.MQTT,
            gateway_id=self._gateway_id,
            since_ms=since_ms,
            remote=None,  # the box's address is known to the broker only
            version=version,
        )
        after = previous[1] if previous is not None else None
        task = asyncio.create_task(self._store(state, after))
        self._writing[device_id] = (online, task)
        task.add_done_callback(lambda t: self._done(device_id, t))
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


def _order(status: BoxStatus) -> tuple[int, bool]:
    return (status.session, not status.online)
