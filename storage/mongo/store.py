"""`MongoStore`: the production engine, on PyMongo's async API (`AsyncMongoClient`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from pymongo import AsyncMongoClient, WriteConcern

from storage.errors import StorageUnavailable
from storage.migrations import SchemaState
from storage.mongo.commands import MongoAudit, MongoCommands, MongoPolicies
from storage.mongo.counters import MongoCounters
from storage.mongo.db import OPERATION_TIMEOUT_S, Doc, MongoDb
from storage.mongo.devices import MongoDevices
from storage.mongo.errors import translate_errors
from storage.mongo.geofences import MongoGeofences
from storage.mongo.imports import MongoImports
from storage.mongo.migrations import open_schema, reseal_secrets
from storage.mongo.privacy import MongoDrivers, MongoPrivacy
from storage.mongo.resources import MongoAccessLog, MongoFleets, MongoKeys, MongoVehicles
from storage.mongo.retention import MongoErasure, MongoExports, MongoRetention
from storage.mongo.stream import MongoStream
from storage.mongo.telemetry import MongoTelemetry
from storage.mongo.tracking import (
    MongoAlertRules,
    MongoGuards,
    MongoIncidentAlerts,
    MongoTheftCases,
)
from storage.mongo.transactions import ServerTransactions
from storage.mongo.webhooks import MongoWebhooks
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

# TCP + TLS handshake of a new connection (the driver's default is 20 s); each operation as a
# whole is bounded by OPERATION_TIMEOUT_S.
CONNECT_TIMEOUT_MS = 5_000


class MongoStore:
    """A `storage.repository.Store` on one MongoDB database.

    ``client`` is a `pymongo.AsyncMongoClient` (or the test fake
    `pymongo_async_mock.AsyncMongoMockClient`); a client passed in stays the caller's to close.
    Every write is acknowledged by a majority of the replica set (set on the database handle,
    so no call can forget it): a batch the gateway acknowledges survives a primary failover.

    ``secrets`` seals the boxes' and webhooks' secrets (default: the development key).
    `start()` serves a database at the current schema version or sets up a fresh one; an older
    one is refused unless ``migrate`` (``gp8 migrate``) is set.
    """

    def __init__(
        self,
        client: AsyncMongoClient[Doc],
        db_name: str,
        *,
        operation_timeout_s: float = OPERATION_TIMEOUT_S,
        secrets: SecretBox | None = None,
        pseudonyms: BadgePseudonyms | None = None,
        migrate: bool = False,
    ) -> None:
        self.db_name = db_name
        self._secrets = secrets or SecretBox.development()
        # The driver key: only the migration that pseudonymises old badges needs it here.
        self._pseudonyms = pseudonyms or BadgePseudonyms.development()
        self._migrate = migrate
        self.schema: SchemaState | None = None  # set by start()
        self._client = client
        self._owns_client = False
        database = client.get_database(db_name, write_concern=WriteConcern("majority"))
        self._db = MongoDb(database, operation_timeout_s=operation_timeout_s)
        # Asked once whether the deployment runs transactions; used where writes must commit
        # together (storage/mongo/transactions.py).
        transactions = ServerTransactions(self._db)
        self.fleets: FleetRepo = MongoFleets(self._db)
        self.keys: KeyRepo = MongoKeys(self._db)
        self.vehicles: VehicleRepo = MongoVehicles(self._db, transactions)
        self.devices: DeviceRepo = MongoDevices(self._db, self._secrets, transactions)
        # Written by the repositories below as they store (storage/stream.py).
        stream = MongoStream(self._db)
        self.stream: StreamRepo = stream
        self.telemetry: TelemetryRepo = MongoTelemetry(self._db, stream, transactions)
        self.access_log: AccessLogRepo = MongoAccessLog(self._db)
        self.commands: CommandRepo = MongoCommands(self._db, transactions, stream=self.stream)
        self.imports: ImportRepo = MongoImports(self._db, self._secrets, transactions)
        self.audit: AuditRepo = MongoAudit(self._db)
        self.policies: PolicyRepo = MongoPolicies(self._db)
        # The command alerts and the incidents of the alert rules (storage/mongo/tracking.py).
        self.alerts: AlertRepo = MongoIncidentAlerts(self._db, self.stream)
        self.geofences: GeofenceRepo = MongoGeofences(self._db)
        self.webhooks: WebhookRepo = MongoWebhooks(self._db, self._secrets)
        self.alert_rules: AlertRuleRepo = MongoAlertRules(self._db)
        self.guards: GuardRepo = MongoGuards(self._db)
        self.theft_cases: TheftRepo = MongoTheftCases(self._db, self.stream)
        self.retention: RetentionRepo = MongoRetention(self._db)
        self.exports: ExportRepo = MongoExports(self._db)
        self.erasure: ErasureRepo = MongoErasure(self._db)
        self.privacy: PrivacyRepo = MongoPrivacy(self._db)
        self.drivers: DriverRepo = MongoDrivers(self._db)
        self.counters: CounterRepo = MongoCounters(self._db)

    @classmethod
    def from_url(
        cls,
        url: str,
        db_name: str,
        *,
        operation_timeout_s: float = OPERATION_TIMEOUT_S,
        secrets: SecretBox | None = None,
        pseudonyms: BadgePseudonyms | None = None,
        migrate: bool = False,
    ) -> MongoStore:
        """A store on its own client (closed by `close()`); nothing connects before `start()`.

        Options given in the URL win over our defaults.
        """
        options = {name.lower() for name in parse_qs(urlsplit(url).query)}
        kwargs: dict[str, Any] = {}
        if "appname" not in options:
            kwargs["appname"] = "gp8"  # shows in the server's logs and currentOp
        if "connecttimeoutms" not in options:
            kwargs["connectTimeoutMS"] = CONNECT_TIMEOUT_MS
        with translate_errors():  # a malformed URL is a ConfigurationError
            client: AsyncMongoClient[Doc] = AsyncMongoClient(url, **kwargs)
        store = cls(
            client,
            db_name,
            operation_timeout_s=operation_timeout_s,
            secrets=secrets,
            pseudonyms=pseudonyms,
            migrate=migrate,
        )
        store._owns_client = True
        return store

    @property
    def round_trips(self) -> int:
        """Driver calls that went to the server since the store was made (or last reset)."""
        return self._db.round_trips

    @round_trips.setter
    def round_trips(self, value: int) -> None:
        self._db.round_trips = value

    async def start(self) -> None:
        """Check the schema version (storage/mongo/migrations.py) and create the indexes
        (collections come with them); idempotent."""
        if self._db.state == "open":
            return
        if self._db.state == "closed":
            raise StorageUnavailable("mongo store is closed")
        self.schema = await open_schema(
            self._db, self._secrets, migrate=self._migrate, badges=self._pseudonyms
        )
        self._db.state = "open"

    async def close(self) -> None:
        if self._db.state == "closed":
            return
        self._db.state = "closed"
        if self._owns_client:
            await self._client.close()

    async def rotate_secrets(self) -> dict[str, int]:
        """Seal every secret again with the current key; the count re-sealed by collection."""
        return await reseal_secrets(self._db, self._secrets)

    async def health(self) -> dict[str, object]:
        await self._db.call(self._db.database.command("ping"))
        return {"engine": "mongo", "db": self.db_name}
