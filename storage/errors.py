"""Errors of the storage layer. Engines translate driver exceptions into these at one boundary
(storage/mongo/errors.py, storage/sqlite/errors.py); nothing above `storage/` sees a PyMongo or
sqlite3 exception."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage error."""


class NotFound(StorageError):
    """The record does not exist (or belongs to another fleet, which is the same to the caller)."""


class Conflict(StorageError):
    """A unique constraint was violated (duplicate VIN, IMEI, ...).

    ``fields`` names the constrained fields (``("fleet_id", "vin")``) when the engine reported
    them: the API words the conflict from them, since the driver's message (kept as the
    ``__cause__``) must never reach a client. Empty for a conflict raised with its own words.
    """

    def __init__(self, message: str = "", *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class StorageUnavailable(StorageError):
    """The database cannot be reached or did not answer in time; the operation may be retried."""


class InvalidCursor(StorageError):
    """A pagination cursor that this engine did not issue."""


class CursorExpired(StorageError):
    """A live-stream cursor older than what the stream still holds: the entries after it were
    pruned (the retention window passed), so resuming from it would silently skip some."""

    def __init__(self, cursor: int, horizon: int) -> None:
        super().__init__(f"stream cursor {cursor} is older than the oldest kept ({horizon})")
        self.cursor = cursor
        self.horizon = horizon

    def __reduce__(self) -> tuple[type[CursorExpired], tuple[int, int]]:
        # Pickled by its own arguments (the message is made from them), as the SQLite writer
        # process returns errors (storage/sqlite/writer_process.py).
        return type(self), (self.cursor, self.horizon)
