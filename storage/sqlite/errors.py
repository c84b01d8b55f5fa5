"""The one place where sqlite3 exceptions become `storage.errors` (like httpx maps httpcore's).

Decided by the SQLite result code, not the message text: the primary code (the low byte of the
extended code) says whether the database is unreachable for now or the request itself was wrong.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from storage.errors import Conflict, StorageError, StorageUnavailable

# Primary result codes (https://sqlite.org/rescode.html) that mean "try again later": another
# process holds a lock, or the disk/file is failing or full.
_UNAVAILABLE_CODES = frozenset(
    {
        5,  # SQLITE_BUSY: "database is locked" after busy_timeout
        6,  # SQLITE_LOCKED
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        8,  # SQLITE_READONLY: the file or its directory lost write permission
    }
)


def storage_error(exc: sqlite3.Error) -> StorageError:
    """The storage error for a sqlite3 exception."""
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict("conflicts with an existing record", fields=_constrained_fields(str(exc)))
    if isinstance(exc, sqlite3.ProgrammingError):
        # "Cannot operate on a closed database": the store was closed under the caller.
        return StorageUnavailable(str(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _UNAVAILABLE_CODES:
        return StorageUnavailable(str(exc))
    return StorageError(str(exc))


# SQLite names the columns only in the message: "UNIQUE constraint failed: vehicles.fleet_id,
# vehicles.vin". Read once here so nothing above sees the text.
_UNIQUE_COLUMNS = re.compile(r"UNIQUE constraint failed: (.+)$")


def _constrained_fields(message: str) -> tuple[str, ...]:
    match = _UNIQUE_COLUMNS.search(message)
    if match is None:
        return ()
    return tuple(column.strip().rpartition(".")[2] for column in match.group(1).split(","))


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise storage_error(exc) from exc
