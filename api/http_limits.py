"""Connection limits uvicorn does not have: a header deadline, a head size, connection caps.

uvicorn's HTTP protocols never time out a request whose headers are still arriving (their only
timer is the keep-alive one, armed after a response and cancelled by any byte), so a client that
sends a header line every few seconds (slowloris) holds a socket, a file descriptor and a parser
for as long as it likes; uvicorn also accepts any number of connections, so enough of them
exhaust the process's file descriptors and the device listeners' ``accept`` fails; and its
httptools protocol (llhttp, the faster parser) buffers a request line and headers of any length.
`limited_http` returns a subclass of uvicorn's `HttpToolsProtocol` (given to
``uvicorn.Config(http=...)``) that adds, per connection:

* a **header deadline**: from the connection's start, and from the first byte of each next
  request on a kept-alive connection, the request line and headers must be complete within
  ``header_timeout_s``, else the connection is closed (counted ``header_timeout``);
* a **head size**: a request line and headers over `MAX_HEAD_BYTES` get a 400 problem document
  and the connection is closed (counted ``malformed``, as is any request llhttp cannot parse);
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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# What the API may take of the process's file descriptors (RLIMIT_NOFILE): a quarter, so that
# the device listeners, storage and the broker connection keep the other three quarters
# whatever the API is sent (with the common soft limit of 1,024: 256 API connections).
API_FD_SHARE = 4
# A request's line and headers at most (h11's bound, which the API had before httptools): more
# is refused with a 400 problem. Browsers and HTTP clients send well under 8 KiB.
MAX_HEAD_BYTES = 16 * 1024

_MALFORMED_BODY = json.dumps(
    {
        "type": "urn:gp8:problem:malformed-request",
        "title": "Bad Request",
        "status": 400,
        "detail": "the request line or headers are malformed, or longer than "
        f"{MAX_HEAD_BYTES // 1024} KiB together",
    }
).encode()
# What llhttp cannot parse gets a problem document like every other error of the API, not
# uvicorn's text/plain line; built once, it is the same bytes every time.
MALFORMED_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n" % len(_MALFORMED_BODY)
) + _MALFORMED_BODY


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


class HeadTooLong(Exception):
    """A complete request head over `MAX_HEAD_BYTES` (raised in llhttp's callback: a 400)."""


class HostMissing(Exception):
    """An HTTP/1.1 request without exactly one Host header, which RFC 9112 §3.2 answers 400
    (raised in llhttp's callback, as HeadTooLong); llhttp lets it through, h11 refused it."""


def limited_http(limits: HttpLimits, counts: Counter[str] | None = None) -> type[HttpToolsProtocol]:
    """An `HttpToolsProtocol` class enforcing ``limits``; what it refuses is counted in ``counts``.

    One class per server: the per-source counts live in its closure, shared by its connections.
    """
    counted: Counter[str] = counts if counts is not None else Counter()
    per_source: Counter[str] = Counter()

    class LimitedHttpProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _source: str | None = None  # set while this connection holds a slot of its source
        # What arrives now is (the start of) a request's line and headers: from the connection's
        # start and from each request's last byte until the next request's headers end.
        _in_head = True
        # Some of it has arrived (a request, a CRLF before one): the header deadline runs.
        # Not after a request's last byte alone: the app may answer for long (a stream).
        _head_pending = True
        _head_bytes = 0  # received while in a head (the part after a request's end not counted)

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
            if self._in_head:
                self._head_pending = True
                self._head_bytes += len(data)
            super().data_received(data)
            if not self._head_pending or self.transport.is_closing():
                return
            if self._head_bytes > MAX_HEAD_BYTES:
                # llhttp would buffer an endless head: refused here, as h11 did by itself.
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("request head too long")
                return
            # Bytes of a request whose headers are not complete yet (the first one, or the
            # next on a kept-alive connection): they get header_timeout_s from now on.
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            self._head_pending = True  # the next request's first byte, maybe in the same read
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = self._head_pending = False
            self._head_bytes = 0
            self._cancel_header_timer()
            # A head that came whole in one read: its size from what llhttp parsed (each
            # header's separators counted as ": " and CRLF).
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > MAX_HEAD_BYTES:
                raise HeadTooLong  # llhttp raises it from feed_data: uvicorn's 400 path
            if self.parser.get_http_version() == "1.1" and _hosts(self.headers) != 1:
                raise HostMissing
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head = True
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            self._release_source()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            # The WebSocket protocol takes the transport over: this object sees no
            # connection_lost, so it lets go of what it holds now.
            self._cancel_header_timer()
            self._release_source()
            self._in_head = self._head_pending = False  # no request of its own any more
            super().handle_websocket_upgrade()

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
            if self.transport.is_closing() or not self._head_pending:
                return
            if self.flow.read_paused:
                # Pipelined requests wait behind one being answered and uvicorn reads no more
                # until then: the rest of this head cannot arrive, so its time does not run.
                self._arm_header_timer()
                return
            counted["header_timeout"] += 1
            self.logger.debug("%s: request headers not complete in time", self._source)
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            counted["malformed"] += 1
            cycle = self.cycle
            # Not into the middle of a response (a pipelined request after one being answered,
            # a broken chunked body the app answered early): then just close.
            if cycle is None or not cycle.response_started or cycle.response_complete:
                self.transport.write(MALFORMED_RESPONSE)
            self.transport.close()

        def _release_source(self) -> None:
            source, self._source = self._source, None
            if source is not None:
                per_source[source] -= 1
                if per_source[source] <= 0:
                    del per_source[source]

    return LimitedHttpProtocol


def _hosts(headers: list[tuple[bytes, bytes]]) -> int:
    # uvicorn keeps the names lowercased.
    return sum(1 for name, _ in headers if name == b"host")
