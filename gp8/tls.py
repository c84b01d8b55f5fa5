"""Settings → TLS: which listener serves which certificate, built once at start (docs/tls.md).

The one place that reads the TLS settings: `gp8 serve` builds the contexts here and hands them
to the transports (gateway/tls.py makes them), and the production check (gp8/production.py)
asks the same question, "does this listener serve TLS?", of the same function.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.mqtt.config import BrokerConfig
from gateway.tls import TlsConfigError, client_context, server_context
from gp8.settings import ListenerTlsSettings, Settings

Listener = Literal["tcp", "teltonika", "api"]
LISTENERS: tuple[Listener, ...] = ("tcp", "teltonika", "api")
# Listeners that carry boxes: the ones tls.client_ca (mutual TLS) applies to.
BOX_LISTENERS = frozenset({"tcp", "teltonika"})


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """The files one listener serves TLS with."""

    cert: Path
    key: Path
    client_ca: Path | None = None


def listener_tls(settings: Settings, listener: Listener) -> ListenerTls | None:
    """The TLS files of ``listener``, or None when it serves plain TCP."""
    tls = settings.tls
    own: ListenerTlsSettings = getattr(tls, listener)
    if not own.enabled:
        return None
    cert, key = own.cert or tls.cert, own.key or tls.key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "certificate" if cert is None else "key"
        raise TlsConfigError(f"TLS for the {listener} listener: a {missing} is missing")
    return ListenerTls(cert, key, tls.client_ca if listener in BOX_LISTENERS else None)


def server_contexts(settings: Settings) -> dict[Listener, ssl.SSLContext | None]:
    """One server context per listener (None: plain), each file read once, here."""
    contexts: dict[Listener, ssl.SSLContext | None] = {}
    for listener in LISTENERS:
        files = listener_tls(settings, listener)
        contexts[listener] = (
            None
            if files is None
            else server_context(files.cert, files.key, client_ca=files.client_ca)
        )
    return contexts


def broker_config(settings: Settings) -> BrokerConfig | None:
    """Where the MQTT bridge connects and how (None: no MQTT), from the mqtt settings."""
    mqtt = settings.mqtt
    if not mqtt.url:
        return None
    context = client_context(mqtt.ca_file) if mqtt.ca_file is not None else None
    return BrokerConfig.from_url(
        mqtt.url, username=mqtt.username, password=mqtt.password, tls_context=context
    )


def is_loopback(host: str) -> bool:
    """A listen address only this machine can reach (a proxy in front terminates TLS)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def uvicorn_context_factory(
    context: ssl.SSLContext | None,
) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None:
    """uvicorn's ``ssl_context_factory`` serving ``context`` (ours: TLS 1.2+, built once)
    instead of one uvicorn would build from file names; None: plain HTTP."""
    if context is None:
        return None
    return lambda _config, _default: context
