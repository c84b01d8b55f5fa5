"""Which URLs a webhook may call, and the address each request really goes to (SSRF).

Anyone with a fleet's admin key can make gp8 send POST requests to a URL of their choosing,
from inside gp8's network. Two checks keep those requests off that network (docs/security.md,
"Webhooks and SSRF"):

* `check_url`, when a webhook is created or changed: http(s) only, no credentials in the URL,
  a bounded length, and no host that names a loopback, private or reserved address (an IP
  literal, ``localhost``, a single-label name such as a container's, ``.internal``...);
* `resolve_target`, before every attempt: the host name is resolved and every address it has
  must be public; the request is then sent to that address (the name stays in the Host header
  and, for https, in SNI and the certificate check), so a DNS answer that changes between the
  check and the connection (DNS rebinding) cannot redirect it. Redirects are never followed.

``allow_private`` lifts the address checks, for tests and development only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# Longer URLs are refused: far beyond any real receiver's, short enough to store and log.
MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")
# Names that resolve to the local machine or a local network by convention.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".intranet", ".lan", ".home.arpa")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class TargetRefused(Exception):
    """A webhook URL or address gp8 will not call; the message says why."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_url(url: str, *, allow_private: bool) -> httpx.URL:
    """``url`` parsed, or TargetRefused (the first rule it breaks)."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise TargetRefused("the URL must start with https:// (or http://)")
    if parsed.userinfo:
        raise TargetRefused("the URL must not carry credentials (user:password@)")
    if not parsed.host:
        raise TargetRefused("the URL has no host")
    if parsed.fragment:
        raise TargetRefused("the URL must not have a #fragment (it is never sent)")
    if not allow_private:
        _check_host(parsed.host)
    return parsed


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Whether a request may go to ``address``: a public unicast address."""
    if allow_private:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return False
    return _public(ip)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt goes: ``url`` with the checked address in place of the name."""

    url: httpx.URL
    host: str  # the Host header: the name (and port) of the webhook's URL
    extensions: dict[str, Any] = field(default_factory=dict)  # httpx: sni_hostname for https


async def resolve_target(
    url: str, *, allow_private: bool, resolver: Resolver, timeout_s: float
) -> Target:
    """The address to send to, checked; TargetRefused when the URL or any of its host's
    addresses is not allowed, or the name does not resolve within ``timeout_s``."""
    parsed = check_url(url, allow_private=allow_private)
    host = parsed.host
    literal = _ip(host)
    if literal is not None:
        addresses = [host]
    else:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            async with asyncio.timeout(timeout_s):
                addresses = await resolver(host, port)
        except TimeoutError:
            raise TargetRefused(f"{host} did not resolve within {timeout_s:g} s") from None
        except OSError as exc:
            raise TargetRefused(f"{host} does not resolve: {exc}") from None
    if not addresses:
        raise TargetRefused(f"{host} has no address")
    for address in addresses:
        # Every address, not only the one used: a name with a public and a private address
        # would otherwise be a way in.
        if not address_allowed(address, allow_private=allow_private):
            raise TargetRefused(f"{host} resolves to {address}, a private or reserved address")
    address = addresses[0].split("%", 1)[0]
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https" and literal is None:
        extensions["sni_hostname"] = host  # SNI and the certificate check use the name
    return Target(parsed.copy_with(host=address), parsed.netloc.decode("ascii"), extensions)


def _check_host(host: str) -> None:
    name = host.rstrip(".").lower()
    ip = _ip(name)
    if ip is not None:
        if not _public(ip):
            raise TargetRefused(f"{host} is a loopback, private or reserved address")
        return
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        raise TargetRefused(f"{host} names a local host or network")
    if "." not in name:
        # A single label is resolved through the local search domains: another container,
        # a host of the internal network.
        raise TargetRefused(f"{host} is not a public host name (no domain)")


def _ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _public(ip: IpAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried in IPv6 is judged as that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return _public(embedded)
    return ip.is_global and not ip.is_multicast
