"""The FastAPI application: routers, error handling, limits, OpenAPI.

`create_app` takes plain values (the entry point reads Settings) and a started `Store`; the
store's lifetime belongs to the caller, which may share it with the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute

from api.params import check_request
from api.problems import (
    BodyLimitMiddleware,
    InternalErrorMiddleware,
    Problem,
    ValidationIssue,
    complete_responses,
    install_handlers,
)
from api.ratelimit import RateLimiter, RateLimitHeaders
from api.request_id import RequestIdMiddleware
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
from api.routes import console as console_routes
from api.routes import docs as docs_routes
from api.routes import drivers as driver_routes
from api.routes import erasure as erasure_routes
from api.routes import exports as export_routes
from api.routes import geofences as geofence_routes
from api.routes import health as health_routes
from api.routes import imports as import_routes
from api.routes import me as me_routes
from api.routes import metrics as metrics_routes
from api.routes import privacy as privacy_routes
from api.routes import retention as retention_routes
from api.routes import stream as stream_routes
from api.routes import theft as theft_routes
from api.routes import webhooks as webhook_routes
from api.schemas.positions import PositionsFeatureCollection, TrackFeature
from api.security import DEFAULT_KEY_TTL_DAYS, ensure_operator_key, refuse_key_in_url
from api.services.privacy import EntryPrivacy
from api.stream import StreamHub
from storage.pseudonyms import BadgePseudonyms
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
    console: console_routes.ConsoleOptions | None = None,
    ops_only: bool = False,
    readiness: Mapping[str, health_routes.ReadyCheck] | None = None,
    key_ttl_days: int = DEFAULT_KEY_TTL_DAYS,
    pseudonyms: BadgePseudonyms | None = None,
) -> FastAPI:
    """The API over ``store`` (already started). ``rate_limit_per_minute`` None disables the
    limit; ``health`` adds components (gateway, ...) to GET /health, ``readiness`` checks
    (the broker link, ...) to GET /ready; ``metrics`` is what
    GET /metrics renders; ``stream_hub`` is the live stream's fan-out, owned by the caller
    (without one, the app runs its own for its lifespan); ``ops_only`` serves only /, /health,
    /ready and /metrics (`gp8 serve --role gateway`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if bootstrap_key:
            key = await ensure_operator_key(store.keys, bootstrap_key)
            logger.info("bootstrap operator key %s is ready", key.id)
        # Without a hub handed in (gp8 serve passes its own), the app runs one for its life.
        owned_hub = None
        if app.state.stream_hub is None:
            owned_hub = app.state.stream_hub = StreamHub(
                app.state.store.stream, privacy=EntryPrivacy(app.state.store)
            )
        yield
        if app.state.rate_limiter is not None:
            await app.state.rate_limiter.aclose()  # before the caller closes the store
        if owned_hub is not None:
            await owned_hub.stop()
            app.state.stream_hub = None

    # Swagger UI and ReDoc with their assets served by gp8, not a CDN (api/routes/docs.py).
    app = FastAPIOffline(
        title="gp8 fleet API",
        version=API_VERSION,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=docs_routes.DOCS_URL,
        redoc_url=docs_routes.REDOC_URL,
        openapi_url=docs_routes.OPENAPI_URL,
        static_url=docs_routes.DOCS_ASSETS_URL,
        # Every route refuses query parameters and Accept headers it does not declare.
        # A key in the URL is refused first, whatever the route (api/security.py).
        dependencies=[Depends(_check_request)],
        # gp8 exports Prometheus counters, not OpenTelemetry: without this, FastAPI asks the
        # three global OpenTelemetry providers whether they are configured on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.store = store
    # The driver key: badges a client names are pseudonymised as the gateway does.
    app.state.pseudonyms = pseudonyms or BadgePseudonyms.development()
    app.state.key_ttl_days = key_ttl_days  # a new key's lifetime when none is asked for
    app.state.stream_hub = stream_hub
    # Webhook URLs may name private and loopback hosts: tests and development only.
    app.state.webhook_allow_private = webhook_allow_private
    app.state.health = health
    # GET /ready's checks beyond storage (the broker link, ...): name -> check.
    app.state.readiness = dict(readiness or {})
    # The web console's tile server and map library (api/routes/console.py, docs/console.md).
    app.state.console = console or console_routes.ConsoleOptions()
    app.state.metrics = metrics
    # Shared through storage: a key's limit holds across API processes (docs/scaling.md).
    app.state.rate_limiter = (
        RateLimiter(rate_limit_per_minute, counters=store.counters)
        if rate_limit_per_minute
        else None
    )
    install_handlers(app)
    # Added last = outermost: the body limit applies before anything reads the body.
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    # Outermost of all: even a refused body or an internal error carries its X-Request-ID.
    app.add_middleware(RequestIdMiddleware)
    for router in (*ROUTERS, *extra_routers):
        # ops_only (`gp8 serve --role gateway`): what a load balancer and monitoring call.
        if not ops_only or router in _OPS_ROUTERS:
            app.include_router(router)
    # The document lists the routes in the order above; requests try them in another one.
    documented = list(app.routes)
    app.router.routes.sort(key=_dispatch_rank)
    app.openapi = lambda: _openapi(app, documented)  # type: ignore[method-assign]
    return app


async def _check_request(connection: HTTPConnection) -> None:
    """The app-wide checks as one dependency: FastAPI solves each dependency node of every
    request, so two checks in one call cost one node (api/deps.py)."""
    await refuse_key_in_url(connection)
    await check_request(connection)


# The API's routers in the order of the OpenAPI document (and of docs/api.md).
ROUTERS = (
    docs_routes.router,
    health_routes.router,
    metrics_routes.router,
    fleets.router,
    keys.router,
    vehicles.router,
    devices.router,
    import_routes.router,
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
    me_routes.router,
    retention_routes.router,
    export_routes.router,
    erasure_routes.router,
    privacy_routes.router,
    driver_routes.router,
    console_routes.router,
)
# The operational endpoints (/, /health, /metrics): served whatever the process's role.
_OPS_ROUTERS = (docs_routes.router, health_routes.router, metrics_routes.router)
# Tried first: a request is matched against the routes in order, each included router costing
# ~5 µs to try (FastAPI keeps it whole and walks its routes), and these serve most requests
# (the map, histories, commands, provisioning). No route of one router serves a request another
# router's route serves (tests/api/test_routing.py), so the order changes no answer.
_HOT_ROUTERS = (positions.router, commands.router, vehicles.router)


def _dispatch_rank(route: BaseRoute) -> int:
    """The hot routers first, the rest of /v1 next, the documentation and ops routes last."""
    router = getattr(route, "original_router", None)  # an included router
    if router is None or router in _OPS_ROUTERS:
        return len(_HOT_ROUTERS) + 1  # Swagger UI and its assets, /, /health, /ready, /metrics
    if router in _HOT_ROUTERS:
        return _HOT_ROUTERS.index(router)
    return len(_HOT_ROUTERS)


# Models referenced by hand-written OpenAPI fragments (problem responses, export formats),
# which FastAPI cannot discover from the route signatures.
_EXTRA_SCHEMAS = (Problem, ValidationIssue, PositionsFeatureCollection, TrackFeature)


def _openapi(app: FastAPI, documented: list[BaseRoute]) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    # Routes added after create_app (tests) come last, as they were added.
    listed = {id(route) for route in documented}
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=[*documented, *(route for route in app.routes if id(route) not in listed)],
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in _EXTRA_SCHEMAS:
        model_schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        for name, definition in model_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, model_schema)
    complete_responses(schema)
    app.openapi_schema = schema
    return schema
