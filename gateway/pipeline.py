"""One writer for every connection: records are batched into one storage call per flush.

A connection `submit`s the good records of what it just read and awaits the returned future;
the future resolves only once the flush that carried them is durably stored, so the connection
ACKs nothing that is not stored. One writer task takes submissions off a queue and calls
``telemetry.store(positions, events)`` once per flush: when ``batch_size`` records wait, or
when the oldest has waited ``max_delay_ms``. While a flush is being written the next batch
accumulates, and is handed to the store behind it (FLUSHES_IN_FLIGHT); a flush takes up to
``max_batch_size`` records of such a backlog (group commit).
A durable commit costs a roughly fixed fsync whatever its size, so when the store falls behind,
bigger flushes are what lets it catch up; when it keeps up, flushes stay small and quick.

Backpressure: at most ``queue_limit`` records are submitted and not yet resolved; `submit`
waits (first come, first served) for room, and a waiting connection stops reading its socket,
which pushes back on the box through TCP.

After a flush is durable and its submitters are told, its records are offered to the processing
stage (processing/stage.py), which never blocks: processing cannot hold up an ACK.

Failures: when the store is unavailable (or a flush times out) every submission of the flush
fails with StorageUnavailable and the boxes resend later. Any other exception is a bug or a
poison record; the flush is then split in halves and each half retried (down to single
submissions), so one bad batch fails alone instead of taking the records of every other box
with it, at the cost of about 2·log2(n) extra store calls rather than n.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.deadlines import Deadlines
from gateway.errors import PipelineClosed
from gateway.lifecycle import Service
from gateway.metrics import GatewayMetrics
from gateway.ports import TelemetrySink
from processing import ProcessingStage
from storage.errors import StorageUnavailable
from storage.models import Event, Position, StoreResult
from storage.pseudonyms import BadgePseudonyms

log = logging.getLogger(__name__)

# Default max_batch_size, as a multiple of batch_size: large enough to amortise an fsync of tens
# of milliseconds on a slow disk, and SQLite's per-commit page writes (a commit rewrites a leaf of
# positions_by_vehicle per vehicle, whatever its size: storage/sqlite/schema.py); small enough
# that one SQLite transaction holds the write lock for a fraction of a second (API writes wait
# behind it: ~0.1 s for 8,000 records). bench/bench_ingest.py, 1,000 boxes, 6 alternating runs:
# 8 rather than 4 gave 77k rather than 69k positions/s, 8.3 rather than 9.7 us of writer CPU each.
BACKLOG_BATCH_FACTOR = 8
# A commit that takes longer than this is treated as failed (StorageUnavailable): the boxes
# resend, and the idempotent store absorbs the copy if the slow commit did land after all.
STORE_TIMEOUT_S = 30.0
# Flushes handed to the store at a time. The second waits in the store's queue while the first
# is written, so the SQLite writer thread goes on to it as soon as the first has committed,
# instead of idling until the event loop has heard of that commit and handed it the next
# (py-spy of bench/bench_ingest.py: idle about a fifth of the run, between flushes). Each
# flush's submitters are still answered only once that flush is durable; SQLite's one writer
# commits them in the order they were handed over. Under load the next flush is handed over
# as soon as a store returns, before that flush's submitters are answered (`_stored`).
FLUSHES_IN_FLIGHT = 2


@dataclass(slots=True, eq=False)
class _Submission:
    positions: Sequence[Position]
    events: Sequence[Event]
    size: int
    enqueued: float
    future: asyncio.Future[None] = field(repr=False)
    process: bool = True  # offered to the processing stage once stored

    def resolve(self, error: BaseException | None) -> None:
        # The submitter may be gone (connection closed, task cancelled): its future is done.
        if self.future.done():
            return
        if error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(error)


class IngestPipeline(Service):
    def __init__(
        self,
        telemetry: TelemetrySink,
        *,
        batch_size: int = 1000,
        max_batch_size: int | None = None,
        max_delay_ms: int = 20,
        queue_limit: int = 50_000,
        store_timeout_s: float = STORE_TIMEOUT_S,
        metrics: GatewayMetrics | None = None,
        processing: ProcessingStage | None = None,
        pseudonyms: BadgePseudonyms | None = None,
    ) -> None:
        if batch_size < 1 or queue_limit < 1 or max_delay_ms < 0:
            raise ValueError("batch_size and queue_limit must be >= 1, max_delay_ms >= 0")
        self._telemetry = telemetry
        self._batch_size = batch_size
        self._max_batch_size = max(batch_size, max_batch_size or batch_size * BACKLOG_BATCH_FACTOR)
        self._max_delay_s = max_delay_ms / 1000
        self._queue_limit = queue_limit
        self._store_timeout_s = store_timeout_s
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.processing = processing
        # Box records' badges become their pseudonyms here, before storage and processing see
        # them (storage/pseudonyms.py); default: the development key, as the API's.
        self._pseudonyms = pseudonyms or BadgePseudonyms.development()
        self._queue: deque[_Submission] = deque()
        self._queued = 0  # records in _queue
        self._reserved = 0  # records admitted and not yet resolved (queued or being written)
        self._space_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._storing = 0  # flushes handed to the store whose store call has not returned
        self._closing = False
        self._deadlines: dict[float, Deadlines] = {}  # by wait_s (submit)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer is not None:
            raise RuntimeError("pipeline already started")
        self._writer = asyncio.create_task(self._run(), name="gp8-ingest-writer")

    async def stop(self, grace_s: float | None = None) -> None:
        """Take no more submissions; store everything already submitted, then return.

        After ``grace_s`` seconds the writer is cancelled and what is left fails with
        PipelineClosed (nothing of it was ACKed, so the boxes resend it).
        """
        self._closing = True
        self._wakeup.set()
        writer = self._writer
        if writer is None or writer.done():
            self._fail_all(PipelineClosed("pipeline stopped"))
            return
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.shield(writer)
        except TimeoutError:
            log.warning("ingest pipeline: drain timed out, %d records not stored", self._reserved)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        finally:
            self._fail_all(PipelineClosed("pipeline stopped"))
            for deadlines in self._deadlines.values():
                deadlines.close()

    @property
    def pending(self) -> int:
        """Records submitted and not yet resolved."""
        return self._reserved

    # --- submitters --------------------------------------------------------------------------

    async def submit(
        self,
        positions: Sequence[Position],
        events: Sequence[Event],
        *,
        process: bool = True,
        wait_s: float | None = None,
    ) -> None:
        """Queue records for the next flush; returns once they are durably stored.

        ``process=False``: not offered to the processing stage (what it derived itself).
        ``wait_s``: TimeoutError if they are not stored within it (the wait for room included),
        as under ``asyncio.timeout(wait_s)``, but on one timer for every submission given the
        same bound (gateway/deadlines.py) instead of a timer each: the per-message ingest path.

        Raises StorageUnavailable (nothing of it was stored, resend later), PipelineClosed, or
        whatever unexpected error the store raised for this submission. Waits while the queue
        is full. Cancelling the caller (or its wait timing out) does not withdraw records
        already queued: they are stored anyway, and a box resending them is counted as
        duplicates.
        """
        size = len(positions) + len(events)
        if self._closing or self._writer is None:
            raise PipelineClosed("pipeline is not running")
        if size == 0:
            return
        if process:  # derived records (process=False) come from stored ones: pseudonyms already
            positions, events = self._pseudonyms.records(positions, events)
        loop = asyncio.get_running_loop()
        deadlines = None if wait_s is None else self._deadlines_for(wait_s)
        began = loop.time()
        waited = await self._reserve(size, deadlines)
        if self._writer.done():  # stopped while we waited for room
            self._release(size)
            raise PipelineClosed("pipeline stopped")
        submission = _Submission(
            positions, events, size, loop.time(), loop.create_future(), process
        )
        self._queue.append(submission)
        self._queued += size
        self._wakeup.set()
        if wait_s is None or deadlines is None:
            await submission.future
        elif not waited:
            deadlines.watch(submission.future)
            await submission.future
        else:
            # Room had to be waited for (the queue was full): what is left of the bound gets
            # a timer of its own, as its deadline is out of line with those just watched.
            async with asyncio.timeout(max(0.0, wait_s - (loop.time() - began))):
                await submission.future

    def _deadlines_for(self, wait_s: float) -> Deadlines:
        deadlines = self._deadlines.get(wait_s)
        if deadlines is None:
            deadlines = self._deadlines[wait_s] = Deadlines(wait_s, "store wait")
        return deadlines

    async def _reserve(self, size: int, deadlines: Deadlines | None = None) -> bool:
        """Admit ``size`` records; whether room had to be waited for."""
        if not self._space_waiters and self._fits(size):
            self._reserved += size
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if deadlines is not None:
            deadlines.watch(waiter)
        entry = (size, waiter)
        self._space_waiters.append(entry)
        try:
            await waiter
        except BaseException:
            granted = waiter.done() and not waiter.cancelled() and waiter.exception() is None
            if granted:
                self._release(size)  # room was granted, but we will not use it
            raise
        finally:
            if entry in self._space_waiters:
                self._space_waiters.remove(entry)
        return True

    def _fits(self, size: int) -> bool:
        # A submission larger than the whole limit still goes through, alone.
        return self._reserved == 0 or self._reserved + size <= self._queue_limit

    def _release(self, size: int) -> None:
        self._reserved -= size
        while self._space_waiters:
            size_, waiter = self._space_waiters[0]
            if waiter.done():  # cancelled meanwhile
                self._space_waiters.popleft()
                continue
            if not self._fits(size_):
                break
            self._space_waiters.popleft()
            self._reserved += size_
            waiter.set_result(None)
        if self._closing:
            self._wakeup.set()

    def _fail_all(self, error: BaseException) -> None:
        for submission in self._queue:
            submission.resolve(error)
            self._reserved -= submission.size
        self._queue.clear()
        self._queued = 0
        while self._space_waiters:
            _, waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    # --- the writer --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                while not self._queue:
                    if self._closing and self._reserved == 0:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if not self._closing:
                    await self._linger()
                while self._storing >= FLUSHES_IN_FLIGHT:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if self._queue:  # unless a hand-over (`_stored`) took it meanwhile
                    self._start(self._take())
        finally:
            # Cancelled by stop() (or a bug): the flushes under way are given up with it.
            for task in self._flushing:
                task.cancel()
            await asyncio.gather(*self._flushing, return_exceptions=True)

    def _start(self, batch: list[_Submission]) -> None:
        self._storing += 1
        task = asyncio.create_task(self._flush_batch(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    def _stored(self) -> None:
        """A flush's store call returned: its place in FLUSHES_IN_FLIGHT is free."""
        self._storing -= 1
        self._wakeup.set()
        # A full batch waiting is handed over at once, not by `_run`: the new task's first step
        # then comes before the wake-ups of the submitters about to be answered, so the store
        # has it while the loop sends their ACKs. Through `_run` it came three loop turns later,
        # behind all of them: bench/bench_ingest.py's writer thread sat idle 5-10 ms between
        # commits, and both flushes in flight, handed over together, shared one commit.
        if self._queue and (self._queued >= self._batch_size or self._closing):
            self._start(self._take())

    async def _flush_batch(self, batch: list[_Submission]) -> None:
        stored = False

        def on_stored() -> None:
            nonlocal stored
            stored = True
            self._stored()

        try:
            await self._flush(batch, on_stored)
        except asyncio.CancelledError:
            # stop() gave up waiting: nothing of this batch is known to be stored.
            for submission in batch:
                submission.resolve(PipelineClosed("pipeline stopped while storing"))
            raise
        finally:
            if not stored:
                self._storing -= 1
                self._wakeup.set()
            self._release(sum(s.size for s in batch))

    async def _linger(self) -> None:
        """Wait until a batch is full or its oldest record has waited max_delay_ms."""
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].enqueued + self._max_delay_s
        while self._queued < self._batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Submission]:
        batch = [self._queue.popleft()]
        total = batch[0].size
        while self._queue and total + self._queue[0].size <= self._max_batch_size:
            submission = self._queue.popleft()
            batch.append(submission)
            total += submission.size
        self._queued -= total
        return batch

    async def _flush(
        self, batch: list[_Submission], on_stored: Callable[[], None] | None = None
    ) -> None:
        """Store ``batch`` and answer its submitters; ``on_stored`` is called once the store
        has succeeded, before they are answered."""
        positions = [p for s in batch for p in s.positions]
        events = [e for s in batch for e in s.events]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._store_timeout_s):
                result = await self._telemetry.store(positions, events)
        except (StorageUnavailable, TimeoutError) as exc:
            if isinstance(exc, StorageUnavailable):
                error: Exception = exc
            else:
                error = StorageUnavailable(f"store did not answer in {self._store_timeout_s} s")
            log.warning(
                "ingest flush of %d records failed: %s", len(positions) + len(events), error
            )
        except Exception as exc:
            error = exc
            if len(batch) == 1:
                log.exception("ingest flush of one submission failed; it is refused alone")
        else:
            self._timed(started)
            self._count(result, len(positions) + len(events))
            if on_stored is not None:
                on_stored()
            for submission in batch:
                submission.resolve(None)
            self._offer(batch, positions, events, result)
            return
        self._timed(started)
        self.metrics.storage_errors += 1
        if len(batch) > 1 and not isinstance(error, StorageUnavailable):
            log.error("ingest flush failed (%r); retrying it in halves", error)
            middle = len(batch) // 2
            await self._flush(batch[:middle])
            await self._flush(batch[middle:])
            return
        for submission in batch:
            submission.resolve(error)

    def _offer(
        self,
        batch: list[_Submission],
        positions: list[Position],
        events: list[Event],
        result: StoreResult,
    ) -> None:
        stage = self.processing
        if stage is None or not stage.handlers:
            return
        if all(s.process for s in batch):
            stage.offer(positions, events, result)
            return
        kept = [s for s in batch if s.process]
        stage.offer(
            [p for s in kept for p in s.positions], [e for s in kept for e in s.events], result
        )

    def _timed(self, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.store_seconds += seconds
        self.metrics.store_latency.observe(seconds)

    def _count(self, result: StoreResult, size: int) -> None:
        m = self.metrics
        m.flushes += 1
        m.flush_size.observe(size)
        m.records["stored"] += result.positions_inserted + result.events_inserted
        m.records["duplicate"] += result.positions_duplicate + result.events_duplicate
