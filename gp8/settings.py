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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GP8_", env_nested_delimiter="__")

    mongo_url: str | None = None
    mongo_db: str = "gp8"
    data_dir: Path = Path("./gp8-data")
    bootstrap_key: str | None = None
    gateway_id: str | None = None
    log_level: str = "info"
    tcp: TcpSettings = Field(default_factory=TcpSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
