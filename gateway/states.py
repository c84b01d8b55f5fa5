"""Connection-state writes, coalesced: one storage write for the online/offline changes of many
boxes.

Every login and every close records the box's state (gateway/registry.py). One write each
makes a reconnect storm of 10,000 boxes 20,000 small writes queued in front of the telemetry
flushes, which share the store's writer; they time out and positions wait behind them. Here a
state goes into a dict by device, where a newer observation replaces an older one not yet
written (a box that logged in and out again within one batch is written once, offline), and one
writer task stores what is pending with one `set_connections` call per batch: a batch gathers
for ``max_delay_s`` or until ``max_batch`` states wait.

The version of each state (storage.models.connection_version) decides, here as in storage:
newest observation wins, so coalescing and retrying never reorder anything. A failed write is
counted and its states go back in the dict (unless a newer one arrived meanwhile) and are
retried after ``retry_s``: a state is never dropped for a storage hiccup. Callers get a future
that resolves once their state, or a newer one of the same box, is stored; they may stop
waiting (the gateway bounds the wait), the state stays queued.

The writer task runs only while something is pending, so a registry that is never closed
leaves no task behind.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Protocol

from gateway.metrics import GatewayMetrics
from storage.models import DeviceConnection

log = logging.getLogger(__name__)

# How long the first state of a batch waits for others: logins of a storm arrive within
# milliseconds of each other, and a login waits for its state at most this long extra.
MAX_DELAY_S = 0.02
# States per write: one SQLite transaction of this many upserts takes a few tens of ms, short
# enough not to hold the telemetry flushes queued behind it.
MAX_BATCH = 2000
# After a failed write, the next attempt waits this long (the store is down or overloaded).
RETRY_S = 1.0
# One write (a batch) that takes longer than this counts as failed and is retried.
WRITE_TIMEOUT_S = 5.0


class StateSink(Protocol):
    async def set_connections(self, connections: list[DeviceConnection]) -> None: ...


@dataclass(slots=True)
class _Pending:
    state: DeviceConnection
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class StateWriter:
    def __init__(
        self,
        devices: StateSink,
        *,
        metrics: GatewayMetrics | None = None,
        max_delay_s: float = MAX_DELAY_S,
        max_batch: int = MAX_BATCH,
        retry_s: float = RETRY_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self._devices = devices
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self.retry_s = retry_s
        self.write_timeout_s = write_timeout_s
        self._pending: dict[str, _Pending] = {}  # by device id, oldest first
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """States waiting to be written (at most one per box)."""
        return len(self._pending)

    def record(self, state: DeviceConnection) -> asyncio.Future[None]:
        """Queue ``state``; the future resolves once it (or a newer state of the box) is
        stored. A state older than the one already queued for its box is dropped: the store
        would keep the newer one anyway."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = self._pending.get(state.device_id)
        if entry is None:
            self._pending[state.device_id] = _Pending(state, [future])
        elif state.version >= entry.state.version:
            self.metrics.state_writes["coalesced"] += 1
            entry.state = state
            entry.waiters.append(future)
        else:
            self.metrics.state_writes["coalesced"] += 1
            future.set_result(None)
            return future
        self._start()
        if len(self._pending) >= self.max_batch:
            self._wakeup.set()
        return future

    async def stop(self, grace_s: float = WRITE_TIMEOUT_S) -> None:
        """Write what is pending (one try per batch, within ``grace_s``), then stop."""
        self._closing = True
        self._wakeup.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(grace_s):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        left = list(self._pending.values())
        self._pending.clear()
        if left:
            log.warning("%d connection states not written at shutdown", len(left))
        for entry in left:
            _settle(entry, RuntimeError("state writer stopped"))

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="gp8-state-writer")

    async def _run(self) -> None:
        # Ends when nothing is pending; `record` starts it again.
        while self._pending:
            if not self._closing and len(self._pending) < self.max_batch:
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(self.max_delay_s):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            batch = self._take()
            try:
                written = await self._write(batch)
            except asyncio.CancelledError:
                self._requeue(batch)  # stop() gave up on it: it settles what is left
                raise
            if not written:
                self._requeue(batch)
                if self._closing:
                    return  # stop() settles what is left
                await asyncio.sleep(self.retry_s)

    def _take(self) -> list[_Pending]:
        return [
            self._pending.pop(device_id)
            for device_id in list(itertools.islice(self._pending, self.max_batch))
        ]

    async def _write(self, batch: list[_Pending]) -> bool:
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self._devices.set_connections([e.state for e in batch])
        except Exception as exc:  # StorageError, timeout, or a store bug: retried all the same
            self.metrics.storage_errors += 1
            self.metrics.state_writes["failed"] += len(batch)
            log.warning("could not record %d connection states: %r", len(batch), exc)
            return False
        self.metrics.state_writes["written"] += len(batch)
        for entry in batch:
            _settle(entry, None)
        return True

    def _requeue(self, batch: list[_Pending]) -> None:
        for entry in batch:
            newer = self._pending.get(entry.state.device_id)
            if newer is None:
                self._pending[entry.state.device_id] = entry
            elif newer.state.version >= entry.state.version:
                newer.waiters.extend(entry.waiters)  # the newer state's write answers them
            else:
                entry.waiters.extend(newer.waiters)
                self._pending[entry.state.device_id] = entry


def _settle(entry: _Pending, error: BaseException | None) -> None:
    for waiter in entry.waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
