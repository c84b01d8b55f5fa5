"""`SqliteStore`: the embedded default engine, one database file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.repository import (
    AccessLogRepo,
    AlertRepo,
    AlertRuleRepo,
    AuditRepo,
    CommandRepo,
    DeviceRepo,
    FleetRepo,
    GeofenceRepo,
    GuardRepo,
    KeyRepo,
    PolicyRepo,
    StreamRepo,
    TelemetryRepo,
    TheftRepo,
    VehicleRepo,
    WebhookRepo,
)
from storage.sqlite.commands import SqliteAudit, SqliteCommands, SqlitePolicies
from storage.sqlite.db import Database
from storage.sqlite.devices import SqliteDevices
from storage.sqlite.geofences import SqliteGeofences
from storage.sqlite.query import fetch_one
from storage.sqlite.resources import SqliteAccessLog, SqliteFleets, SqliteKeys, SqliteVehicles
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
    """

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self._db = Database(self.path, busy_timeout_ms=busy_timeout_ms)
        self.fleets: FleetRepo = SqliteFleets(self._db)
        self.keys: KeyRepo = SqliteKeys(self._db)
        self.vehicles: VehicleRepo = SqliteVehicles(self._db)
        self.devices: DeviceRepo = SqliteDevices(self._db)
        self.telemetry: TelemetryRepo = SqliteTelemetry(self._db)
        self.access_log: AccessLogRepo = SqliteAccessLog(self._db)
        self.commands: CommandRepo = SqliteCommands(self._db)
        self.audit: AuditRepo = SqliteAudit(self._db)
        self.policies: PolicyRepo = SqlitePolicies(self._db)
        # The command alerts and the incidents of the alert rules (storage/sqlite/tracking.py).
        self.alerts: AlertRepo = SqliteIncidentAlerts(self._db)
        self.stream: StreamRepo = SqliteStream(self._db)
        self.geofences: GeofenceRepo = SqliteGeofences(self._db)
        self.webhooks: WebhookRepo = SqliteWebhooks(self._db)
        self.alert_rules: AlertRuleRepo = SqliteAlertRules(self._db)
        self.guards: GuardRepo = SqliteGuards(self._db)
        self.theft_cases: TheftRepo = SqliteTheftCases(self._db)

    async def start(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def health(self) -> dict[str, object]:
        journal_mode = await self._db.read(_journal_mode)
        return {"engine": "sqlite", "path": str(self.path), "journal_mode": journal_mode}


def _journal_mode(conn: sqlite3.Connection) -> str:
    row = fetch_one(conn, "PRAGMA journal_mode", ())
    return str(row[0]) if row else "unknown"
