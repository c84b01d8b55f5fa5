"""Numbered schema migrations of the SQLite engine, stamped in ``PRAGMA user_version``.

Version 1 is the schema of the first release (git 8ff05ce; frozen as
tests/storage/fixtures/sqlite_v1.sql). Each later change is one row of `MIGRATIONS`: a step
that takes a file from the version before to its own, run in one transaction with the stamp
(SQLite's DDL is transactional), so a crash leaves the file at one version or the next and a
second `gp8 migrate` resumes. A fresh file skips the steps: it is created whole by
`schema.create_current` at `SCHEMA_VERSION`.

To change the schema: change the DDL in schema.py (what a fresh file gets) and append a step
here that does the same to an existing file (e.g. `_add_column`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from storage.migrations import SchemaState, check_version
from storage.pseudonyms import BadgePseudonyms
from storage.secrets import SecretBox, device_context, webhook_context
from storage.sqlite import schema
from storage.sqlite.audit_chain import chain_existing

Step = Callable[[sqlite3.Connection, SecretBox], None]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int  # the version a file is at once this step ran
    what: str
    apply: Step


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return row.fetchone() is not None


def _ensure_column(conn: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    # Idempotent and tolerant of a missing table: a table the file lacks is created afterwards,
    # whole, by schema.create_current.
    if not _has_table(conn, table):
        return
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if column not in present:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _add_column(table: str, column: str, definition: str) -> Step:
    """A step adding a column (with the default old rows take): an older gp8 names its
    columns in every query, so it would never see the new one."""

    def step(conn: sqlite3.Connection, secrets: SecretBox) -> None:
        _ensure_column(conn, table, column, definition)

    return step


# Columns that files of the first release may still lack: before versioned migrations, they
# were added at start (ALTER TABLE when missing) without changing the stamp 1.
_V1_LATE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("devices", "protocol", "TEXT NOT NULL DEFAULT 'gp8'"),
)

# (table, context of a row's secret): every column of a secret gp8 must be able to read back.
SEALED_COLUMNS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("devices", device_context),
    ("webhooks", webhook_context),
)


def _seal_clear_secrets(conn: sqlite3.Connection, secrets: SecretBox) -> None:
    # Up to version 1 every secret was stored in clear.
    for table, context in SEALED_COLUMNS:
        if not _has_table(conn, table):
            continue
        found = conn.execute(f"SELECT id, secret FROM {table}").fetchall()
        conn.executemany(
            f"UPDATE {table} SET secret = ? WHERE id = ?",
            [(secrets.seal(secret, context(row_id)), row_id) for row_id, secret in found],
        )


def reseal_secrets(conn: sqlite3.Connection, secrets: SecretBox) -> dict[str, int]:
    """Seal again with the current key every secret sealed with an older one (one
    transaction: an unknown key id fails it whole). The count re-sealed, by table."""
    counts: dict[str, int] = {}
    for table, context in SEALED_COLUMNS:
        found = conn.execute(f"SELECT id, secret FROM {table}").fetchall()
        updates: list[tuple[str, str]] = []
        for row_id, stored in found:
            sealed = secrets.reseal(stored, context(row_id))
            if sealed is not None:
                updates.append((sealed, row_id))
        conn.executemany(f"UPDATE {table} SET secret = ? WHERE id = ?", updates)
        counts[table] = len(updates)
    return counts


def _connection_order(conn: sqlite3.Connection, secrets: SecretBox) -> None:
    # Old rows keep version 0, which any versioned observation outranks. The counters table is
    # new: schema.create_current adds it after the steps.
    _ensure_column(conn, "connections", "version", "INTEGER NOT NULL DEFAULT 0")
    _ensure_column(conn, "connections", "seen_ms", "INTEGER")


def _chain_and_key_owners(conn: sqlite3.Connection, secrets: SecretBox) -> None:
    # Existing keys get the unknown owner address "" (docs/security.md, "Key owners").
    _ensure_column(conn, "api_keys", "email", "TEXT NOT NULL DEFAULT ''")
    _ensure_column(conn, "api_keys", "last_used_ms", "INTEGER")
    chain_existing(conn)


def _retention_tables(conn: sqlite3.Connection, secrets: SecretBox) -> None:
    # Only new tables (storage/sqlite/retention_schema.py): schema.create_current adds them
    # after the steps; the step exists so that the stamp says a file has them.
    return None


# The SQL function of a badge's pseudonym under the store's driver key (storage/pseudonyms.py),
# registered on the connection by `open_schema` for the steps.
PSEUDONYM_FUNCTION = "gp8_badge_pseudonym"


def _pseudonymise_badges(conn: sqlite3.Connection, secrets: SecretBox) -> None:
    # Badges stored before version 8 are badge numbers: each becomes its pseudonym under the
    # store's driver key, in the positions, the events' copies and the badge policies. One
    # transaction with the stamp 8, which is what says "pseudonyms": never hashed twice, and a
    # crash leaves every badge as it was. Stream blocks and queued webhook payloads keep what
    # they copied until their own retention drops them (minutes to days; docs/privacy.md).
    # The JSON columns are read as text (what every SQLite version's JSON functions accept);
    # a value that is no JSON holds no badge and stays as it is (CASE: evaluated lazily).
    fn = PSEUDONYM_FUNCTION
    if _has_table(conn, "positions"):
        conn.execute(
            f"UPDATE positions SET driver_badge = {fn}(driver_badge) WHERE driver_badge IS NOT NULL"
        )
    if _has_table(conn, "events"):
        path, doc = "'$.driver_badge'", "CAST(position AS TEXT)"
        conn.execute(
            f"UPDATE events SET position = json_set({doc}, {path},"
            f" {fn}(json_extract({doc}, {path})))"
            f" WHERE CASE WHEN json_valid({doc}) THEN json_extract({doc}, {path}) IS NOT NULL END"
        )
    if _has_table(conn, "tracking_policies"):
        path, doc = "'$.badges'", "CAST(tracking_policies.data AS TEXT)"
        hashed = (
            f"SELECT json_group_array(p) FROM (SELECT {fn}(value) AS p"
            f" FROM json_each({doc}, {path}) ORDER BY p)"
        )
        conn.execute(
            f"UPDATE tracking_policies SET data = json_set({doc}, {path}, json(({hashed})))"
            f" WHERE CASE WHEN json_valid({doc}) THEN json_array_length({doc}, {path}) > 0 END"
        )


def _map_index(conn: sqlite3.Connection, secrets: SecretBox) -> None:
    # The covering index of the map's bbox query replaces the fleet index, whose every use its
    # fleet_id prefix serves (schema.py says why).
    conn.execute("DROP INDEX IF EXISTS last_positions_by_fleet")
    if _has_table(conn, "last_positions"):
        conn.execute(schema.LAST_POSITIONS_AREA_INDEX)


def _vehicle_names_index(conn: sqlite3.Connection, secrets: SecretBox) -> None:
    if _has_table(conn, "vehicles"):
        conn.execute(schema.VEHICLE_NAMES_INDEX)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "seal the device and webhook secrets (storage/secrets.py)", _seal_clear_secrets),
    Migration(3, "positions.io: raw IO elements", _add_column("positions", "io", "TEXT")),
    Migration(4, "connections: version and seen_ms (several processes)", _connection_order),
    Migration(5, "audit hash chains; API keys' owner email and last use", _chain_and_key_owners),
    Migration(6, "retention, exports and offboarding tables (docs/gdpr.md)", _retention_tables),
    Migration(7, "privacy and drivers tables (docs/privacy.md)", _retention_tables),
    Migration(
        8, "driver badges stored as pseudonyms (storage/pseudonyms.py)", _pseudonymise_badges
    ),
    Migration(9, "last_positions: the map's covering index (bbox query)", _map_index),
    Migration(10, "vehicles: the map's index of plates and labels", _vehicle_names_index),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def stored_version(conn: sqlite3.Connection) -> int:
    """The file's version: 0 when it is empty (fresh)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == 0 and conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        return 1  # tables but no stamp: a build of the first release that did not stamp
    return int(version)


