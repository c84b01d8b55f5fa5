"""Where the broker is and who the gateway is to it, from an ``mqtt://`` URL, and how the link
is secured: ``mqtts://`` means TLS, checked against the CA the entry point loaded into
``tls_context`` (gateway/tls.py), else against the system's trust store."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from gateway.errors import GatewayError
from gateway.tls import client_context

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
    # The client context of a TLS link, built once (not per reconnect); None without TLS.
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tls_context is not None and not self.tls:
            raise InvalidBrokerUrl(f"{self.address}: a CA or TLS context needs an mqtts:// URL")
        if self.tls and self.tls_context is None:
            object.__setattr__(self, "tls_context", client_context())

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> BrokerConfig:
        """``mqtt://[user[:password]@]host[:port]``, or ``mqtts://`` for TLS (port 8883).
        ``username``/``password`` (from settings, out of the URL) win over the URL's."""
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
            username=username or (unquote(parts.username) if parts.username else None),
            password=password
            if password is not None
            else (unquote(parts.password) if parts.password is not None else None),
            tls=tls,
            tls_context=tls_context,
        )

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
