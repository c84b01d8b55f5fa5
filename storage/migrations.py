"""Versioned schemas, what both engines share: the result of opening a database and the errors
of a version this gp8 cannot serve (docs/storage.md, "Schema versions and migrations").

Each engine numbers its own versions (SQLite: ``PRAGMA user_version``, storage/sqlite/
migrations.py; MongoDB: a version document, storage/mongo/migrations.py). Version 1 is the
schema of the first release, which stamped no migrations. A store's `start()` creates a fresh
database at the current version, serves one at the current version, and refuses any other;
``migrate=True`` (``gp8 migrate``) applies the missing steps first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.errors import StorageError


class SchemaVersionError(StorageError):
    """The database's schema is not the one this gp8 serves."""

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class SchemaTooNew(SchemaVersionError):
    """Written by a newer gp8: refused rather than misread."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than this gp8 supports ({supported}):"
            " run a gp8 release that supports it, or restore a backup made before the upgrade",
            found=found,
            supported=supported,
        )


class SchemaTooOld(SchemaVersionError):
    """Written by an older gp8: `gp8 migrate` upgrades it."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"database schema version {found} is older than this gp8's ({supported}):"
            " back it up, then run `gp8 migrate` (docs/backups.md)",
            found=found,
            supported=supported,
        )


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What opening the database found and did."""

    engine: str
    found: int  # 0: a fresh, empty database
    version: int  # the version it is at now
    applied: tuple[str, ...] = field(default=())  # the steps run, as "<version>: <what>"

    @property
    def created(self) -> bool:
        return self.found == 0


def check_version(found: int, supported: int, *, migrate: bool) -> None:
    """Refuse a version this gp8 cannot serve as it is (0, a fresh database, is always fine)."""
    if found > supported:
        raise SchemaTooNew(found, supported)
    if 0 < found < supported and not migrate:
        raise SchemaTooOld(found, supported)
