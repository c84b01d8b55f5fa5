"""Storage: the repository interface, its models and errors, and the two engines behind it.

Callers depend on `storage.repository` (the `Store` Protocol and its parts), `storage.models`
and `storage.errors`; `open_store` picks the engine from the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from storage.errors import Conflict, InvalidCursor, NotFound, StorageError, StorageUnavailable
from storage.pseudonyms import BadgePseudonyms
from storage.repository import IngestStore, Store
from storage.secrets import SecretBox

# The embedded engine's file inside the data directory.
SQLITE_FILENAME = "gp8.sqlite3"
SqliteWriter = Literal["thread", "process"]


def open_store(
    *,
    mongo_url: str | None,
    mongo_db: str,
    data_dir: Path,
    secrets: SecretBox | None = None,
    pseudonyms: BadgePseudonyms | None = None,
    migrate: bool = False,
    sqlite_writer: SqliteWriter = "thread",
) -> Store:
    """The configured engine, not started yet (``await store.start()`` connects).

    MongoDB when ``mongo_url`` is set, else SQLite in ``data_dir`` (created if missing).
    ``secrets`` seals secrets at rest (default: the development key); ``migrate``: `start()`
    upgrades an older schema instead of refusing it (``gp8 migrate``). ``pseudonyms``: the
    driver key, for the migration step that pseudonymises badges stored before it.
    ``sqlite_writer``: where SQLite's writes run, a thread of this process or a process of
    their own (storage/sqlite/writer_process.py).
    """
    if mongo_url is None:
        from storage.sqlite import SqliteStore

        data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteStore(
            data_dir / SQLITE_FILENAME,
            secrets=secrets,
            pseudonyms=pseudonyms,
            migrate=migrate,
            writer_process=sqlite_writer == "process",
        )
    from storage.mongo import MongoStore

    return MongoStore.from_url(
        mongo_url, mongo_db, secrets=secrets, pseudonyms=pseudonyms, migrate=migrate
    )


__all__ = [
    "SQLITE_FILENAME",
    "Conflict",
    "IngestStore",
    "InvalidCursor",
    "NotFound",
    "SqliteWriter",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "open_store",
]
