"""The live stream's wire protocol (GET /v1/stream, docs/api.md "Live stream"), without I/O.

What a client may say (query parameters, the first WebSocket message), what it is told (the
``ready`` and ``error`` messages, Server-Sent Events frames) and how each refusal ends the
connection: one table, `CLOSINGS`, gives every error its WebSocket close code and HTTP status,
so the WebSocket and SSE transports cannot disagree on what a failure means.

Keys never travel in a URL (it ends up in proxy and server logs): a ``key``/``token`` query
parameter is refused outright, even next to a valid ``Authorization`` header.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import orjson

from storage.models import StreamKind

# The first WebSocket message is a small JSON object; anything bigger is not one of ours.
MAX_FIRST_MESSAGE = 4096
# A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5: 125 minus the code).
MAX_REASON_BYTES = 123
# Ids are ``<prefix>_<24 hex>``; a longer vehicle_id is not one of ours (api.params.Id).
MAX_ID_LEN = 64
# Cursors are stored as 64-bit integers on both engines.
MAX_CURSOR = 2**63 - 1

ALL_KINDS = frozenset(StreamKind)
QUERY_PARAMS = frozenset({"after", "kinds", "vehicle_id"})
FIRST_MESSAGE_FIELDS = frozenset({"key", "after", "kinds", "vehicle_id"})
# Names under which clients (and other servers' docs) put a secret in the URL.
URL_SECRET_PARAMS = frozenset(
    {"key", "token", "access_token", "api_key", "apikey", "auth", "authorization", "bearer"}
)


class StreamError(StrEnum):
    """Why a stream is refused or ended: the ``error`` of the error message."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    CURSOR_EXPIRED = "cursor_expired"
    SLOW_CONSUMER = "slow_consumer"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True, slots=True)
class Closing:
    ws_code: int
    http_status: int
    resumable: bool  # the client should reconnect with after=<its last cursor>


# Application close codes are 4000 + the HTTP status that means the same, so a client can map
# them without a table; the standard codes where RFC 6455 has one that fits.
CLOSINGS: dict[StreamError, Closing] = {
    StreamError.BAD_REQUEST: Closing(4400, 400, False),
    StreamError.UNAUTHORIZED: Closing(4401, 401, False),
    StreamError.FORBIDDEN: Closing(4403, 403, False),
    # Another fleet's vehicle and a vehicle that does not exist are the same answer.
    StreamError.NOT_FOUND: Closing(4404, 404, False),
    # No first message in time (key or options expected).
    StreamError.TIMEOUT: Closing(4408, 408, False),
    # Gone: what came after the cursor was pruned; start again without `after`.
    StreamError.CURSOR_EXPIRED: Closing(4410, 410, False),
    # Too many messages waiting for this client: dropped rather than slowing anyone.
    StreamError.SLOW_CONSUMER: Closing(4429, 429, True),
    # 1013 Try Again Later: the key's rate limit, or this process's client limit.
    StreamError.RATE_LIMITED: Closing(1013, 429, True),
    StreamError.OVERLOADED: Closing(1013, 503, True),
    # 1011 Internal Error: storage did not answer.
    StreamError.UNAVAILABLE: Closing(1011, 503, True),
    # 1001 Going Away: the server is stopping; another process (or this one, restarted) resumes.
    StreamError.SHUTTING_DOWN: Closing(1001, 503, True),
}


