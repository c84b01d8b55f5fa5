"""The FastAPI application: routers, error handling, limits, OpenAPI.

`create_app` takes plain values (the entry point reads Settings) and a started `Store`; the
store's lifetime belongs to the caller, which may share it with the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry

from api.problems import (
    BodyLimitMiddleware,
    InternalErrorMiddleware,
    Problem,
    ValidationIssue,
    install_handlers,
)
from api.ratelimit import RateLimiter
from api.routes import (
    access_log,
    audit,
    command_controls,
    commands,
    data,
    devices,
    events,
    fleets,
    keys,
    positions,
    trips,
    vehicles,
)
from api.routes import alert_rules as alert_rule_routes
from api.routes import geofences as geofence_routes
from api.routes import health as health_routes
from api.routes import metrics as metrics_routes
from api.routes import stream as stream_routes
from api.routes import theft as theft_routes
from api.routes import webhooks as webhook_routes
from api.schemas.positions import PositionsFeatureCollection, TrackFeature
from api.security import ensure_operator_key
from api.stream import StreamHub
from storage.repository import Store

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"
# Largest request body accepted: the biggest legitimate one is a map polygon of 10,000
# vertices (~400 kB of JSON); 1 MiB leaves room without letting a client make us buffer more.
MAX_BODY_BYTES = 1024 * 1024

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]

_DESCRIPTION = """\
The gp8 fleet API. Every request under `/v1` carries `Authorization: Bearer <key>`; a key
belongs to one fleet (roles viewer < manager < admin) or to the platform operator. Another
fleet's resources answer 404, a role too low 403. Errors are RFC 9457
`application/problem+json`. See docs/api.md.
"""


def create_app(
    store: Store,
    *,
    bootstrap_key: str | None = None,
    rate_limit_per_minute: int | None = 600,
    health: HealthCheck | None = None,
    metrics: CollectorRegistry | None = None,
    extra_routers: Iterable[APIRouter] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    stream_hub: StreamHub | None = None,
    webhook_allow_private: bool = False,
) -> FastAPI:
    """The API over ``store`` (already started). ``rate_limit_per_minute`` None disables the
    limit; ``health`` adds components (gateway, ...) to GET /health; ``metrics`` is what
    GET /metrics renders; ``stream_hub`` is the live stream's fan-out, owned by the caller
    (without one, the app runs its own for its lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if bootstrap_key:
            key = await ensure_operator_key(store.keys, bootstrap_key)
            logger.info("bootstrap operator key %s is ready", key.id)
        # Without a hub handed in (gp8 serve passes its own), the app runs one for its life.
        owned_hub = None
        if app.state.stream_hub is None:
            owned_hub = app.state.stream_hub = StreamHub(app.state.store.stream)
        yield
        if owned_hub is not None:
            await owned_hub.stop()
            app.state.stream_hub = None

    app = FastAPI(
        title="gp8 fleet API",
        version=API_VERSION,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.state.stream_hub = stream_hub
    # Webhook URLs may name private and loopback hosts: tests and development only.
    app.state.webhook_allow_private = webhook_allow_private
    app.state.health = health
    app.state.metrics = metrics
    app.state.rate_limiter = RateLimiter(rate_limit_per_minute) if rate_limit_per_minute else None
    install_handlers(app)
    # Added last = outermost: the body limit applies before anything reads the body.
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    for router in (
        health_routes.router,
        metrics_routes.router,
        fleets.router,
        keys.router,
        vehicles.router,
        devices.router,
        positions.router,
        events.router,
        trips.router,
        access_log.router,
        data.router,
        commands.router,
        command_controls.router,
        audit.router,
        geofence_routes.router,
        stream_routes.router,
        webhook_routes.router,
        alert_rule_routes.router,
        theft_routes.router,
        *extra_routers,
    ):
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# Models referenced by hand-written OpenAPI fragments (problem responses, export formats),
# which FastAPI cannot discover from the route signatures.
_EXTRA_SCHEMAS = (Problem, ValidationIssue, PositionsFeatureCollection, TrackFeature)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in _EXTRA_SCHEMAS:
        model_schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        for name, definition in model_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, model_schema)
    app.openapi_schema = schema
    return schema
