"""The live stream's fan-out in one API process: one reader per fleet with clients.

Every change reaches the stream through the database (storage/stream.py), never through this
process's memory, so a client sees what any gp8 process stored, and ingestion never waits for
a client: it only writes the log. Here, one `_FleetReader` per fleet with subscribers polls
``store.stream.after`` (every POLL_MIN_S..POLL_MAX_S, at once again when a page came back
full; each read bounded by READ_TIMEOUT_S), renders each entry once and offers it to each
subscriber whose filters match. Offering never waits: each subscriber has a mailbox of
``queue_limit`` messages, and a subscriber whose mailbox is full is dropped (SLOW_CONSUMER,
its client told where to resume) instead of slowing the reader or anyone else.

A subscriber joins in three phases, so that nothing is missed and nothing comes twice:

1. REPLAY: it reads the log itself, filtered, from its start cursor until it reaches the end
   of the log, without holding a mailbox.
2. It registers with its fleet's reader; from that moment the reader offers it every entry
   after the reader's cursor R. If the subscriber is still behind R (the reader moved during
   the last read), GAP: it reads (its cursor, R] itself while the mailbox collects what comes.
3. LIVE: messages from the mailbox; any at or before the subscriber's cursor are skipped.

The subscriber's cursor only moves forward and covers everything it has handed out, so the
union of the phases is the log without holes or repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from api.services.resources import stream_message
from api.stream.protocol import StreamError, StreamOptions, StreamRefused, bad_request, dumps
from storage.errors import CursorExpired, StorageError
from storage.models import StreamEntry, StreamKind, StreamPage
from storage.repository import StreamRepo

log = logging.getLogger(__name__)
T = TypeVar("T")

# Polling a fleet's log: this soon after a read found entries, backing off to POLL_MAX_S when
# idle. 100-200 ms keeps delivery well under a second for one indexed query per fleet.
POLL_MIN_S = 0.1
POLL_MAX_S = 0.2
# Each storage call of the stream gives up after this long (the reader then retries).
READ_TIMEOUT_S = 5.0
# Entries one read asks for: a page that comes back full is followed at once by the next.
READ_LIMIT = 1000
# Messages waiting for one client before it is dropped as a slow consumer: ten full reads.
# Cheap to allow: a mailbox holds references to messages rendered once for the whole fleet.
QUEUE_LIMIT = 10_000
# Clients of one process, across fleets; one more is refused (OVERLOADED, try again later).
MAX_SUBSCRIBERS = 10_000
# A reader whose reads fail waits longer each time, up to this.
RETRY_MAX_S = 5.0
# stop(): how long reader tasks get to finish.
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-connection bounds of the transports (api/stream/session.py)."""

    # No first WebSocket message (key or options) within this: TIMEOUT.
    first_message_timeout_s: float = 10.0
    # One message not taken by the client's connection within this: SLOW_CONSUMER.
    send_timeout_s: float = 10.0
    # The error message and the close frame get this long each.
    close_timeout_s: float = 5.0
    # SSE: a comment line after this long without a message.
    heartbeat_s: float = 15.0
    # The key of a long-lived stream is checked again this often (revoked: UNAUTHORIZED).
    key_check_s: float = 60.0
    # Authentication, the vehicle check and the access-log entry, each.
    auth_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message, rendered once for every subscriber of its fleet."""

    cursor: int
    kind: StreamKind
    vehicle_id: str | None
    text: str  # the JSON message {"kind", "cursor", "vehicle_id", "data"}


def render(entry: StreamEntry) -> Outgoing | None:
    try:
        text = dumps(stream_message(entry))
    except Exception:
        # A kind without a renderer yet, or an item the renderer cannot show: logged and
        # skipped, so one bad entry cannot stop a fleet's stream.
        log.exception(
            "stream entry %s/%d (%s) cannot be rendered", entry.fleet_id, entry.cursor, entry.kind
        )
        return None
    return Outgoing(entry.cursor, entry.kind, entry.vehicle_id, text)


class _Phase(Enum):
    REPLAY = "replay"
    GAP = "gap"
    LIVE = "live"


class Subscription:
    """One client's view of its fleet's stream; see the module docstring for the phases."""

    def __init__(
        self, hub: StreamHub, fleet_id: str, start: int, options: StreamOptions, limit: int
    ) -> None:
        self.fleet_id = fleet_id
        self.start = start  # the ready message's cursor: what follows comes after it
        self.kinds = options.kinds
        self.vehicle_id = options.vehicle_id
        self._hub = hub
        self._limit = limit
        self._cursor = start  # everything at or before it was handed out or is in _pending
        self._phase = _Phase.REPLAY
        self._live_from = 0  # the reader's cursor when this registered
        self._pending: deque[Outgoing] = deque()  # read by this subscriber itself
        self._mailbox: deque[Outgoing] = deque()  # offered by the reader
        self._wake = asyncio.Event()
        self._closed: StreamRefused | None = None

    def matches(self, out: Outgoing) -> bool:
        if self.kinds is not None and out.kind not in self.kinds:
            return False
        return self.vehicle_id is None or out.vehicle_id == self.vehicle_id

    def offer(self, out: Outgoing) -> bool:
        """Called by the reader, never waits; False when the mailbox is full."""
        if self._closed is not None:
            return True
        if len(self._mailbox) >= self._limit:
            return False
        self._mailbox.append(out)
        self._wake.set()
        return True

    def close(self, refusal: StreamRefused) -> None:
        """End the subscription: the next `next` raises ``refusal`` (what waits is dropped)."""
        if self._closed is None:
            if refusal.error is StreamError.SLOW_CONSUMER:
                self._hub.dropped += 1
            self._closed = refusal
            self._mailbox.clear()
            self._pending.clear()
            self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def next(self, wait_s: float) -> Outgoing | None:
        """The next message, or None when none came within ``wait_s`` seconds; raises the
        `StreamRefused` that closed the subscription."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            if self._closed is not None:
                raise self._closed
            if self._pending:
                return self._pending.popleft()
            if self._phase is _Phase.REPLAY:
                await self._replay()
            elif self._phase is _Phase.GAP:
                await self._fill_gap()
            else:
                while self._mailbox:
                    out = self._mailbox.popleft()
                    if out.cursor > self._cursor:
                        self._cursor = out.cursor
                        return out
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()

    async def _replay(self) -> None:
        before = self._cursor
        page = await self._read()
        self._take(page.entries, upto=None)
        self._cursor = page.cursor
        # Cursors are not dense (storage/stream.py: block and index), so the end of the log
        # is a read that moved nothing, or, unfiltered, one that came back short.
        filtered = self.kinds is not None or self.vehicle_id is not None
        if page.cursor == before or (not filtered and len(page.entries) < self._hub.read_limit):
            # Join the reader. Whatever it passed meanwhile is in (our cursor, its cursor],
            # which the GAP phase reads.
            self._live_from = self._hub._register(self)
            self._phase = _Phase.GAP if self._cursor < self._live_from else _Phase.LIVE

    async def _fill_gap(self) -> None:
        before = self._cursor
        page = await self._read()
        self._take(page.entries, upto=self._live_from)
        self._cursor = min(page.cursor, self._live_from)
        if self._cursor >= self._live_from:
            self._phase = _Phase.LIVE
        elif self._cursor == before:
            # A young hole (MongoDB, storage/stream.py) the reader already passed: wait a
            # little rather than ask again at once.
            await asyncio.sleep(self._hub.poll_min_s)

    def _take(self, entries: list[StreamEntry], *, upto: int | None) -> None:
        for entry in entries:
            if upto is not None and entry.cursor > upto:
                break  # the mailbox has it
            out = render(entry)
            if out is not None:
                self._pending.append(out)

    async def _read(self) -> StreamPage:
        return await self._hub._read(
            self.fleet_id, self._cursor, kinds=self.kinds, vehicle_id=self.vehicle_id
        )


