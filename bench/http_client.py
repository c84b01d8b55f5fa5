"""The benches' HTTP client: plain HTTP/1.1 over kept-alive connections, as a load generator
(wrk, oha) is.

httpx took ~1.6 ms of CPU per request (bench_import), more than gp8 spent answering it, and on
a two-core machine the client's CPU is taken from the server's: the rate measured was the
client's. This reads just what gp8 answers (a status line, headers with Content-Length, a
body) at a small part of that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

TIMEOUT_S = 120.0


def host_port(base_url: str) -> tuple[str, int]:
    """The host and port of ``base_url`` (``http://host:port``)."""
    parts = urlsplit(base_url)
    if parts.hostname is None:
        raise ValueError(f"no host in {base_url!r}")
    return parts.hostname, parts.port or 80


def post_head(base_url: str, path: str, key: str) -> bytes:
    """The request line and headers (but Content-Length) of a JSON POST to ``path`` with the
    bearer ``key``: made once, sent with every request (`Connection.post`)."""
    return _head("POST", base_url, path, key) + b"Content-Type: application/json\r\n"


def get_head(base_url: str, path: str, key: str) -> bytes:
    """The whole head of a GET of ``path`` (with its query) with the bearer ``key``
    (`Connection.get`)."""
    return _head("GET", base_url, path, key) + b"\r\n"


def _head(method: str, base_url: str, path: str, key: str) -> bytes:
    host, port = host_port(base_url)
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
    ).encode()


class Connection:
    """One kept-alive HTTP/1.1 connection that POSTs and reads the answer."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout_s = timeout_s

    @classmethod
    async def open(cls, base_url: str, timeout_s: float = TIMEOUT_S) -> Connection:
        host, port = host_port(base_url)
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, timeout_s)

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """Send ``head`` (`post_head`) and ``body``; the answer's status and body."""
        return await self._exchange(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))

    async def get(self, head: bytes) -> tuple[int, bytes]:
        """Send ``head`` (`get_head`); the answer's status and body."""
        return await self._exchange(head)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        self._writer.write(request)
        async with asyncio.timeout(self._timeout_s):
            await self._writer.drain()
            lines = (await self._reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            return int(lines[0].split(b" ", 2)[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            async with asyncio.timeout(self._timeout_s):
                await self._writer.wait_closed()


@contextlib.asynccontextmanager
async def connections(
    base_url: str, n: int, timeout_s: float = TIMEOUT_S
) -> AsyncIterator[list[Connection]]:
    """``n`` open connections, for ``n`` requests in flight; closed on the way out."""
    opened: list[Connection] = []
    try:
        for _ in range(n):
            opened.append(await Connection.open(base_url, timeout_s))
        yield opened
    finally:
        for own in opened:
            await own.close()
