"""The live stream as Server-Sent Events (GET /v1/stream, ``Accept: text/event-stream``).

The same subscription as the WebSocket, written as ``id: <cursor>`` / ``event: <kind>`` /
``data: <message>`` frames; ``Last-Event-ID`` (what an EventSource sends when it reconnects)
or ``?after=`` resumes. Auth is the Authorization header only, through the ordinary
dependencies, so refusals before the stream starts are ordinary RFC 9457 problems (410 with
``horizon`` for an expired cursor). Once streaming, an ending is an ``event: error`` frame and
the end of the body. The response is written at the ASGI level so that every write is bounded
and the client leaving is noticed even when the stream is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.deps import FleetCaller
from api.problems import ApiProblem
from api.stream import session
from api.stream.hub import Outgoing, StreamHub, Subscription
from api.stream.protocol import (
    SSE_HEARTBEAT,
    SSE_PREAMBLE,
    StreamError,
    StreamOptions,
    StreamRefused,
    dumps,
    parse_cursor,
    parse_query,
    ready_message,
    refuse_secret_in_url,
    sse_error,
    sse_frame,
)
from storage.repository import Store

MEDIA_TYPE = "text/event-stream"


def as_problem(refusal: StreamRefused) -> ApiProblem:
    """A refusal before the stream started, as the REST API's problem."""
    return ApiProblem(
        refusal.closing.http_status,
        refusal.detail,
        type_=f"urn:gp8:problem:{refusal.error.value.replace('_', '-')}",
        **refusal.extra,
    )


async def check_request(request: Request) -> None:
    """Before authentication: no key in the URL, and a client that asked for events."""
    try:
        refuse_secret_in_url(request.query_params.keys())
    except StreamRefused as refusal:
        raise as_problem(refusal) from None
    accept = request.headers.get("accept", "")
    if MEDIA_TYPE not in accept.lower():
        raise ApiProblem(
            406,
            "GET /v1/stream is a WebSocket, or Server-Sent Events with Accept: text/event-stream",
            type_="urn:gp8:problem:not-acceptable",
        )


async def open_events(
    request: Request, caller: FleetCaller, store: Store, hub: StreamHub | None
) -> EventStream:
    """The event-stream response for ``caller``; refusals raised as problems."""
    try:
        if hub is None:
            raise StreamRefused(StreamError.UNAVAILABLE, "the live stream is not running")
        limits = hub.limits
        options = parse_query(request.query_params.multi_items())
        last_event_id = request.headers.get("last-event-id")
        if last_event_id:
            # An EventSource reconnects to the same URL: its Last-Event-ID is the newer cursor.
            options = options.with_after(parse_cursor(last_event_id, "Last-Event-ID"))
        if options.vehicle_id is not None:
            await session.check_vehicle(store, caller, options.vehicle_id, limits)
        await session.record_access(store, caller, options, "sse", limits)
        sub = await hub.open(caller.fleet_id, options)
    except StreamRefused as refusal:
        raise as_problem(refusal) from None
    return EventStream(sub, hub, options, store, caller)


class EventStream(Response):
    """Streams one subscription; releases it when done, however it ends."""

    def __init__(
        self,
        sub: Subscription,
        hub: StreamHub,
        options: StreamOptions,
        store: Store,
        caller: FleetCaller,
    ) -> None:
        super().__init__(
            status_code=200,
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        # Not a body of known length: the stream ends when the subscription does.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._sub = sub
        self._hub = hub
        self._options = options
        self._store = store
        self._caller = caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub, limits = self._sub, self._hub.limits
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

            async def write(data: bytes) -> None:
                await send({"type": "http.response.body", "body": data, "more_body": True})

            async def send_message(out: Outgoing) -> None:
                await write(sse_frame(out.cursor, out.kind.value, out.text))

            async def heartbeat() -> None:
                await write(SSE_HEARTBEAT)

            async def key_valid() -> bool:
                return await session.key_still_valid(self._store, self._caller, limits)

            ready = sse_frame(sub.start, "ready", dumps(ready_message(sub.start, self._options)))
            pump = session.Pump(
                sub, send_message, key_valid=key_valid, limits=limits, heartbeat=heartbeat
            )
            try:
                async with asyncio.timeout(limits.send_timeout_s):
                    await write(SSE_PREAMBLE + ready)
                await session.race(pump.run(), _until_disconnect(receive))
            except (session.ClientLeft, TimeoutError):
                return
            except StreamRefused as refusal:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(limits.close_timeout_s):
                        await write(sse_error(refusal))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(limits.close_timeout_s):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._hub.release(sub)


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise session.ClientLeft
