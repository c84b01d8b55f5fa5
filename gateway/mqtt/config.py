"""Where the broker is and who the gateway is to it, from an ``mqtt://`` URL."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from gateway.errors import GatewayError

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883


class InvalidBrokerUrl(GatewayError, ValueError):
    """The MQTT URL cannot be used (scheme, host or port)."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> BrokerConfig:
        """``mqtt://[user[:password]@]host[:port]``, or ``mqtts://`` for TLS (port 8883)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidBrokerUrl(f"{url!r}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise InvalidBrokerUrl(f"{url!r}: the scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise InvalidBrokerUrl(f"{url!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidBrokerUrl(f"{url!r}: no path, query or fragment expected")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=tls,
        )

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
