"""The one place where PyMongo exceptions become `storage.errors` (like httpx maps httpcore's)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    WriteConcernError,
)

from storage.errors import Conflict, StorageError, StorageUnavailable

DUPLICATE_KEY = 11000

# Most specific first. ConnectionFailure covers AutoReconnect, NetworkTimeout,
# ServerSelectionTimeoutError, NotPrimaryError and WaitQueueTimeoutError: the server could not
# be reached or lost its primary, so the operation may be retried. A write concern error (also
# WTimeoutError) means the write was not confirmed by a majority: retrying is how the caller gets
# it confirmed, and every write of ours is safe to repeat.
_MAPPING: tuple[tuple[type[PyMongoError], type[StorageError]], ...] = (
    (DuplicateKeyError, Conflict),
    (ConnectionFailure, StorageUnavailable),
    (WriteConcernError, StorageUnavailable),
    (ExecutionTimeout, StorageUnavailable),
)


def storage_error(exc: PyMongoError) -> StorageError:
    """The storage error for a PyMongo exception."""
    if isinstance(exc, BulkWriteError):
        return _bulk_error(exc)
    if exc.timeout:  # client-side operation timeout (pymongo.timeout), whatever its class
        return StorageUnavailable(str(exc))
    if isinstance(exc, DuplicateKeyError):
        return _duplicate(exc.details)
    for driver_error, storage_error_type in _MAPPING:
        if isinstance(exc, driver_error):
            return storage_error_type(str(exc))
    return StorageError(str(exc))


def _bulk_error(exc: BulkWriteError) -> StorageError:
    details = exc.details
    write_errors = details.get("writeErrors") or []
    if details.get("writeConcernErrors") or exc.timeout:
        return StorageUnavailable(str(exc))
    if write_errors and all(e.get("code") == DUPLICATE_KEY for e in write_errors):
        return _duplicate(write_errors[0])
    return StorageError(str(exc))


def _duplicate(details: Mapping[str, Any] | None) -> Conflict:
    # The server reports the index's fields as keyPattern; its message (with the values) stays
    # in the cause, out of what a client may see.
    pattern = (details or {}).get("keyPattern") or {}
    return Conflict(
        "conflicts with an existing record", fields=tuple(str(field) for field in pattern)
    )


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except PyMongoError as exc:
        raise storage_error(exc) from exc
