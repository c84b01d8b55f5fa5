"""Connection limits uvicorn does not have: a header deadline and connection caps.

uvicorn's h11 protocol never times out a request whose headers are still arriving (its only
timer is the keep-alive one, armed after a response), so a client that sends a header line every
few seconds (slowloris) holds a socket, a file descriptor and a parser for as long as it likes;
it also accepts any number of connections, so enough of them exhaust the process's file
descriptors and the device listeners' ``accept`` fails. `limited_h11` returns a subclass of
uvicorn's `H11Protocol` (given to ``uvicorn.Config(http=...)``) that adds, per connection:

* a **header deadline**: from the connection's start, and from the first byte of each next
  request on a kept-alive connection, the request line and headers must be complete within
  ``header_timeout_s``, else the connection is closed (counted ``header_timeout``);
* a **cap on open connections**, all sources together (``max_connections``; `connection_cap`
  keeps it to a share of the file-descriptor limit), and a **cap per source address**
  (``max_connections_per_source``): a connection over either is closed as soon as it is
  accepted (counted ``refused_total`` / ``refused_source``), before it costs more than that.

A WebSocket (the live stream) leaves this class on upgrade; it then has the stream's own limits
(first-message timeout, message size; api/stream/) and still counts in ``max_connections``
(uvicorn keeps it in the same set of connections), not in its source's count.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# What the API may take of the process's file descriptors (RLIMIT_NOFILE): a quarter, so that
# the device listeners, storage and the broker connection keep the other three quarters
# whatever the API is sent (with the common soft limit of 1,024: 256 API connections).
API_FD_SHARE = 4
# h11's bound on a request's line and headers (uvicorn's h11_max_incomplete_event_size default):
# more is refused with a 400 problem.
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout_s: float = 10.0
    max_connections: int = 1000
    max_connections_per_source: int = 100

    def __post_init__(self) -> None:
        if self.header_timeout_s <= 0 or self.max_connections < 1:
            raise ValueError(f"HTTP limits must be positive: {self}")
        if self.max_connections_per_source < 1:
            raise ValueError(f"HTTP limits must be positive: {self}")


def connection_cap(requested: int, fd_limit: int) -> int:
    """The API's connection cap: what was asked, but at most its share of ``fd_limit``."""
    return max(1, min(requested, fd_limit // API_FD_SHARE))


def limited_h11(limits: HttpLimits, counts: Counter[str] | None = None) -> type[H11Protocol]:
    """An `H11Protocol` class enforcing ``limits``; what it refuses is counted in ``counts``.

    One class per server: the per-source counts live in its closure, shared by its connections.
    """
    counted: Counter[str] = counts if counts is not None else Counter()
    per_source: Counter[str] = Counter()

    class LimitedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _source: str | None = None  # set while this connection holds a slot of its source

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            source = self.client[0] if self.client else "?"
            if len(self.connections) > limits.max_connections:
                counted["refused_total"] += 1
                transport.abort()
                return
            if per_source[source] >= limits.max_connections_per_source:
                counted["refused_source"] += 1
                transport.abort()
                return
            per_source[source] += 1
            self._source = source
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE:
                # Bytes of a request whose headers are not complete yet (the first one, or the
                # next on a kept-alive connection): they get header_timeout_s from now on.
                self._arm_header_timer()
            else:
                self._cancel_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            self._release_source()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, event: h11.Request) -> None:
            # The WebSocket protocol takes the transport over: this object sees no
            # connection_lost, so it lets go of what it holds now.
            self._cancel_header_timer()
            self._release_source()
            super().handle_websocket_upgrade(event)

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    limits.header_timeout_s, self._header_timeout
                )

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            counted["header_timeout"] += 1
            self.logger.debug("%s: request headers not complete in time", self._source)
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # What h11 cannot parse (a request line or headers over h11's 16 KiB, bytes that
            # are no HTTP) gets a problem document like every other error of the API, not
            # uvicorn's text/plain line.
            body = json.dumps(
                {
                    "type": "urn:gp8:problem:malformed-request",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "the request line or headers are malformed, or longer than "
                    f"{MAX_HEAD_BYTES // 1024} KiB together",
                }
            ).encode()
            headers = [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            counted["malformed"] += 1
            try:
                for event in (
                    h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                ):
                    self.transport.write(self.conn.send(event))
            except h11.LocalProtocolError:  # the state does not allow an answer: just close
                pass
            self.transport.close()

        def _release_source(self) -> None:
            source, self._source = self._source, None
            if source is not None:
                per_source[source] -= 1
                if per_source[source] <= 0:
                    del per_source[source]

    return LimitedH11Protocol
