"""The links a virtual box talks through: they move bytes and know nothing of frames.

A link is open once made (TCP connected, MQTT connected and subscribed); the box's outbox
(simulator.outbox) decides what goes on it, in the `Framing` the link asks for. A link raises
BoxDisconnected whenever it can no longer carry bytes. This module has the interface and the
TCP link; the MQTT one is simulator.mqtt_link.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import ClassVar, Protocol

from simulator.errors import BoxDisconnected
from simulator.outbox import Framing

READ_SIZE = 64 * 1024


class Link(Protocol):
    framing: ClassVar[Framing]

    def post(self, units: Sequence[bytes]) -> None:
        """Queue ``units`` to go out, in order, now; do not wait for anything."""

    async def send(self, units: Sequence[bytes]) -> list[bool]:
        """Queue ``units`` like `post`, then wait until the link has taken them; per unit,
        whether it can reach the server (False: the broker had no gp8 to give it to)."""
        ...

    async def receive(self) -> bytes:
        """The next bytes from the server (a piece of the stream, or one whole message)."""
        ...

    def abort(self, in_progress: bytes = b"") -> None:
        """Lose the link at once, as a box losing coverage does, while ``in_progress`` was
        being written (a stream gets part of it out; a message is lost whole)."""

    async def close(self) -> None:
        """Close politely (or, after `abort`, release what is left); never raises."""


class TcpLink:
    framing: ClassVar[Framing] = Framing.STREAM

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, io_timeout_s: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._io_timeout_s = io_timeout_s

    @classmethod
    async def open(
        cls, host: str, port: int, *, io_timeout_s: float, tls: ssl.SSLContext | None = None
    ) -> TcpLink:
        """Connect (and, with ``tls``, handshake and verify the server as ``host``)."""
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        return cls(reader, writer, io_timeout_s)

    def post(self, units: Sequence[bytes]) -> None:
        if self._writer.transport.is_closing():
            raise BoxDisconnected("the connection is closed")
        # The transport buffers what the socket does not take at once; `send` drains it.
        self._writer.write(b"".join(units))

    async def send(self, units: Sequence[bytes]) -> list[bool]:
        self.post(units)
        try:
            async with asyncio.timeout(self._io_timeout_s):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            raise BoxDisconnected(f"write failed: {exc!r}") from exc
        return [True] * len(units)

    async def receive(self) -> bytes:
        # No timeout, by design: the server may rightly say nothing for hours. The box finds a
        # dead link by its heartbeats and its ACK timeout.
        try:
            data = await self._reader.read(READ_SIZE)
        except OSError as exc:
            raise BoxDisconnected(f"read failed: {exc!r}") from exc
        if not data:
            raise BoxDisconnected("the server closed the connection")
        return data

    def abort(self, in_progress: bytes = b"") -> None:
        transport = self._writer.transport
        if in_progress and not transport.is_closing():
            self._writer.write(in_progress[: len(in_progress) // 2])
        transport.abort()

    async def close(self) -> None:
        if not self._writer.transport.is_closing():
            self._writer.transport.close()
        # A server closing with our frames unread makes its kernel answer with a reset.
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self._io_timeout_s):
                await self._writer.wait_closed()
