"""`python -m gp8.healthcheck`: the container's HEALTHCHECK (Dockerfile). Exit 0 when this
machine's gp8 answers GET /health with 200, 1 otherwise, and say why on one line.

It reads the same Settings as `gp8 serve` (GP8_API__PORT, the API's TLS), so it follows the
process it checks whatever the deployment sets. With TLS it does not verify the certificate:
it connects to 127.0.0.1, a name the certificate (made for the public host) does not carry,
and it only asks whether the process is alive; it sends no credential.
"""

from __future__ import annotations

import http.client
import ssl
import sys

from gp8.settings import Settings
from gp8.tls import listener_tls

TIMEOUT_S = 5.0


def check(settings: Settings, *, host: str = "127.0.0.1") -> str | None:
    """None when healthy, else the reason."""
    connection: http.client.HTTPConnection
    if listener_tls(settings, "api") is None:
        connection = http.client.HTTPConnection(host, settings.api.port, timeout=TIMEOUT_S)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            host, settings.api.port, timeout=TIMEOUT_S, context=context
        )
    try:
        connection.request("GET", "/health")
        status = connection.getresponse().status
    except OSError as exc:
        return f"GET /health on port {settings.api.port}: {exc}"
    finally:
        connection.close()
    return None if status == 200 else f"GET /health answered {status}"


def main() -> int:
    reason = check(Settings())
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
