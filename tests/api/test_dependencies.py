"""Rules on the routes' dependencies (api/deps.py): every one is async (a plain def would run
on FastAPI's thread pool, a thread hop per request), and each alias is one node."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import cast, get_args

import httpx
from fastapi import FastAPI, params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute

from api import deps
from api.security import hash_key
from storage.models import ApiKey
from tests.api.helpers import OPERATOR_KEY, FleetFixture, bearer


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


# One node per alias (api/deps.py): FastAPI solves every node of a route's tree on every
# request, cached or not. Their sub-dependencies, by alias: none, but the vehicle roles check
# the key (FleetKey) before they validate the vehicle id.
_ALIAS_SUBDEPENDENCIES = {
    deps.StoreDep: 0,
    deps.CurrentKey: 0,
    deps.FleetKey: 0,
    deps.Viewer: 0,
    deps.Manager: 0,
    deps.Admin: 0,
    deps.Operator: 0,
    deps.AuditDep: 0,
    deps.VehicleManager: 1,
    deps.VehicleAdmin: 1,
}


def _nodes(dependant: Dependant) -> int:
    return sum(1 + _nodes(dep) for dep in dependant.dependencies)


def test_each_alias_is_one_node() -> None:
    for alias, expected in _ALIAS_SUBDEPENDENCIES.items():
        [depends] = [m for m in get_args(alias)[1:] if isinstance(m, params.Depends)]
        assert depends.dependency is not None
        dependant = get_dependant(path="/{vehicle_id}", call=depends.dependency)
        assert _nodes(dependant) == expected, alias


def test_a_write_solves_few_nodes(app: FastAPI) -> None:
    [route] = [
        r
        for r in _routes(app.routes)
        if isinstance(r, APIRoute) and r.path == "/v1/vehicles" and "POST" in r.methods
    ]
    # Admin, StoreDep, AuditDep (were 12 nodes below the root).
    assert _nodes(route.dependant) == 3


async def test_the_key_is_looked_up_once_per_request(
    client: httpx.AsyncClient, app: FastAPI, fleet_a: FleetFixture
) -> None:
    store = app.state.store
    lookups: list[str] = []
    get_by_hash = store.keys.get_by_hash

    async def counted(key_hash: str) -> ApiKey | None:
        lookups.append(key_hash)
        return cast(ApiKey | None, await get_by_hash(key_hash))

    store.keys.get_by_hash = counted
    body = {"vin": "WVWZZZ1JZ00000042", "plate": "X-1", "label": "van"}
    # Admin and AuditDep both need the key.
    r = await client.post("/v1/vehicles", json=body, headers=fleet_a.h())
    assert r.status_code == 201, r.text
    assert lookups == [hash_key(fleet_a.keys["admin"])]


async def test_a_vehicle_route_checks_the_key_before_the_path(
    client: httpx.AsyncClient, fleet_a: FleetFixture
) -> None:
    too_long = "veh_" + "x" * 100  # over Id's 64 characters: a 422 for a key that may ask
    r = await client.delete(f"/v1/vehicles/{too_long}")
    assert r.status_code == 401
    r = await client.delete(f"/v1/vehicles/{too_long}", headers=bearer(OPERATOR_KEY))
    assert r.status_code == 403
    r = await client.delete(f"/v1/vehicles/{too_long}", headers=fleet_a.h())
    assert r.status_code == 422
