"""Who is behind an IMEI: the device record and fitting history, cached for the MQTT path.

Over TCP a box logs in once per connection and its connection keeps its context; over MQTT every
message names its box, so the bridge keeps the context of recently seen boxes here instead of
reading the store per message. Entries are re-read after ``max_age_s``, like a TCP connection's
fitting history (gateway.context.FITTINGS_MAX_AGE_S), so a box disabled, or fitted to another
vehicle, is seen within that delay. Unknown IMEIs are cached too: a misconfigured box publishing
in a loop must not cost one store read per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from gateway.context import FITTINGS_MAX_AGE_S, LOOKUP_TIMEOUT_S, DeviceContext, Fittings
from gateway.ports import DeviceDirectory
from storage.errors import StorageError
from storage.models import Device

log = logging.getLogger(__name__)

# About 1 KiB per entry: 50,000 boxes is 50 MiB, and a gateway sees fewer boxes than that
# within one refresh period unless the fleet is bigger still, where it only re-reads more.
CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class KnownDevice:
    device: Device
    context: DeviceContext


@dataclass(frozen=True, slots=True)
class _Entry:
    known: KnownDevice | None  # None: no device has this IMEI
    loaded: float  # loop time


class DeviceCache:
    def __init__(
        self,
        devices: DeviceDirectory,
        *,
        max_age_s: float = FITTINGS_MAX_AGE_S,
        size: int = CACHE_SIZE,
        lookup_timeout_s: float = LOOKUP_TIMEOUT_S,
    ) -> None:
        self._devices = devices
        self._max_age_s = max_age_s
        self._size = size
        self._lookup_timeout_s = lookup_timeout_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Task[_Entry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, imei: str) -> KnownDevice | None:
        """The box with this IMEI, or None. Raises StorageError or TimeoutError when the store
        cannot say and nothing usable is cached."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(imei)
        if entry is not None and loop.time() - entry.loaded < self._max_age_s:
            self._entries.move_to_end(imei)
            return entry.known
        try:
            entry = await self._load(imei)
        except (StorageError, TimeoutError) as exc:
            if entry is None or entry.known is None:
                raise
            # Keep the history we have; the next message tries again.
            log.info("imei=%s: device refresh failed: %r", imei, exc)
            return entry.known
        return entry.known

    def forget(self, imei: str) -> None:
        self._entries.pop(imei, None)

    async def _load(self, imei: str) -> _Entry:
        # One read per IMEI at a time: a box's burst of messages waits for the same lookup.
        task = self._loading.get(imei)
        if task is None:
            task = asyncio.create_task(self._read(imei))
            self._loading[imei] = task
            task.add_done_callback(self._loaded)
        # shield: a cancelled waiter must not cancel the lookup the others wait for.
        return await asyncio.shield(task)

    def _loaded(self, task: asyncio.Task[_Entry]) -> None:
        for imei, loading in list(self._loading.items()):
            if loading is task:
                del self._loading[imei]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone meanwhile

    async def _read(self, imei: str) -> _Entry:
        async with asyncio.timeout(self._lookup_timeout_s):
            device = await self._devices.get_by_imei(imei)
            history = await self._devices.fittings(device.id) if device is not None else []
        known = None
        if device is not None:
            context = DeviceContext(device.fleet_id, device.id, device.imei, Fittings.of(history))
            known = KnownDevice(device, context)
        entry = _Entry(known, asyncio.get_running_loop().time())
        self._entries[imei] = entry
        self._entries.move_to_end(imei)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return entry