class _FleetReader:
    """Polls one fleet's log and offers each new entry to the fleet's subscribers."""

    def __init__(self, hub: StreamHub, fleet_id: str, cursor: int) -> None:
        self.hub = hub
        self.fleet_id = fleet_id
        self.cursor = cursor  # everything up to here was offered
        self.subscribers: set[Subscription] = set()
        self.task = asyncio.create_task(self._run(), name=f"gp8-stream-reader-{fleet_id}")

    async def _run(self) -> None:
        try:
            await self._poll()
        except Exception:
            # A bug, not a storage failure (those are retried): the fleet's clients are told
            # to come back rather than left waiting on a reader that is gone.
            log.exception("stream reader of fleet %s failed", self.fleet_id)
            self.hub._expire(
                self, StreamRefused(StreamError.UNAVAILABLE, "the stream reader failed")
            )

    async def _poll(self) -> None:
        hub = self.hub
        delay = hub.poll_min_s
        failures = 0
        while True:
            try:
                page = await hub._read(self.fleet_id, self.cursor)
            except StreamRefused as refusal:
                if refusal.error is StreamError.CURSOR_EXPIRED:
                    # This reader fell a whole retention window behind: so did its clients.
                    hub._expire(self, refusal)
                    return
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("stream of fleet %s: %s (%d)", self.fleet_id, refusal, failures)
                await asyncio.sleep(min(RETRY_MAX_S, hub.poll_max_s * 2**failures))
                continue
            failures = 0
            self._offer(page.entries)
            self.cursor = page.cursor
            if len(page.entries) >= hub.read_limit:  # unfiltered: every entry scanned is here
                await asyncio.sleep(0)  # more is waiting: read on, letting others run
                continue
            delay = hub.poll_min_s if page.entries else min(delay * 1.5, hub.poll_max_s)
            await asyncio.sleep(delay)

    def _offer(self, entries: list[StreamEntry]) -> None:
        slow: list[Subscription] = []
        for entry in entries:
            out: Outgoing | None = None
            for sub in self.subscribers:
                if sub.kinds is not None and entry.kind not in sub.kinds:
                    continue
                if sub.vehicle_id is not None and entry.vehicle_id != sub.vehicle_id:
                    continue
                if out is None:
                    out = render(entry)
                    if out is None:
                        break
                if not sub.offer(out):
                    slow.append(sub)
            for sub in slow:
                sub.close(
                    StreamRefused(
                        StreamError.SLOW_CONSUMER,
                        f"slow consumer: more than {self.hub.queue_limit} messages waiting",
                    )
                )
                self.subscribers.discard(sub)
            slow.clear()


