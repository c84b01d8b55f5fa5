"""The one Settings object (pydantic-settings, prefix GP8_, nested groups with "__").

Only entry points (gp8/cli.py) read it; everything below receives plain values.
Examples: GP8_MONGO_URL, GP8_DATA_DIR, GP8_TCP__PORT, GP8_API__PORT, GP8_BOOTSTRAP_KEY.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, IPvAnyNetwork, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TcpSettings(BaseModel):
    host: str = "0.0.0.0"  # box listeners' address (GP8, Teltonika)
    port: int = 5027  # GP8 box TCP port
    # A box sends a heartbeat at least every 120 s; twice that without a byte means the link is
    # dead (half-open TCP through a carrier NAT never tells us).
    idle_timeout_s: float = 300.0
    login_timeout_s: float = 30.0  # a new connection must LOGIN within this
    write_timeout_s: float = 30.0  # a reply not written by then closes the link
    max_connections: int = 20_000  # box connections at once, per process
    # Bytes of an incomplete frame may wait this long with no frame going through; then the
    # connection is closed (closes{reason="frame_timeout"}; docs/security.md).
    frame_timeout_s: float = Field(default=20.0, gt=0)
    # Failed logins (unknown IMEI, bad proof, replay) of one IMEI from one address within 10
    # minutes that lock that IMEI out from that address (docs/security.md).
    login_failures_per_imei: int = Field(default=10, ge=1)
    # Failed logins from one address within a minute that lock the address out, any IMEI.
    login_failures_per_source: int = Field(default=100, ge=1)
    # How long a login lock-out lasts; meanwhile LOGIN is answered SERVER_BUSY unchecked.
    login_lockout_s: float = Field(default=900.0, gt=0)
    # Answer an unknown IMEI BAD_PROOF instead of UNKNOWN_DEVICE, so LOGIN tells a stranger
    # nothing of which IMEIs are provisioned (docs/security.md, "the IMEI oracle").
    hide_unknown_device: bool = False
    # Source networks GP8 boxes may connect from (a private APN's ranges), e.g.
    # GP8_TCP__ALLOWED_NETWORKS='["10.64.0.0/10"]'; empty: any (gateway/networks.py).
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)


class TeltonikaSettings(BaseModel):
    # The Teltonika listener (docs/teltonika.md): off unless a port is set, e.g.
    # GP8_TELTONIKA__PORT=5028. It listens on tcp.host with tcp's timeouts and connection cap.
    port: int | None = None
    # Source networks Teltonika boxes may connect from; empty: any. Worth setting: these boxes
    # prove nothing but their IMEI (docs/security.md, "Teltonika boxes").
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    # The IO id of a digital input wired to a privacy switch in the cab (e.g. 2 for DIN2, set
    # "On change" on the box): 1 makes the vehicle private (docs/privacy.md); unset: none.
    privacy_input: int | None = Field(default=None, ge=1, le=65_535)


class ApiSettings(BaseModel):
    # Loopback unless exposed on purpose (--api-host 0.0.0.0): the API holds fleet data and
    # /metrics, and is meant to sit behind a TLS proxy (docs/security.md, "Listening addresses").
    host: str = "127.0.0.1"  # REST API address
    port: int = 8000  # REST API port
    rate_limit_per_minute: int = 600  # requests per API key per minute
    # A new API key's lifetime when its creator names none (docs/security.md, "Key owners").
    key_ttl_days: int = Field(default=90, ge=1, le=3660)
    # Slowloris: a request's line and headers must be complete within this (api/http_limits.py).
    header_timeout_s: float = Field(default=10.0, gt=0)
    # Open API connections; at most a quarter of the file-descriptor limit whatever is set
    # here, so that the device listeners always keep the rest.
    max_connections: int = Field(default=1000, ge=1)
    # Open API connections from one client address.
    max_connections_per_source: int = Field(default=100, ge=1)
    # Invalid API keys from one address within a minute that get it answered 429 for a while.
    key_failures_per_source: int = Field(default=30, ge=1)
    # How long an address is answered 429 after too many invalid API keys.
    key_lockout_s: float = Field(default=300.0, gt=0)


class IngestSettings(BaseModel):
    # Records from all connections are written together: one transaction / bulk write per
    # flush. A flush happens when this many records wait or when the oldest waited this long.
    batch_size: int = 1000
    max_delay_ms: int = 20  # see batch_size
    queue_limit: int = 50_000  # records not yet stored; beyond it, sockets stop being read
    # Records submitted by TCP boxes and not yet answered beyond which a new frame is answered
    # SERVER_BUSY at once (the box resends later; counted gp8_gateway_shed_records_total).
    # Unset: 4 x queue_limit (gateway/server.py SHED_FACTOR).
    shed_above: int | None = Field(default=None, ge=1)


class MqttSettings(BaseModel):
    url: str | None = None  # broker, mqtt://host:1883 or mqtts://; unset: no MQTT
    share_group: str = "gp8"  # shared subscription group of all gateways
    client_id: str | None = None  # unset: gp8-{gateway_id or host name}, stable
    # How long the broker keeps this gateway's session (and queues its share of the uplink)
    # while the process is down; a retired gateway's queue is dropped after this.
    session_expiry_s: int = 7 * 24 * 3600
    # TLS and credentials for the broker link (docs/tls.md); kept out of the URL, which is
    # logged. They apply over the URL's user:password.
    ca_file: Path | None = Field(
        default=None,
        description="CA file (PEM) the broker's certificate is checked against, with an "
        "mqtts:// URL; unset: the system's trust store.",
    )
    username: str | None = Field(default=None, description="The gateway's broker user name.")
    password: str | None = Field(
        default=None, repr=False, description="The gateway's broker password."
    )


class WebhookSettings(BaseModel):
    """Per-fleet webhooks (docs/alerts.md, "Webhooks"; the delivery service in api/webhooks/)."""

    enabled: bool = True  # run the delivery service in this process
    # Let webhooks target loopback and private addresses: for tests and development only, it
    # opens gp8's own network to whoever may create a webhook (docs/security.md, "SSRF").
    allow_private: bool = False
    poll_interval_s: float = 0.5  # how often the change log is read
    request_timeout_s: float = 15.0  # one delivery attempt
    max_in_flight: int = 32  # requests at once, all endpoints together
    per_endpoint_in_flight: int = 4  # requests at once to one endpoint


class StreamSettings(BaseModel):
    """The live stream (GET /v1/stream; the hub and pruner in api/stream/)."""

    # What a client that disconnected can catch up on with ?after=; at least ten minutes.
    retention_s: int = Field(default=15 * 60, ge=600)
    # Messages waiting for one client before it is dropped as a slow consumer (close 4429).
    queue_limit: int = Field(default=10_000, ge=100)


class TrackingSettings(BaseModel):
    """Alert rules, the parked guard and theft cases (docs/alerts.md, docs/theft.md)."""

    # How often boxes' connections are swept for the box_offline rule (tracking/offline.py).
    offline_sweep_s: float = Field(default=60.0, gt=0)
    # The report interval a theft case switches the box to (the box accepts 5..3600 s).
    theft_fast_interval_s: int = Field(default=10, ge=5, le=3600)
    # The vehicle's data stays held this long after its theft case is closed.
    theft_hold_days: int = Field(default=90, ge=0)
    # Restored on close when nothing tells what the box had before the case.
    default_report_interval_s: int = Field(default=30, ge=5, le=3600)


class RetentionSettings(BaseModel):
    """Retention, exports and offboarding (docs/gdpr.md)."""

    # How often the purge job applies every fleet's retention periods (retention/purge.py).
    purge_interval_s: float = Field(default=3600.0, gt=0)
    # An offboarded fleet stays readable (and exportable) this long, then is erased.
    offboarding_days: int = Field(default=92, ge=1, le=366)


class ConsoleSettings(BaseModel):
    """The web console at /console (docs/console.md)."""

    # A Leaflet tile URL template ({s}, {z}, {x}, {y}); None: OpenStreetMap's, the defaults
    # in api/routes/console.py. Without tiles (offline) the map shows a blank ground.
    tile_url: str | None = None
    # Shown in the map's corner, as the tile server's terms ask (HTML); set it with tile_url.
    tile_attribution: str | None = None


class ListenerTlsSettings(BaseModel):
    """One listener's TLS (docs/tls.md): tls.cert/tls.key apply unless overridden here."""

    enabled: bool = Field(
        default=True, description="False: this listener serves no TLS, even with tls.cert set."
    )
    cert: Path | None = Field(default=None, description="This listener's own certificate (PEM).")
    key: Path | None = Field(default=None, description="This listener's own private key (PEM).")


