"""GET /metrics: the process's counters in the Prometheus text format.

What is exposed is whatever the entry point registered in the app's `CollectorRegistry`
(gateway, MQTT bridge, commands): the API knows nothing of those components. Counters only, no
fleet data, so like /health it needs no key; deployments keep it on the internal network
(docs/architecture.md).
"""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def get_metrics(request: Request) -> Response:
    """Counters and histograms of this process (Prometheus text exposition format)."""
    registry = cast(CollectorRegistry | None, request.app.state.metrics)
    body = generate_latest(registry) if registry is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
