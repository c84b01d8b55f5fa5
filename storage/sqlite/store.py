"""`SqliteStore`: the embedded default engine, one database file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.migrations import SchemaState
from storage.pseudonyms import BadgePseudonyms
from storage.repository import (
    AccessLogRepo,
    AlertRepo,
    AlertRuleRepo,
    AuditRepo,
    CommandRepo,
    CounterRepo,
    DeviceRepo,
    DriverRepo,
    ErasureRepo,
    ExportRepo,
    FleetRepo,
    GeofenceRepo,
    GuardRepo,
    ImportRepo,
    KeyRepo,
    PolicyRepo,
    PrivacyRepo,
    RetentionRepo,
    StreamRepo,
    TelemetryRepo,
    TheftRepo,
    VehicleRepo,
    WebhookRepo,
)
from storage.secrets import SecretBox
from storage.sqlite.commands import SqliteAudit, SqliteCommands, SqlitePolicies
from storage.sqlite.counters import SqliteCounters
from storage.sqlite.db import Database
from storage.sqlite.devices import SqliteDevices
from storage.sqlite.geofences import SqliteGeofences
from storage.sqlite.imports import SqliteImports
from storage.sqlite.migrations import open_schema, reseal_secrets
from storage.sqlite.privacy import SqliteDrivers, SqlitePrivacy
from storage.sqlite.query import fetch_one
from storage.sqlite.resources import SqliteAccessLog, SqliteFleets, SqliteKeys, SqliteVehicles
from storage.sqlite.retention import SqliteErasure, SqliteExports, SqliteRetention
from storage.sqlite.schema import BUSY_TIMEOUT_MS
from storage.sqlite.stream import SqliteStream
from storage.sqlite.telemetry import SqliteTelemetry
from storage.sqlite.tracking import (
    SqliteAlertRules,
    SqliteGuards,
    SqliteIncidentAlerts,
    SqliteTheftCases,
)
from storage.sqlite.webhooks import SqliteWebhooks


class SqliteStore:
    """A `storage.repository.Store` on one SQLite file (WAL, fsync at every commit).

    Nothing is opened before `start()`. The file must be on a local disk: WAL needs shared
    memory between the connections, which network file systems do not provide.

    ``secrets`` seals the boxes' and webhooks' secrets (default: the development key).
    `start()` serves a file at the current schema version or creates a fresh one; an older
    file is refused unless ``migrate`` (``gp8 migrate``) is set. ``writer_process``: the writes
    run in a process of their own (storage/sqlite/writer_process.py), not on a thread of this
    one.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        secrets: SecretBox | None = None,
        pseudonyms: BadgePseudonyms | None = None,
        migrate: bool = False,
        writer_process: bool = False,
    ) -> None:
        self.path = Path(path)
        self._secrets = secrets or SecretBox.development()
        # The driver key: only the migration that pseudonymises old badges needs it here.
        self._pseudonyms = pseudonyms or BadgePseudonyms.development()
        self._migrate = migrate
        self.schema: SchemaState | None = None  # set by start()
        self._db = Database(
            self.path,
            busy_timeout_ms=busy_timeout_ms,
            prepare=self._prepare,
            writer_process=writer_process,
        )
        self.fleets: FleetRepo = SqliteFleets(self._db)
        self.keys: KeyRepo = SqliteKeys(self._db)
        self.vehicles: VehicleRepo = SqliteVehicles(self._db)
        self.devices: DeviceRepo = SqliteDevices(self._db, self._secrets)
        self.imports: ImportRepo = SqliteImports(self._db, self._secrets)
        self.telemetry: TelemetryRepo = SqliteTelemetry(self._db)
        self.access_log: AccessLogRepo = SqliteAccessLog(self._db)
        self.commands: CommandRepo = SqliteCommands(self._db)
        self.audit: AuditRepo = SqliteAudit(self._db)
        self.policies: PolicyRepo = SqlitePolicies(self._db)
        # The command alerts and the incidents of the alert rules (storage/sqlite/tracking.py).
        self.alerts: AlertRepo = SqliteIncidentAlerts(self._db)
        self.stream: StreamRepo = SqliteStream(self._db)
        self.geofences: GeofenceRepo = SqliteGeofences(self._db)
        self.webhooks: WebhookRepo = SqliteWebhooks(self._db, self._secrets)
        self.alert_rules: AlertRuleRepo = SqliteAlertRules(self._db)
        self.guards: GuardRepo = SqliteGuards(self._db)
        self.theft_cases: TheftRepo = SqliteTheftCases(self._db)
        self.counters: CounterRepo = SqliteCounters(self._db)
        self.retention: RetentionRepo = SqliteRetention(self._db)
        self.exports: ExportRepo = SqliteExports(self._db)
        self.erasure: ErasureRepo = SqliteErasure(self._db)
        self.privacy: PrivacyRepo = SqlitePrivacy(self._db)
        self.drivers: DriverRepo = SqliteDrivers(self._db)

    async def start(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # On the writer thread, before the store serves anything.
        self.schema = open_schema(
            conn, self._secrets, migrate=self._migrate, badges=self._pseudonyms
        )

    async def rotate_secrets(self) -> dict[str, int]:
        """Seal every secret again with the current key; the count re-sealed by table."""
        return await self._db.write(reseal_secrets, self._secrets)

    async def health(self) -> dict[str, object]:
        journal_mode = await self._db.read(_journal_mode)
        return {
            "engine": "sqlite",
            "path": str(self.path),
            "journal_mode": journal_mode,
            "writer": "process" if self._db.writer_process else "thread",
            "writer_exits": self.writer_exits,
        }

    @property
    def writer_exits(self) -> int:
        """Times the writer process ended unexpectedly since start (its writes in flight were
        answered `StorageUnavailable`, and a new process took its place)."""
        return self._db.writer_exits


def _journal_mode(conn: sqlite3.Connection) -> str:
    row = fetch_one(conn, "PRAGMA journal_mode", ())
    return str(row[0]) if row else "unknown"