class TlsSettings(BaseModel):
    """TLS on the public listeners (docs/tls.md): set cert and key to turn it on for all."""

    cert: Path | None = Field(
        default=None, description="Server certificate (PEM, chain included) for every listener."
    )
    key: Path | None = Field(default=None, description="Its private key (PEM).")
    client_ca: Path | None = Field(
        default=None,
        description="Mutual TLS for boxes: the box listeners then require a client "
        "certificate signed by this CA (PEM). The API keeps its API keys.",
    )
    handshake_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A box's TLS handshake not done by then is closed (and counted).",
    )
    tcp: ListenerTlsSettings = Field(default_factory=ListenerTlsSettings)
    teltonika: ListenerTlsSettings = Field(default_factory=ListenerTlsSettings)
    api: ListenerTlsSettings = Field(default_factory=ListenerTlsSettings)


# A logging level by name, in any case ("INFO" as "info").
LogLevel = Annotated[
    Literal["debug", "info", "warning", "error", "critical"],
    BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GP8_", env_nested_delimiter="__")

    env: Literal["development", "production"] = Field(
        default="development",
        description="production: `gp8 serve` refuses to start without TLS on every public "
        "listener, with a placeholder bootstrap key or with the default secrets or driver key "
        "(docs/tls.md, gp8/production.py).",
    )
    mongo_url: str | None = None  # MongoDB (a replica set); unset: embedded SQLite
    mongo_db: str = "gp8"  # MongoDB database name
    data_dir: Path = Path("./gp8-data")  # the SQLite engine's directory
    sqlite_writer: Literal["thread", "process"] = Field(
        default="process",
        description="Where `gp8 serve` runs the SQLite engine's writes: a process of their own "
        "(the default: their Python work then runs beside the event loop's, on another core) "
        "or a thread of gp8's process (storage/sqlite/writer_process.py, docs/storage.md).",
    )
    bootstrap_key: str | None = None  # an operator API key made sure to exist at start
    gateway_id: str | None = None  # this process's id; unset: host:pid
    secrets_key: SecretStr | None = Field(
        default=None,
        description="The AES-GCM key sealing the boxes' and webhooks' secrets at rest: base64 "
        'of 32 bytes (docs/security.md, "Secrets at rest"). Unset, and no key file: a public '
        "development key, which production mode refuses.",
    )
    secrets_key_file: Path | None = Field(
        default=None,
        description="A file of secrets keys instead, one base64 key a line: the first seals, "
        "the others only open (keys being rotated out). Not with secrets_key.",
    )
    secrets_old_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Older secrets keys, as a JSON list of base64 keys: they open what they "
        "sealed until `gp8 admin rotate-secrets-key` has sealed it again with the current one.",
    )
    driver_key: SecretStr | None = Field(
        default=None,
        description="The HMAC key turning driver badges into the pseudonyms stored in their "
        'place: base64 of at least 32 bytes (docs/privacy.md, "The driver key"). Unset, and no '
        "key file: a public development key, which production mode refuses. Changing it "
        "changes every pseudonym.",
    )
    driver_key_file: Path | None = Field(
        default=None,
        description="A file holding the driver key instead (base64). Not with driver_key.",
    )
    log_level: LogLevel = Field(default="info", description="Level of every logger.")
    log_levels: dict[str, LogLevel] = Field(
        default_factory=dict,
        description="Level per component (logger name) over log_level, as JSON, e.g. "
        '\'{"gateway": "debug", "api.requests": "warning"}\'.',
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json: one JSON object per line (ts, level, logger, message, context); "
        "text: for people. Unset: json for `gp8 serve`, text for the other commands.",
    )
    role: Literal["all", "gateway", "api"] = Field(
        default="all",
        description="What `gp8 serve` runs: all; gateway (box listeners, MQTT bridge, "
        "processing; HTTP only for /, /health, /ready, /metrics); api (the REST API and "
        "stream, no box listener).",
    )
    tcp: TcpSettings = Field(default_factory=TcpSettings)
    teltonika: TeltonikaSettings = Field(default_factory=TeltonikaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
