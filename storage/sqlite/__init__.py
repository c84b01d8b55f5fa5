"""The SQLite engine: the embedded default, for one gateway and API process on one machine."""

from __future__ import annotations

from storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
