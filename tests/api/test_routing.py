"""The order requests try the routes in (api/app.py): the most-called routers first, which can
change no answer, and the OpenAPI document still in the routers' documented order."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute, Mount, Route

from api.app import ROUTERS
from api.routes import commands, positions, vehicles

_PARAM = re.compile(r"\{[^}]+\}")
_REST = re.compile(r"\{[^}:]+:path\}")  # matches the rest of the path, slashes included


def _served(entry: BaseRoute) -> Iterator[tuple[str, frozenset[str]]]:
    """(path, methods) of what one entry of the app's route list serves; ``*`` for any."""
    router = getattr(entry, "original_router", None)  # an included router
    for route in router.routes if router is not None else [entry]:
        if isinstance(route, APIWebSocketRoute):
            yield route.path, frozenset({"WEBSOCKET"})
        elif isinstance(route, Mount):
            yield route.path + "/{rest:path}", frozenset({"*"})
        elif isinstance(route, APIRoute | Route):
            yield route.path, frozenset(route.methods or {"*"})


def _may_match_one_path(a: str, b: str) -> bool:
    """Whether some request path matches both path templates (a parameter matches any
    segment, a ``:path`` one any rest)."""
    for x, y in itertools.zip_longest(a.strip("/").split("/"), b.strip("/").split("/")):
        if (x is not None and _REST.fullmatch(x)) or (y is not None and _REST.fullmatch(y)):
            return True
        if x is None or y is None:
            return False
        if x != y and not _PARAM.fullmatch(x) and not _PARAM.fullmatch(y):
            return False
    return True


def test_no_request_is_served_by_two_entries(app: FastAPI) -> None:
    # What lets api/app.py try the entries in any order: the first to match a request with
    # its method is the only one that can (a route matching the path alone answers 405,
    # whose Allow header names every route's methods at the path, whatever the order).
    entries = [list(_served(entry)) for entry in app.routes]
    assert sum(len(served) for served in entries) > 100  # the walk reaches the routers' routes
    clashes = [
        (path_a, path_b)
        for one, other in itertools.combinations(entries, 2)
        for (path_a, methods_a), (path_b, methods_b) in itertools.product(one, other)
        if (methods_a & methods_b or "*" in methods_a | methods_b)
        and _may_match_one_path(path_a, path_b)
    ]
    assert clashes == []


async def test_a_path_of_two_routers_answers_405_with_both_methods(
    client: httpx.AsyncClient,
) -> None:
    # POST /v1/drivers/erase (api/routes/erasure.py) and DELETE /v1/drivers/{driver_id}
    # (api/routes/drivers.py): whichever is tried first, the answer names both.
    r = await client.patch("/v1/drivers/erase")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, POST"


def test_the_checker_sees_a_clash() -> None:
    assert _may_match_one_path("/v1/drivers/erase", "/v1/drivers/{driver_id}")
    assert _may_match_one_path("/console/assets/{name:path}", "/console/assets/a/b.js")
    assert not _may_match_one_path("/v1/vehicles/{vehicle_id}", "/v1/vehicles/{vehicle_id}/trips")
    assert not _may_match_one_path("/v1/fleet/positions", "/v1/fleets/{fleet_id}")


def test_the_most_called_routers_are_tried_first(app: FastAPI) -> None:
    first = [getattr(entry, "original_router", None) for entry in app.routes[:3]]
    assert first == [positions.router, commands.router, vehicles.router]


def test_openapi_lists_the_paths_in_the_routers_order(app: FastAPI) -> None:
    expected = [
        route.path
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.include_in_schema
    ]
    assert list(app.openapi()["paths"]) == list(dict.fromkeys(expected))
