"""Production mode (``GP8_ENV=production``): what `gp8 serve` refuses to start with.

`check_production` lists every reason at once, one line each, so an operator fixes them in
one round rather than one per restart. Outside production it has nothing to say: development,
tests and `gp8 demo` run plain and with throw-away keys. docs/tls.md explains each reason.

What "public" means: a listener bound to a loopback address is reachable from this machine
only, so something in front of it (a reverse proxy, a TLS-terminating load balancer) carries
the traffic and its TLS; every other listener must serve TLS itself.
"""

from __future__ import annotations

from gp8.secrets_key import is_default_driver_key, is_default_secrets_key
from gp8.settings import Settings
from gp8.tls import Listener, is_loopback, listener_tls

# A bootstrap key is an operator credential: `gp8 admin create-key` makes 256 random bits
# (43 base64url characters). Shorter than this is guessable or hand-typed.
MIN_BOOTSTRAP_KEY_LEN = 32
# A long key made of very few different characters ("aaaa…", "0000…") is no secret either;
# random keys of MIN_BOOTSTRAP_KEY_LEN characters have about 25 different ones.
MIN_BOOTSTRAP_KEY_DISTINCT = 12
# Text found in demo, default and example values (gp8 demo's keys start with "gp8demo_"). Long
# enough that a random key contains one with negligible odds.
PLACEHOLDER_MARKERS = (
    "gp8demo",
    "changeme",
    "change-me",
    "change_me",
    "example",
    "placeholder",
    "replace",
    "default",
)

_NAMES: dict[Listener, str] = {
    "tcp": "the box TCP listener",
    "teltonika": "the Teltonika listener",
    "api": "the API",
}


def check_production(settings: Settings) -> list[str]:
    """Why ``settings`` may not run in production, one line per reason; [] when they may
    (or when ``settings.env`` is not production)."""
    if settings.env != "production":
        return []
    reasons = _listener_reasons(settings)
    key = settings.bootstrap_key
    if key is not None and is_placeholder_key(key):
        reasons.append(
            "the bootstrap key is a placeholder (shorter than "
            f"{MIN_BOOTSTRAP_KEY_LEN} characters, repetitive, or a demo/example value): set "
            "GP8_BOOTSTRAP_KEY to a random value, or unset it and use `gp8 admin create-key`"
        )
    if is_default_secrets_key(settings):
        reasons.append(
            "the secrets key is the public development default, which protects no secret at "
            "rest: set GP8_SECRETS_KEY (base64 of 32 random bytes, e.g. `openssl rand -base64 "
            "32`) or GP8_SECRETS_KEY_FILE"
        )
    if is_default_driver_key(settings):
        reasons.append(
            "the driver key is the public development default, so anyone can tell a badge "
            "from its pseudonym: set GP8_DRIVER_KEY (base64 of 32 random bytes, e.g. "
            "`openssl rand -base64 32`) or GP8_DRIVER_KEY_FILE"
        )
    return reasons


def is_placeholder_key(key: str) -> bool:
    """A demo, default or example value, or one too short or too uniform to be a secret."""
    lowered = key.lower()
    return (
        len(key) < MIN_BOOTSTRAP_KEY_LEN
        or len(set(key)) < MIN_BOOTSTRAP_KEY_DISTINCT
        or any(marker in lowered for marker in PLACEHOLDER_MARKERS)
    )


def _listener_reasons(settings: Settings) -> list[str]:
    bound: dict[Listener, tuple[str, int | None]] = {
        "tcp": (settings.tcp.host, settings.tcp.port),
        "teltonika": (settings.tcp.host, settings.teltonika.port),
        "api": (settings.api.host, settings.api.port),
    }
    reasons: list[str] = []
    if settings.role == "api":  # `gp8 serve --role api` opens no box listener
        del bound["tcp"], bound["teltonika"]
    for listener, (host, port) in bound.items():
        if port is None or is_loopback(host):
            continue  # off, or only reachable through a proxy on this machine
        if listener_tls(settings, listener) is None:
            reasons.append(
                f"{_NAMES[listener]} on {host}:{port} has no TLS: set GP8_TLS__CERT and "
                "GP8_TLS__KEY (--tls-cert/--tls-key), or bind it to a loopback address "
                "behind a TLS proxy"
            )
    return reasons