class StreamRefused(Exception):
    """The stream is refused or ended for ``error``; ``extra`` goes into the error message."""

    def __init__(self, error: StreamError, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.extra = extra

    @property
    def closing(self) -> Closing:
        return CLOSINGS[self.error]

    def resume_at(self, cursor: int) -> StreamRefused:
        """The same refusal telling a resumable client where to start again."""
        if not self.closing.resumable:
            return self
        return StreamRefused(
            self.error, f"{self.detail}; resume with after={cursor}", **self.extra, cursor=cursor
        )

    def message(self) -> dict[str, Any]:
        """``{"kind": "error", "error", "detail", ...}``: sent before the close."""
        return {"kind": "error", "error": self.error.value, "detail": self.detail, **self.extra}

    @property
    def reason(self) -> str:
        """The close frame's reason: the detail, cut to what a close frame holds."""
        raw = self.detail.encode()
        if len(raw) <= MAX_REASON_BYTES:
            return self.detail
        return raw[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def bad_request(detail: str) -> StreamRefused:
    return StreamRefused(StreamError.BAD_REQUEST, detail)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """What a client asked for; None = not given (all kinds, all vehicles, from now)."""

    after: int | None = None
    kinds: frozenset[StreamKind] | None = None
    vehicle_id: str | None = None

    def combine(self, other: StreamOptions) -> StreamOptions:
        """Options from the query string and from the first message; one place per option."""
        for name in ("after", "kinds", "vehicle_id"):
            if getattr(self, name) is not None and getattr(other, name) is not None:
                raise bad_request(f"{name} is given both in the URL and in the first message")
        return StreamOptions(
            after=self.after if self.after is not None else other.after,
            kinds=self.kinds if self.kinds is not None else other.kinds,
            vehicle_id=self.vehicle_id if self.vehicle_id is not None else other.vehicle_id,
        )

    def with_after(self, after: int | None) -> StreamOptions:
        return replace(self, after=after)

    def describe(self) -> str:
        """For the access log."""
        kinds = ",".join(sorted(self.kinds)) if self.kinds else "all"
        return f"kinds={kinds} after={'now' if self.after is None else self.after}"


def refuse_secret_in_url(names: Iterable[str]) -> None:
    found = sorted({name for name in names if name.lower() in URL_SECRET_PARAMS})
    if found:
        raise bad_request(
            f"never put a key in the URL ({', '.join(found)}): send Authorization: Bearer <key>"
            ' or, on a WebSocket, {"key": ...} as the first message'
        )


def parse_query(items: Iterable[tuple[str, str]]) -> StreamOptions:
    """``?after=&kinds=a,b&vehicle_id=`` (kinds may also repeat); unknown names refused."""
    pairs = list(items)
    refuse_secret_in_url(name for name, _ in pairs)
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if name not in QUERY_PARAMS:
            raise bad_request(f"unknown parameter {name!r}; the stream takes {_names()}")
        values.setdefault(name, []).append(value)
    for name in ("after", "vehicle_id"):
        if len(values.get(name, ())) > 1:
            raise bad_request(f"{name} is given more than once")
    return StreamOptions(
        after=parse_cursor(values["after"][0], "after") if "after" in values else None,
        kinds=parse_kinds(",".join(values["kinds"])) if "kinds" in values else None,
        vehicle_id=_vehicle_id(values["vehicle_id"][0]) if "vehicle_id" in values else None,
    )


def parse_first_message(text: str) -> tuple[str | None, StreamOptions]:
    """The first WebSocket message: ``{"key"?, "after"?, "kinds"?, "vehicle_id"?}``."""
    if len(text) > MAX_FIRST_MESSAGE:
        raise bad_request(f"the first message is longer than {MAX_FIRST_MESSAGE} characters")
    try:
        body = json.loads(text)
    except ValueError:
        raise bad_request("the first message must be a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("the first message must be a JSON object")
    unknown = sorted(set(body) - FIRST_MESSAGE_FIELDS)
    if unknown:
        raise bad_request(
            f"unknown field(s) {', '.join(unknown)}; the first message takes "
            + ", ".join(sorted(FIRST_MESSAGE_FIELDS))
        )
    key = body.get("key")
    if key is not None and not isinstance(key, str):
        raise bad_request("key must be a string")
    after = body.get("after")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
        raise bad_request("after must be an integer cursor")
    if after is not None:
        after = parse_cursor(str(after), "after")
    kinds = body.get("kinds")
    if kinds is not None:
        if isinstance(kinds, str):
            kinds = kinds.split(",")
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise bad_request("kinds must be a list of strings")
        kinds = parse_kinds(",".join(kinds))
    vehicle_id = body.get("vehicle_id")
    if vehicle_id is not None:
        if not isinstance(vehicle_id, str):
            raise bad_request("vehicle_id must be a string")
        vehicle_id = _vehicle_id(vehicle_id)
    return key, StreamOptions(after=after, kinds=kinds, vehicle_id=vehicle_id)


def parse_cursor(value: str, name: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_CURSOR:
        raise bad_request(f"{name} must be a cursor: an integer from 0 (got {value[:32]!r})")
    return int(text)


def parse_kinds(value: str) -> frozenset[StreamKind]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise bad_request(f"kinds must name at least one of {_kind_names()}")
    unknown = sorted({name for name in names if name not in ALL_KINDS})
    if unknown:
        raise bad_request(f"unknown kind(s) {', '.join(unknown)}; kinds are {_kind_names()}")
    return frozenset(StreamKind(name) for name in names)


def _vehicle_id(value: str) -> str:
    if not value or len(value) > MAX_ID_LEN:
        raise bad_request(f"vehicle_id must be 1..{MAX_ID_LEN} characters")
    return value


def _names() -> str:
    return ", ".join(sorted(QUERY_PARAMS))


def _kind_names() -> str:
    return ", ".join(kind.value for kind in StreamKind)


# --- what the server says ---------------------------------------------------------------------


def ready_message(cursor: int, options: StreamOptions) -> dict[str, Any]:
    """The first message of every stream: what follows has cursors after ``cursor``, so a
    client that leaves before any message resumes with ``after=cursor``."""
    kinds = options.kinds if options.kinds is not None else ALL_KINDS
    return {
        "kind": "ready",
        "cursor": cursor,
        "vehicle_id": options.vehicle_id,
        "data": {"kinds": sorted(kinds)},
    }


def dumps(message: Mapping[str, Any]) -> str:
    return orjson.dumps(message).decode()


def sse_frame(cursor: int, event: str, data: str) -> bytes:
    """One Server-Sent Event. ``data`` is compact JSON: it holds no raw newline."""
    return f"id: {cursor}\nevent: {event}\ndata: {data}\n\n".encode()


def sse_error(refusal: StreamRefused) -> bytes:
    # No id: the client's Last-Event-ID stays the last message it received.
    return f"event: error\ndata: {dumps(refusal.message())}\n\n".encode()


# A comment line: keeps proxies and the client's read timeout from closing an idle stream.
SSE_HEARTBEAT = b": keep-alive\n\n"
# How long an EventSource waits before it reconnects after the stream ends.
SSE_RETRY_MS = 2000
SSE_PREAMBLE = f"retry: {SSE_RETRY_MS}\n\n".encode()
