"""One group commit: many writes in one SQLite transaction, each under its own savepoint.

Apart from storage/sqlite/db.py so that the writer process (storage/sqlite/writer_process.py)
runs the very same code as the writer thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any

# A bool is not an exact int, so for every bool it binds sqlite3 looks for an adapter, and not
# finding one costs two failed attribute lookups (~0.45 µs). A position has six flags: that was
# ~2.7 µs per stored row on the writer thread, GIL held (a third of its Python time on ingest).
# With this adapter the lookup succeeds at once; what is stored is what sqlite3 stores without
# it, the integer 1 or 0 (the adapter registry is the module's: it applies to every connection).
sqlite3.register_adapter(bool, int)

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
Outcome = tuple[object, BaseException | None]


def commit_group(conn: sqlite3.Connection, calls: list[Call]) -> list[Outcome]:
    """Run each ``fn(conn, *args, **kwargs)`` of ``calls`` in one transaction: each call's
    result or error, once committed. A call that raises is rolled back alone (its savepoint);
    what fails the transaction itself (the COMMIT, a disk error) is raised, nothing committed.
    On the writer thread, or in the writer process (storage/sqlite/writer_process.py)."""
    # IMMEDIATE takes the write lock now, so a transaction never fails half way to upgrade a
    # read lock when another process (a backup) holds the database.
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[Outcome] = []
        if len(calls) == 1:
            # Alone in its transaction, a write needs no savepoint: if it raises, the ROLLBACK
            # below undoes it as ROLLBACK TO would, and its caller gets the error (two
            # statements fewer, the common case when the load is light).
            fn, args, kwargs = calls[0]
            outcomes.append((fn(conn, *args, **kwargs), None))
        else:
            for fn, args, kwargs in calls:
                conn.execute("SAVEPOINT gp8_write")
                try:
                    result = fn(conn, *args, **kwargs)
                except Exception as exc:
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back by itself (disk full, I/O):
                        # the writes before this one are gone too.
                        raise
                    conn.execute("ROLLBACK TO gp8_write")
                    conn.execute("RELEASE gp8_write")
                    outcomes.append((None, exc))
                    continue
                conn.execute("RELEASE gp8_write")
                outcomes.append((result, None))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            # Keep the original error; a failing ROLLBACK tells nothing more.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return outcomes
