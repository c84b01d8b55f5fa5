"""Backup and restore of the SQLite engine's file (docs/backups.md), safe while gp8 runs.

The copy uses SQLite's online backup API (`sqlite3.Connection.backup`) in one step: it reads
the whole database inside one read transaction, which in WAL mode neither blocks gp8's writer
nor sees any of its later commits, so the copy is a consistent snapshot that includes every
transaction committed (and so acknowledged to a box) before it began, WAL frames included.
Copying the file with cp could tear a page mid-write and miss what is still in the -wal file.

Both directions write to a temporary file beside the target and rename it into place, so a
crash leaves the old target or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage.errors import StorageError
from storage.sqlite.migrations import SCHEMA_VERSION, stored_version
from storage.sqlite.schema import BUSY_TIMEOUT_MS


class BackupError(StorageError):
    """A backup or restore that cannot be done (target exists, not a gp8 database, ...)."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    bytes: int
    schema_version: int


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: sqlite3.Connection, target: Path) -> int:
    """Copy into ``target`` (via a temporary file); the copy's schema version."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    dest = _connect(partial)
    try:
        source.backup(dest)  # pages=-1: all in one step, one snapshot
        # A self-contained file: no -wal beside it to forget (gp8 turns WAL back on at open).
        dest.execute("PRAGMA journal_mode = DELETE")
        (check,) = dest.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise BackupError(f"the copy fails SQLite's check: {check}")
        version = stored_version(dest)
    except BaseException:
        dest.close()
        partial.unlink(missing_ok=True)
        raise
    dest.close()
    _fsync(partial)
    os.replace(partial, target)
    _fsync(target.parent)  # the rename itself survives a power cut
    return version


def backup(database: Path, dest: Path, *, overwrite: bool = False) -> BackupInfo:
    """Copy the live database ``database`` to the file ``dest``."""
    if not database.is_file():
        raise BackupError(f"no database at {database}")
    if dest.exists() and not overwrite:
        raise BackupError(f"{dest} exists (--force to overwrite it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Read only: the backup must never change the live file, whatever happens.
    source = sqlite3.connect(
        f"{database.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    try:
        version = _copy(source, dest)
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {database} failed: {exc}") from exc
    finally:
        source.close()
    return BackupInfo(dest, dest.stat().st_size, version)


def restore(src: Path, database: Path, *, overwrite: bool = False) -> BackupInfo:
    """Restore the backup ``src`` as ``database``; gp8 must not be running on it.

    Refused when the data directory already holds anything (unless ``overwrite``), and when
    ``src`` is not a gp8 database this gp8 can serve or migrate (a newer schema).
    """
    if not src.is_file():
        raise BackupError(f"no backup at {src}")
    data_dir = database.parent
    if data_dir.exists() and any(data_dir.iterdir()) and not overwrite:
        raise BackupError(f"{data_dir} is not empty (--force to replace its database)")
    try:
        source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {src}: {exc}") from exc
    try:
        try:
            version = stored_version(source)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{src} is not an SQLite database: {exc}") from exc
        if version == 0:
            raise BackupError(f"{src} holds no gp8 database")
        if version > SCHEMA_VERSION:
            raise BackupError(
                f"{src} has schema version {version}, newer than this gp8 supports"
                f" ({SCHEMA_VERSION})"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        # The old database's WAL and shared-memory files belong to it, not to the restored one.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                database.with_name(database.name + suffix).unlink()
        version = _copy(source, database)
    except sqlite3.Error as exc:
        raise BackupError(f"restore of {src} failed: {exc}") from exc
    finally:
        source.close()
    return BackupInfo(database, database.stat().st_size, version)
