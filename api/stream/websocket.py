"""The live stream over a WebSocket (GET /v1/stream with an Upgrade; docs/api.md).

The connection is accepted first, so that every refusal reaches the client as an error
message and a close code with its reason (a refused upgrade would be a bare HTTP 403 that a
browser cannot even read). Then: the key from the ``Authorization`` header or, without one,
from the first message, which may also carry the options; a ``ready`` message; the messages.
Two tasks per connection: the pump (subscription to socket) and a listener that notices the
client leaving, since a quiet stream would otherwise never find out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.ratelimit import RateLimiter
from api.security import KeyThrottle
from api.stream import session
from api.stream.hub import Limits, Outgoing, StreamHub
from api.stream.protocol import (
    StreamError,
    StreamRefused,
    bad_request,
    dumps,
    parse_first_message,
    parse_query,
    ready_message,
)
from storage.repository import Store


async def serve_websocket(websocket: WebSocket) -> None:
    """Run one stream client to its end."""
    await websocket.accept()
    hub = cast(StreamHub | None, websocket.app.state.stream_hub)
    limits = hub.limits if hub is not None else Limits()
    try:
        if hub is None:
            raise StreamRefused(StreamError.UNAVAILABLE, "the live stream is not running")
        await _serve(websocket, hub)
    except StreamRefused as refusal:
        await _close(websocket, refusal, limits)
    except (session.ClientLeft, WebSocketDisconnect):
        pass


async def _serve(websocket: WebSocket, hub: StreamHub) -> None:
    store = cast(Store, websocket.app.state.store)
    limiter = cast(RateLimiter | None, websocket.app.state.rate_limiter)
    limits = hub.limits
    options = parse_query(websocket.query_params.multi_items())
    secret = session.bearer_secret(websocket.headers.get("authorization"))
    by_header = secret is not None
    if not by_header:
        secret, given = parse_first_message(await _first_message(websocket, limits))
        options = options.combine(given)
    throttle = cast(KeyThrottle | None, getattr(websocket.app.state, "key_throttle", None))
    source = websocket.client.host if websocket.client is not None else None
    caller = await session.authorize(
        store, limiter, secret, limits, throttle=throttle, source=source
    )
    if options.vehicle_id is not None:
        await session.check_vehicle(store, caller, options.vehicle_id, limits)
    await session.record_access(store, caller, options, "websocket", limits)
    async with hub.subscribe(caller.fleet_id, options) as sub:
        await _send(websocket, dumps(ready_message(sub.start, options)), limits)

        async def send(out: Outgoing) -> None:
            await websocket.send_text(out.text)

        async def key_valid() -> bool:
            return await session.key_still_valid(store, caller, limits)

        pump = session.Pump(sub, send, key_valid=key_valid, limits=limits)
        await session.race(pump.run(), _listen(websocket, by_header))


async def _first_message(websocket: WebSocket, limits: Limits) -> str:
    try:
        async with asyncio.timeout(limits.first_message_timeout_s):
            message = await websocket.receive()
    except TimeoutError:
        raise StreamRefused(
            StreamError.TIMEOUT,
            f"no first message within {limits.first_message_timeout_s:g} s:"
            ' send {"key": ...} or an Authorization header',
        ) from None
    return _text(message)


async def _listen(websocket: WebSocket, by_header: bool) -> None:
    """Until the client leaves; anything it says now is a mistake worth telling."""
    message = await websocket.receive()
    _text(message)
    hint = (
        "with an Authorization header, give after, kinds and vehicle_id in the query string"
        if by_header
        else "the stream takes one message, the first"
    )
    raise bad_request(f"unexpected message: {hint}")


def _text(message: Message) -> str:
    if message["type"] == "websocket.disconnect":
        raise session.ClientLeft
    text = message.get("text")
    if isinstance(text, str):
        return text
    data = message.get("bytes")
    if isinstance(data, bytes):
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise bad_request("messages must be UTF-8 JSON") from None
    raise bad_request("empty message")


async def _send(websocket: WebSocket, text: str, limits: Limits) -> None:
    try:
        async with asyncio.timeout(limits.send_timeout_s):
            await websocket.send_text(text)
    except TimeoutError:
        raise StreamRefused(StreamError.SLOW_CONSUMER, "the client does not read") from None


async def _close(websocket: WebSocket, refusal: StreamRefused, limits: Limits) -> None:
    """The error message, then the close frame with its code and reason, each bounded: a
    client that stopped reading must not hold this task."""
    if websocket.application_state is not WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limits.close_timeout_s):
            await websocket.send_text(dumps(refusal.message()))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limits.close_timeout_s):
            await websocket.close(refusal.closing.ws_code, refusal.reason)