# Privacy mode (api/services/privacy.py, docs/privacy.md): the entries of a read a client may
# see; private fixes never reach the stream, whoever the client is (no reason can be stated).
EntryFilter = Callable[[str, list[StreamEntry]], Awaitable[list[StreamEntry]]]


class StreamHub:
    """The fan-out of one API process (see the module docstring). ``subscribe`` for each
    client; ``stop`` at shutdown ends every subscription (SHUTTING_DOWN)."""

    def __init__(
        self,
        stream: StreamRepo,
        *,
        queue_limit: int = QUEUE_LIMIT,
        max_subscribers: int = MAX_SUBSCRIBERS,
        poll_min_s: float = POLL_MIN_S,
        poll_max_s: float = POLL_MAX_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        read_limit: int = READ_LIMIT,
        limits: Limits | None = None,
        privacy: EntryFilter | None = None,
    ) -> None:
        if queue_limit < 1 or max_subscribers < 1 or read_limit < 1:
            raise ValueError("queue_limit, max_subscribers and read_limit must be positive")
        self.stream = stream
        self.queue_limit = queue_limit
        self.max_subscribers = max_subscribers
        self.poll_min_s = poll_min_s
        self.poll_max_s = max(poll_min_s, poll_max_s)
        self.read_timeout_s = read_timeout_s
        # One read's entries are offered at once: never more than a mailbox holds, or a client
        # that keeps up would be dropped by a single burst.
        self.read_limit = min(read_limit, queue_limit)
        self.limits = limits or Limits()
        self.privacy = privacy
        self.dropped = 0  # slow consumers dropped since start
        self._readers: dict[str, _FleetReader] = {}
        self._subscriptions: set[Subscription] = set()
        self._ending: set[asyncio.Task[None]] = set()
        self._stopped = False

    @contextlib.asynccontextmanager
    async def subscribe(self, fleet_id: str, options: StreamOptions) -> AsyncIterator[Subscription]:
        sub = await self.open(fleet_id, options)
        try:
            yield sub
        finally:
            self.release(sub)

    async def open(self, fleet_id: str, options: StreamOptions) -> Subscription:
        """A subscription from ``options.after`` (from now when None); raises StreamRefused
        (CURSOR_EXPIRED, BAD_REQUEST for a cursor never issued, OVERLOADED, ...). The caller
        must `release` it."""
        self._check_open()
        if len(self._subscriptions) >= self.max_subscribers:
            raise StreamRefused(
                StreamError.OVERLOADED, "too many stream clients on this server; try again later"
            )
        head = await self._call(self.stream.head(fleet_id))
        if options.after is None:
            start = head
        else:
            start = options.after
            if start > head:
                raise bad_request(f"cursor {start} was never issued (the stream is at {head})")
            horizon = await self._call(self.stream.horizon(fleet_id))
            if start < horizon:
                raise _expired(start, horizon)
        self._check_open()
        sub = Subscription(self, fleet_id, start, options, self.queue_limit)
        self._subscriptions.add(sub)
        return sub

    def release(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)
        reader = self._readers.get(sub.fleet_id)
        if reader is None:
            return
        reader.subscribers.discard(sub)
        if not reader.subscribers:
            self._retire(reader)

    async def stop(self) -> None:
        """End every subscription (their clients are told to resume) and every reader."""
        self._stopped = True
        going = StreamRefused(StreamError.SHUTTING_DOWN, "the server is shutting down")
        for sub in list(self._subscriptions):
            sub.close(going)
        for reader in list(self._readers.values()):
            reader.subscribers.clear()
            self._retire(reader)
        if self._ending:
            await asyncio.wait(self._ending, timeout=STOP_TIMEOUT_S)

    def health(self) -> dict[str, Any]:
        return {
            "status": "stopped" if self._stopped else "ok",
            "clients": len(self._subscriptions),
            "fleets": len(self._readers),
            "slow_consumers_dropped": self.dropped,
        }

    # --- for Subscription and _FleetReader -----------------------------------------------------

    def _register(self, sub: Subscription) -> int:
        """Add a subscriber to its fleet's reader (started at the subscriber's cursor when
        there is none); the reader's cursor: what it offers from now on comes after it."""
        if sub.closed:
            return sub._cursor
        reader = self._readers.get(sub.fleet_id)
        if reader is None:
            reader = self._readers[sub.fleet_id] = _FleetReader(self, sub.fleet_id, sub._cursor)
        reader.subscribers.add(sub)
        return reader.cursor

    def _retire(self, reader: _FleetReader) -> None:
        if self._readers.get(reader.fleet_id) is reader:
            del self._readers[reader.fleet_id]
        reader.task.cancel()
        self._ending.add(reader.task)
        reader.task.add_done_callback(self._ending.discard)

    def _expire(self, reader: _FleetReader, refusal: StreamRefused) -> None:
        for sub in reader.subscribers:
            sub.close(refusal)
        reader.subscribers.clear()
        if self._readers.get(reader.fleet_id) is reader:
            del self._readers[reader.fleet_id]

    async def _read(
        self,
        fleet_id: str,
        cursor: int,
        *,
        kinds: frozenset[StreamKind] | None = None,
        vehicle_id: str | None = None,
    ) -> StreamPage:
        page = await self._call(
            self.stream.after(
                fleet_id, cursor, kinds=kinds, vehicle_id=vehicle_id, limit=self.read_limit
            )
        )
        if self.privacy is None or not page.entries:
            return page
        # The cursor stays the read's: a hidden entry is passed over, never read again.
        return StreamPage(await self._call(self.privacy(fleet_id, page.entries)), page.cursor)

    async def _call(self, call: Awaitable[T]) -> T:
        """A storage call of the stream, bounded by ``read_timeout_s``; its failures as the
        refusals a client is told (CURSOR_EXPIRED, UNAVAILABLE)."""
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await call
        except CursorExpired as exc:
            raise _expired(exc.cursor, exc.horizon) from exc
        except (StorageError, TimeoutError, OSError) as exc:
            raise StreamRefused(
                StreamError.UNAVAILABLE, "the stream's storage did not answer"
            ) from exc

    def _check_open(self) -> None:
        if self._stopped:
            raise StreamRefused(StreamError.SHUTTING_DOWN, "the server is shutting down")


def _expired(cursor: int, horizon: int) -> StreamRefused:
    return StreamRefused(
        StreamError.CURSOR_EXPIRED,
        f"cursor {cursor} is older than the stream keeps (horizon {horizon});"
        " start again without after",
        horizon=horizon,
    )
