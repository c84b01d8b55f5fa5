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
write is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, TypeVar

from storage.errors import StorageUnavailable
from storage.sqlite import schema
from storage.sqlite.errors import translate_errors

P = ParamSpec("P")
T = TypeVar("T")
State = Literal["new", "open", "closed"]

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

    def connect(self, path: Path, *, writer: bool, busy_timeout_ms: int) -> None:
        # isolation_level=None: the sqlite3 module must not open transactions behind our back;
        # the writer issues BEGIN IMMEDIATE/COMMIT itself, the reader runs in autocommit.
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        try:
            schema.configure(conn, writer=writer, busy_timeout_ms=busy_timeout_ms)
            if writer:
                schema.create(conn)
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
    def __init__(self, path: Path, *, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._writer = _Worker("gp8-sqlite-writer")
        self._reader = _Worker("gp8-sqlite-reader")
        self._state: State = "new"  # -> "open" -> "closed"
        self._open_lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect both threads and create the schema; idempotent."""
        async with self._open_lock:
            if self._state == "open":
                return
            if self._state == "closed":
                raise StorageUnavailable("sqlite store is closed")
            try:
                with translate_errors():
                    # The writer first: it creates the file, switches it to WAL, makes the schema.
                    for worker, writer in ((self._writer, True), (self._reader, False)):
                        connect = functools.partial(
                            worker.connect,
                            self.path,
                            writer=writer,
                            busy_timeout_ms=self.busy_timeout_ms,
                        )
                        await worker.run(connect)
            except BaseException:
                # Leave nothing half open, so start() can simply be called again.
                for worker in (self._writer, self._reader):
                    await worker.run(worker.disconnect)
                raise
            self._state = "open"

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"  # refuse new work at once; queued work still completes
        for worker in (self._writer, self._reader):
            # Queued behind work already submitted, so an in-flight store() commits first.
            await worker.run(worker.disconnect)
            worker.shutdown()

    async def write(self, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` as one transaction on the writer thread."""
        self._check_open()
        with translate_errors():
            return await self._writer.run(functools.partial(self._transaction, fn, *args, **kwargs))

    async def read(self, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` on the reader thread (autocommit: each statement one snapshot)."""
        self._check_open()
        with translate_errors():
            return await self._reader.run(
                functools.partial(self._call, self._reader, fn, *args, **kwargs)
            )

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageUnavailable(f"sqlite store is {self._state}, not open")

    def _transaction(self, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        conn = self._writer.conn
        # IMMEDIATE takes the write lock now, so a transaction never fails half way to upgrade
        # a read lock when another process (a backup) holds the database.
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args, **kwargs)
            conn.execute("COMMIT")
        except BaseException:
            # After some errors (disk full, I/O) SQLite has already rolled back by itself.
            if conn.in_transaction:
                # Keep the original error; a failing ROLLBACK tells nothing more.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _call(worker: _Worker, fn: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return fn(worker.conn, *args, **kwargs)
