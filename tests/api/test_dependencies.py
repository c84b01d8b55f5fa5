"""Every dependency of every route is async (api/deps.py, "Dependencies are async"): a plain
def would run on FastAPI's thread pool, a thread hop per request."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute


def _routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute | APIWebSocketRoute]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included router
        if inner is not None:
            yield from _routes(inner.routes)
        elif isinstance(route, APIRoute | APIWebSocketRoute):
            yield route


def _plain(dependant: Dependant) -> Iterator[str]:
    for dep in dependant.dependencies:
        call = dep.call
        # A function, or an object called (HTTPBearer): its __call__ is what runs.
        if call is not None and not (
            inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)
        ):
            yield getattr(call, "__qualname__", type(call).__qualname__)
        yield from _plain(dep)


def test_no_route_depends_on_a_plain_def(app: FastAPI) -> None:
    routes = list(_routes(app.routes))
    assert len(routes) > 50  # the walk reaches the routers' routes
    plain = {(route.path, name) for route in routes for name in _plain(route.dependant)}
    assert plain == set()
