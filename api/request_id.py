"""X-Request-ID on every API response, in every log line written while serving the request,
and one log line per request (logger ``api.requests``).

The id is the caller's ``X-Request-ID`` when it looks like an id (a proxy or a client tracing
its own calls), else a fresh one: a header we cannot trust to be short and printable never
reaches the logs. It lives in a context variable for the duration of the request, which the
log formatter of the entry point reads (gp8/logs.py); asyncio copies it into every task the
request starts.

The request line names the API key by its shown prefix (``gp8_`` and 8 characters, what key
listings show) and never by more: the rest of the key is the secret.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.security import KEY_PREFIX, SHOWN_PREFIX_LEN
from storage.models import random_hex

log = logging.getLogger("api.requests")

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
# What we accept from a caller: the characters of UUIDs, ULIDs, trace ids and the like.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Polled every few seconds by health checks, load balancers and Prometheus: their successful
# requests are logged at debug, so that they do not drown the rest.
_POLLED_PATHS = frozenset({"/health", "/ready", "/metrics"})

request_id_var: ContextVar[str | None] = ContextVar("gp8_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    return request_id_var.get()


def choose_request_id(offered: str | None) -> str:
    """The caller's id when sane, else a new random one."""
    if offered is not None and _SANE_ID.fullmatch(offered):
        return offered
    return random_hex(16)  # as uuid4().hex: 32 hex digits, without a syscall each


def key_prefix(authorization: str | None) -> str | None:
    """The shown prefix of a Bearer gp8 key; None for anything else (never the whole value)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    # Only a token long enough that the prefix is a small part of it: a short bootstrap key
    # or garbage is not named at all.
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
        return None
    if len(token) < 3 * SHOWN_PREFIX_LEN:
        return None
    return token[:SHOWN_PREFIX_LEN]


class RequestIdMiddleware:
    """Pure ASGI (no buffering of bodies, so the live stream and exports pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        offered = headers.get(_HEADER_KEY)
        request_id = choose_request_id(offered.decode("latin-1") if offered else None)
        token = request_id_var.set(request_id)
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", ()),
                    (_HEADER_KEY, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            try:
                self._log(scope, headers, status, started)
            finally:
                request_id_var.reset(token)

    @staticmethod
    def _log(scope: Scope, headers: dict[bytes, bytes], status: int, started: float) -> None:
        """The request's one line (``api.requests``); WebSocket sessions have none."""
        if scope["type"] != "http":
            return
        polled = scope["path"] in _POLLED_PATHS and 0 < status < 400
        level = logging.DEBUG if polled else logging.INFO
        if not log.isEnabledFor(level):
            return
        auth = headers.get(b"authorization")
        log.log(
            level,
            "%s %s %d",
            scope["method"],
            scope["path"],
            status,
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "key_prefix": key_prefix(auth.decode("latin-1") if auth else None),
                # Set by api/deps.py once the key is known (request.state lives in the scope).
                "key_id": (scope.get("state") or {}).get("key_id"),
            },
        )
