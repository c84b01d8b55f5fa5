"""TLS for simulated boxes, as a box with a TLS-capable modem does it: verify the gateway's
certificate against a CA (``gp8 sim --tls --ca FILE``) and, for mutual TLS, present a
certificate of its own. The simulator is a client and imports nothing of the server, so its
context is built here (docs/tls.md)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from simulator.box import VirtualBox
from simulator.links import Link, TcpLink

# What the gateway accepts (gateway/tls.py): a box offering less would be refused anyway.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def client_context(
    ca: Path | None = None, *, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """Verifies the gateway (certificate chain to ``ca``, else the system's trust store, and
    its name: the host the box dials); ``cert``/``key``: the box's own, for mutual TLS."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = MINIMUM_VERSION
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    return context


class TlsBox(VirtualBox):
    """A box on a TLS connection to the gateway: the same box, its stream inside TLS."""

    def __init__(self, *args: Any, tls: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tls = tls

    async def _open_link(self) -> Link:
        # The handshake is part of the connect, bounded by connect_timeout_s (box.py).
        return await TcpLink.open(
            self.host, self.port, io_timeout_s=self.io_timeout_s, tls=self.tls
        )
