"""The one Settings object (pydantic-settings, prefix GP8_, nested groups with "__").

Only entry points (gp8/cli.py) read it; everything below receives plain values.
Examples: GP8_MONGO_URL, GP8_DATA_DIR, GP8_TCP__PORT, GP8_API__PORT, GP8_BOOTSTRAP_KEY.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TcpSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = 5027
    # A box sends a heartbeat at least every 120 s; twice that without a byte means the link is
    # dead (half-open TCP through a carrier NAT never tells us).
    idle_timeout_s: float = 300.0
    login_timeout_s: float = 30.0
    write_timeout_s: float = 30.0
    max_connections: int = 20_000


class TeltonikaSettings(BaseModel):
    # The Teltonika listener (docs/teltonika.md): off unless a port is set, e.g.
    # GP8_TELTONIKA__PORT=5028. It listens on tcp.host with tcp's timeouts and connection cap.
    port: int | None = None


class ApiSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = 8000
    rate_limit_per_minute: int = 600


class IngestSettings(BaseModel):
    # Records from all connections are written together: one transaction / bulk write per
    # flush. A flush happens when this many records wait or when the oldest waited this long.
    batch_size: int = 1000
    max_delay_ms: int = 20
    queue_limit: int = 50_000


class MqttSettings(BaseModel):
    url: str | None = None
    share_group: str = "gp8"
    client_id: str | None = None
    # How long the broker keeps this gateway's session (and queues its share of the uplink)
    # while the process is down; a retired gateway's queue is dropped after this.
    session_expiry_s: int = 7 * 24 * 3600


class WebhookSettings(BaseModel):
    """Per-fleet webhooks (docs/alerts.md, "Webhooks"; the delivery service in api/webhooks/)."""

    enabled: bool = True  # run the delivery service in this process
    # Let webhooks target loopback and private addresses: for tests and development only, it
    # opens gp8's own network to whoever may create a webhook (docs/security.md, "SSRF").
    allow_private: bool = False
    poll_interval_s: float = 0.5
    request_timeout_s: float = 15.0
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GP8_", env_nested_delimiter="__")

    mongo_url: str | None = None
    mongo_db: str = "gp8"
    data_dir: Path = Path("./gp8-data")
    bootstrap_key: str | None = None
    gateway_id: str | None = None
    log_level: str = "info"
    tcp: TcpSettings = Field(default_factory=TcpSettings)
    teltonika: TeltonikaSettings = Field(default_factory=TeltonikaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