def open_schema(
    conn: sqlite3.Connection,
    secrets: SecretBox,
    *,
    migrate: bool,
    badges: BadgePseudonyms | None = None,
) -> SchemaState:
    """Make the file servable on the writer connection (autocommit), or refuse it.

    Fresh: created at `SCHEMA_VERSION`. Current: left alone. Older: migrated when ``migrate``,
    else SchemaTooOld. Newer: SchemaTooNew, always. ``badges``: the driver key, for the step
    that pseudonymises stored badges (default: the development key).
    """
    found = stored_version(conn)
    check_version(found, SCHEMA_VERSION, migrate=migrate)
    if found == SCHEMA_VERSION:
        return SchemaState("sqlite", found, found)
    if found == 0:
        schema.create_current(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return SchemaState("sqlite", 0, SCHEMA_VERSION)
    applied: list[str] = []
    pseudonym = (badges or BadgePseudonyms.development()).of
    conn.create_function(PSEUDONYM_FUNCTION, 1, pseudonym, deterministic=True)
    for table, column, definition in _V1_LATE_COLUMNS:
        _ensure_column(conn, table, column, definition)
    for migration in MIGRATIONS:
        if migration.version <= found:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            migration.apply(conn, secrets)
            conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(f"{migration.version}: {migration.what}")
    # Tables and indexes new since the file's version: CREATE ... IF NOT EXISTS.
    schema.create_current(conn)
    return SchemaState("sqlite", found, SCHEMA_VERSION, tuple(applied))
