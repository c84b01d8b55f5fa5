"""Source-network allowlists for the device listeners (docs/security.md, "Source networks").

Boxes on a private APN reach gp8 from a few known address ranges; a listener given such ranges
closes any other connection at once, before a byte is read: a Teltonika box proves nothing but
its IMEI, so where the operator can say where boxes come from, nobody else gets to try one. An
empty list allows every source (the default: boxes on public APNs come from anywhere).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceNetworks:
    """The networks one listener accepts connections from; none: every source."""

    def __init__(self, networks: Iterable[str | Network] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in networks
        )

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, peer: object) -> bool:
        """Whether a peer (a socket's ``peername``: (host, port, ...)) may connect."""
        if not self.networks:
            return True
        if not isinstance(peer, tuple) or not peer:
            return False  # a peer we cannot place is not in the list
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 box
        return any(address in network for network in self.networks)
