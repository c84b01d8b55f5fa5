"""What both transports of the live stream do alike: who the caller is, whether the vehicle
it filters on is its fleet's, the access-log entry, and the pump that moves a subscription's
messages to the client with every wait bounded (api/stream/hub.py `Limits`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param

from api.audit import Audit
from api.deps import FleetCaller, fleet_key
from api.problems import ApiProblem
from api.ratelimit import RateLimiter
from api.security import KeyThrottle, authenticate
from api.stream.hub import Limits, Outgoing, Subscription
from api.stream.protocol import StreamError, StreamOptions, StreamRefused
from storage.errors import NotFound, StorageError
from storage.models import Role, now_ms
from storage.repository import Store

T = TypeVar("T")

# ApiProblem statuses of authentication, as stream errors.
_BY_STATUS = {
    401: StreamError.UNAUTHORIZED,
    403: StreamError.FORBIDDEN,
    404: StreamError.NOT_FOUND,
    429: StreamError.RATE_LIMITED,
}


class ClientLeft(Exception):
    """The client closed the connection: nothing more to tell it."""


async def race(*work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` (the pump, a watch for the client leaving) until one ends, cancel the
    rest, and raise what the first ended with (the reason to close, or ClientLeft)."""
    tasks = [asyncio.create_task(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in tasks:
        error = task.exception() if task in done else None
        if error is not None:
            raise error


def bearer_secret(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (None without a header)."""
    if header is None:
        return None
    scheme, secret = get_authorization_scheme_param(header)
    if scheme.lower() != "bearer" or not secret:
        raise StreamRefused(StreamError.UNAUTHORIZED, "Authorization must be Bearer <key>")
    return secret


async def authorize(
    store: Store,
    limiter: RateLimiter | None,
    secret: str | None,
    limits: Limits,
    *,
    throttle: KeyThrottle | None = None,
    source: str | None = None,
) -> FleetCaller:
    """The fleet key behind ``secret``, with the same rules and messages as the REST API,
    invalid keys throttled per client address as there (api/security.py, KeyThrottle)."""
    if not secret:
        raise StreamRefused(
            StreamError.UNAUTHORIZED,
            'missing key: send Authorization: Bearer <key>, or {"key": ...} as the first message',
        )
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=secret)
    try:
        key = await _bounded(
            authenticate(store, limiter, credentials, throttle=throttle, source=source), limits
        )
        caller = await fleet_key(key)
        caller.require(Role.VIEWER)
    except ApiProblem as exc:
        error = _BY_STATUS.get(exc.status_code, StreamError.FORBIDDEN)
        raise StreamRefused(error, exc.detail) from exc
    return caller


async def check_vehicle(store: Store, caller: FleetCaller, vehicle_id: str, limits: Limits) -> None:
    """Another fleet's vehicle is refused exactly like one that does not exist."""
    try:
        await _bounded(store.vehicles.get(caller.fleet_id, vehicle_id), limits)
    except NotFound:
        raise StreamRefused(StreamError.NOT_FOUND, "vehicle not found") from None


async def record_access(
    store: Store, caller: FleetCaller, options: StreamOptions, via: str, limits: Limits
) -> None:
    """The access-log entry of a stream (it carries positions): written before any message,
    so a stream that cannot be logged is not opened."""
    audit = Audit(store.access_log, caller.key)
    await _bounded(
        audit("read", "stream", options.vehicle_id, detail=f"{via} {options.describe()}"), limits
    )


async def key_still_valid(store: Store, caller: FleetCaller, limits: Limits) -> bool:
    """False once the stream's key was revoked or expired; True when storage cannot tell."""
    try:
        key = await _bounded(store.keys.get_by_hash(caller.key.key_hash), limits)
    except StreamRefused:
        return True  # storage trouble is not the client's fault: checked again next time
    return not (
        key is None
        or key.revoked_ms is not None
        or (key.expires_ms is not None and key.expires_ms <= now_ms())
    )


class Pump:
    """Moves a subscription's messages to one client until something ends it: `run` always
    ends by raising the `StreamRefused` to tell the client (told where to resume), unless the
    caller cancels it (the client left)."""

    def __init__(
        self,
        sub: Subscription,
        send: Callable[[Outgoing], Awaitable[None]],
        *,
        key_valid: Callable[[], Awaitable[bool]],
        limits: Limits,
        heartbeat: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.sub = sub
        self.last_sent = sub.start  # the last cursor the client has
        self._send = send
        self._key_valid = key_valid
        self._limits = limits
        self._heartbeat = heartbeat

    async def run(self) -> None:
        limits = self._limits
        loop = asyncio.get_running_loop()
        next_check = loop.time() + limits.key_check_s
        quiet_since = loop.time()
        try:
            while True:
                now = loop.time()
                wait = next_check - now
                if self._heartbeat is not None:
                    wait = min(wait, quiet_since + limits.heartbeat_s - now)
                out = await self.sub.next(max(0.0, wait))
                if out is not None:
                    await self._timed(self._send(out))
                    self.last_sent = out.cursor
                    quiet_since = loop.time()
                elif (
                    self._heartbeat is not None and loop.time() >= quiet_since + limits.heartbeat_s
                ):
                    await self._timed(self._heartbeat())
                    quiet_since = loop.time()
                if loop.time() >= next_check:
                    if not await self._key_valid():
                        raise StreamRefused(
                            StreamError.UNAUTHORIZED, "the key was revoked or has expired"
                        )
                    next_check = loop.time() + limits.key_check_s
        except StreamRefused as refusal:
            raise refusal.resume_at(self.last_sent) from None

    async def _timed(self, sending: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self._limits.send_timeout_s):
                await sending
        except TimeoutError:
            refusal = StreamRefused(
                StreamError.SLOW_CONSUMER,
                f"slow consumer: a message waited more than {self._limits.send_timeout_s:g} s",
            )
            self.sub.close(refusal)
            raise refusal from None


async def _bounded(call: Awaitable[T], limits: Limits) -> T:
    try:
        async with asyncio.timeout(limits.auth_timeout_s):
            return await call
    except (StorageError, TimeoutError) as exc:
        if isinstance(exc, NotFound):
            raise
        raise StreamRefused(StreamError.UNAVAILABLE, "storage did not answer") from exc
