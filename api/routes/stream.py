"""GET /v1/stream: the fleet's changes as they are stored, over a WebSocket or as Server-Sent
Events (docs/api.md, "Live stream"). Both routes share the path; the protocol is in
api/stream/."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Depends, Request, WebSocket
from starlette.responses import Response

from api.deps import StoreDep, Viewer
from api.stream.hub import StreamHub
from api.stream.sse import check_request, open_events
from api.stream.websocket import serve_websocket

router = APIRouter(tags=["stream"])


@router.websocket("/v1/stream")
async def stream_websocket(websocket: WebSocket) -> None:
    """The live stream over a WebSocket: key in the Authorization header or the first message."""
    await serve_websocket(websocket)


# Not in the OpenAPI description: an endless response is not something a schema-driven client
# (or fuzzer) can call; docs/api.md describes it.
@router.get("/v1/stream", include_in_schema=False, dependencies=[Depends(check_request)])
async def stream_events(request: Request, caller: Viewer, store: StoreDep) -> Response:
    """The live stream as Server-Sent Events (Accept: text/event-stream)."""
    hub = cast(StreamHub | None, request.app.state.stream_hub)
    return await open_events(request, caller, store, hub)
