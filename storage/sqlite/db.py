"""Runs blocking sqlite3 work off the event loop: one writer thread, one reader thread.

Why not aiosqlite: it ships every statement to its thread separately, so a transaction spans
several awaits and statements of other coroutines can interleave on the same connection (an API
write landing inside an ingest transaction, or a read seeing it half done); we would need an
asyncio lock around every transaction on top. Instead each unit of work here is one plain
function run on the connection's own thread: for the writer, one function is one transaction
(BEGIN IMMEDIATE ... COMMIT), so it is atomic by construction, costs one thread hop however many
statements it runs, and its per-row work (building parameter tuples) stays off the event loop.

SQLite allows one writer at a time anyway, so a single writer thread loses nothing and queues
writers in order; WAL lets the separate reader connection read the last committed state while a
write is in progress. With ``writer_process`` (`gp8 serve`'s default) the writer thread forms
the groups but the writes run in a process of their own, beside this process's Python rather
than taking turns with it (storage/sqlite/writer_process.py); two groups at a time are handed
over, one committing while the next travels.

Group commit: a commit costs an fsync (synchronous=FULL), far more than the statements of a
typical API write. So the writes queued while the writer thread is busy are run together, each
under its own SAVEPOINT inside one BEGIN IMMEDIATE ... COMMIT (a write alone needs none): a
unit that raises is rolled back alone and its caller gets the error, the others commit
together, and every caller is answered only after that COMMIT (durability per caller
unchanged). Concurrent API requests, command transitions and ingest batches thus share fsyncs
instead of queueing one fsync each.

Reads are queued the same way, without the transaction: the reader thread runs what is queued
in order, one thread wake-up per burst rather than per read. Answers reach the callers' loop
through a mailbox (`_Mailbox`) that wakes the loop only when no wake-up is pending already:
each caller is answered as soon as its work is done, and while the loop is busy, the answers
that arrive meanwhile ride along. A thread hop costs a queue put on one side and a self-pipe
write on the other, each a syscall that, on a busy machine, can cost a scheduling round; an
API request makes several reads, a command more.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar

from storage.errors import StorageUnavailable
from storage.sqlite import schema
from storage.sqlite.errors import translate_errors
from storage.sqlite.group import Call, Outcome, commit_group

if TYPE_CHECKING:
    from storage.sqlite.writer_process import Sent, WriterProcess

P = ParamSpec("P")
T = TypeVar("T")
State = Literal["new", "open", "closed"]
# Writes per group commit: bounds how long the first of a group waits behind the others.
MAX_GROUP = 256
# Groups handed to the writer process at once: one committing, the next on its way.
PIPELINE_DEPTH = 2


Work = Callable[Concatenate[sqlite3.Connection, P], T]


class _Worker:
    """One connection, used only from its own thread."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None  # touched only on the pool's thread

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        # A cancelled caller does not stop the work in the thread: a store() whose caller gave
        # up still commits, and the box's resend is then counted as a duplicate.
        return await loop.run_in_executor(self._pool, fn)

    def submit(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` on the thread without waiting for it (it answers its callers itself)."""
        self._pool.submit(fn)

    def connect(
        self,
        path: Path,
        *,
        writer: bool,
        busy_timeout_ms: int,
        prepare: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        # isolation_level=None: the sqlite3 module must not open transactions behind our back;
        # the writer issues BEGIN IMMEDIATE/COMMIT itself, the reader runs in autocommit.
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        try:
            schema.configure(conn, writer=writer, busy_timeout_ms=busy_timeout_ms)
            if prepare is not None:
                prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageUnavailable("sqlite store is not open")
        return self._conn

    def disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class Database:
    """``prepare`` runs on the writer connection when it opens, before anything else: it
    checks (and creates or migrates) the schema, storage/sqlite/migrations.py."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int,
        prepare: Callable[[sqlite3.Connection], None] | None = None,
        writer_process: bool = False,
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._prepare = prepare
        self._writer = _Worker("gp8-sqlite-writer")
        # writer_process: the writes run in a process of its own, the writer thread only
        # hands them over (storage/sqlite/writer_process.py).
        self.writer_process = writer_process
        self._remote: WriterProcess | None = None  # its handle: used on the writer thread only
        self._in_flight: deque[tuple[list[_Write], Sent]] = deque()  # groups in the process
        self._reader = _Worker("gp8-sqlite-reader")
        self._state: State = "new"  # -> "open" -> "closed"
        self._open_lock = asyncio.Lock()
        # Writes waiting for the next group commit; reads waiting for the reader thread.
        self._writes = _Queue(
            self._writer, self._commit_group, MAX_GROUP, finish=self._settle_remote
        )
        self._reads = _Queue(self._reader, self._run_reads, 1)
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = (
            weakref.WeakKeyDictionary()
        )

    async def open(self) -> None:
        """Connect both threads and create the schema; idempotent."""
        async with self._open_lock:
            if self._state == "open":
                return
            if self._state == "closed":
                raise StorageUnavailable("sqlite store is closed")
            try:
                with translate_errors():
                    if self.writer_process:
                        # Started first, so that it imports gp8's storage code (most of its
                        # start-up) while the schema is checked here; it opens the file after.
                        await self._writer.run(self._spawn_remote)
                    # The writer first: it creates the file, switches it to WAL, checks the
                    # schema.
                    for worker, writer in ((self._writer, True), (self._reader, False)):
                        connect = functools.partial(
                            worker.connect,
                            self.path,
                            writer=writer,
                            busy_timeout_ms=self.busy_timeout_ms,
                            prepare=self._prepare if writer else None,
                        )
                        await worker.run(connect)
                    if self.writer_process:
                        # The schema checked (or made) here, the writes go to the process.
                        await self._writer.run(self._start_remote)
            except BaseException:
                # Leave nothing half open, so start() can simply be called again.
                for worker in (self._writer, self._reader):
                    await worker.run(worker.disconnect)
                await self._writer.run(self._stop_remote)
                raise
            self._state = "open"

    def _spawn_remote(self) -> None:
        from storage.sqlite.writer_process import WriterProcess  # it imports this package

        self._remote = WriterProcess(self.path, busy_timeout_ms=self.busy_timeout_ms)
        self._remote.spawn()

    def _start_remote(self) -> None:
        # On the writer thread: its own connection closed first, so that one connection writes.
        assert self._remote is not None
        self._writer.disconnect()
        self._remote.start()

    @property
    def writer_exits(self) -> int:
        """How many times the writer process ended unexpectedly (0 with the writer thread)."""
        remote = self._remote
        return 0 if remote is None else remote.unexpected_exits

    def _stop_remote(self) -> None:
        if self._remote is not None:
            self._remote.stop()
            self._remote = None

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"  # refuse new work at once; queued work still completes
        for worker in (self._writer, self._reader):
            # Queued behind work already submitted, so an in-flight store() commits first.
            await worker.run(worker.disconnect)
            if worker is self._writer:
                await worker.run(self._stop_remote)
            worker.shutdown()

    async def write(self, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` atomically on the writer thread (or in the writer process):
        alone or with the writes queued beside it in one transaction (group commit), answered
        once that is committed."""
        future = self._queue(self._writes, fn, *args, **kwargs)
        with translate_errors():
            # A cancelled caller does not stop the work: it still commits (see _Worker.run).
            return await future

    async def read(self, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` on the reader thread (autocommit: each statement one snapshot)."""
        future = self._queue(self._reads, fn, *args, **kwargs)
        with translate_errors():
            # A cancelled caller does not stop the read; its answer is dropped.
            return await future

    def _queue(
        self, queue: _Queue, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """``fn(conn, ...)`` queued for ``queue``'s thread; its answer, to come."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        queue.put(_Write((fn, args, kwargs), future, self._mailbox(loop)))
        return future

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        box = self._mailboxes.get(loop)
        if box is None:
            box = self._mailboxes[loop] = _Mailbox(loop)
        return box

    def _run_reads(self, reads: list[_Write]) -> None:
        """On the reader thread: run ``reads`` in order, answering each as soon as it is done
        (a long read holds back none before it)."""
        for read in reads:
            answer: Answer
            try:
                fn, args, kwargs = read.call
                answer = (read, fn(self._reader.conn, *args, **kwargs), None)
            except BaseException as exc:  # every caller is answered, whatever happens
                answer = (read, None, exc)
            _answer([answer])

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageUnavailable(f"sqlite store is {self._state}, not open")

    def _commit_group(self, group: list[_Write]) -> None:
        calls = [write.call for write in group]
        if self._remote is not None:
            try:
                sent = self._remote.send(calls)
            except BaseException as exc:
                _answer_group(group, exc)
                return
            self._in_flight.append((group, sent))
            # One group runs in the process while the next travels to it; no more, so that a
            # group forms from what queued meanwhile, as on the thread.
            if len(self._in_flight) >= PIPELINE_DEPTH:
                self._settle_remote()
            return
        try:
            outcomes = commit_group(self._writer.conn, calls)
        except BaseException as exc:
            _answer_group(group, exc)
            return
        _answer_group(group, outcomes)

    def _settle_remote(self) -> bool:
        """On the writer thread: answer the oldest group in the writer process once it is
        committed (or failed); False if none is in flight."""
        if not self._in_flight:
            return False
        group, sent = self._in_flight.popleft()
        assert self._remote is not None
        try:
            outcomes = self._remote.receive(sent)
        except BaseException as exc:
            _answer_group(group, exc)
            return True
        _answer_group(group, outcomes)
        return True


Answer = tuple["_Write", object, BaseException | None]


class _Queue:
    """Work waiting for one storage thread, shared by the event loops and that thread. While
    anything is queued one drain runs on the thread, handing ``run`` up to ``batch`` items at a
    time (the writer: a group commit; the reader: one read) until none is left."""

    def __init__(
        self,
        worker: _Worker,
        run: Callable[[list[_Write]], None],
        batch: int,
        *,
        finish: Callable[[], bool] | None = None,
    ) -> None:
        self._worker = worker
        self._run = run
        self._batch = batch
        self._finish = finish
        self._items: deque[_Write] = deque()
        self._lock = threading.Lock()
        self._draining = False  # a drain is queued on, or running on, the thread

    def put(self, item: _Write) -> None:
        with self._lock:
            self._items.append(item)
            start = not self._draining
            self._draining = True
        if start:
            self._worker.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                group = [self._items.popleft() for _ in range(min(self._batch, len(self._items)))]
            if group:
                self._run(group)
                continue
            # Nothing queued: what ``run`` left in flight is waited for (``finish``, one unit
            # a call) before the drain ends; more may be queued meanwhile.
            if self._finish is not None and self._finish():
                continue
            with self._lock:
                if not self._items:
                    self._draining = False
                    return


def _answer_group(group: list[_Write], outcomes: list[Outcome] | BaseException) -> None:
    """A group commit's callers answered, each by its outcome; or every one by the error that
    failed the whole group, nothing of it committed (whatever the error: a caller left
    unanswered would wait forever, and so would the writes after it)."""
    if isinstance(outcomes, BaseException):
        _answer([(write, None, outcomes) for write in group])
    else:
        _answer([(write, r, e) for write, (r, e) in zip(group, outcomes, strict=True)])


def _answer(answers: list[Answer]) -> None:
    """From a storage thread: hand the answers to their callers' loops."""
    for answer in answers:
        answer[0].mailbox.post(answer)


class _Mailbox:
    """Answers from the storage threads to one event loop: the loop is woken (a self-pipe
    write and a loop turn) only when no wake-up is pending already."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._scheduled = False

    def post(self, answer: Answer) -> None:
        with self._lock:
            self._answers.append(answer)
            if self._scheduled:
                return  # the pending wake-up will deliver it too
            self._scheduled = True
        # RuntimeError: the loop is closed, nobody waits any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the loop: settle everything posted until now."""
        with self._lock:
            answers, self._answers = self._answers, []
            self._scheduled = False
        for write, result, error in answers:
            write.settle(result, error)


class _Write:
    """A write (or read) waiting for its thread, and the caller's future on the caller's loop."""

    __slots__ = ("call", "future", "mailbox")

    def __init__(self, call: Call, future: asyncio.Future[Any], mailbox: _Mailbox) -> None:
        self.call = call
        self.future = future
        self.mailbox = mailbox

    def settle(self, result: object, error: BaseException | None) -> None:
        """On the caller's loop: answer the caller (unless it is gone)."""
        if self.future.done():
            return  # the caller was cancelled; the work committed anyway
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)
