"""Request dependencies as Annotated aliases: the store, the caller's key, its role, the log.

Role checks follow one rule: a key of another fleet gets 404 (the fleet's resources do not
exist for it), a key of the right fleet with too low a role gets 403.

One node per alias: FastAPI walks a route's whole dependency tree on every request, cached
nodes included (each costs a recursive solve, four parameter passes and a cache key), and a
write's tree was 18 nodes (role → fleet key → key → store and bearer, then the same again for
the access log), the largest share of its CPU. So each alias is one call doing its whole
check: key lookup, fleet, role, offboarding. The key is authenticated once per request and
kept on it (`authenticated`), so a role check and the access log share one lookup. Each is a
`SecurityBase` (`_KeyScheme`), which is what tells the OpenAPI document that the route takes
the Bearer key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request, Response
from fastapi.security.base import SecurityBase

from api.audit import Audit
from api.offboarding import refuse_writes_while_offboarding
from api.params import Id
from api.problems import ApiProblem
from api.ratelimit import RateLimiter
from api.security import EXPIRES_HEADER, KeyThrottle, authenticate, bearer, expiry_warning
from storage.models import ApiKey, Role, now_ms
from storage.repository import Store

# Fleet roles from least to most privileged; the operator is outside this order on purpose.
ROLE_RANK = {Role.VIEWER: 0, Role.MANAGER: 1, Role.ADMIN: 2}


# Dependencies are async: FastAPI runs a plain-def dependency on its thread pool, a thread hop
# (and a loop wake-up) per request, a good part of a small request's cost on a busy loop. They
# only read app state or parse parameters, so they run on the loop; tests/api/test_dependencies.py
# fails for a plain-def one.
async def get_store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


StoreDep = Annotated[Store, Depends(get_store)]


async def authenticated(request: Request, response: Response) -> ApiKey:
    """The request's API key (401, 429 otherwise): looked up, throttled and rate limited once
    per request, whichever dependency asks first; the others get the same key."""
    state = request.state
    key: ApiKey | None = getattr(state, "api_key", None)
    if key is not None:
        return key
    app_state = request.app.state
    limiter = cast(RateLimiter | None, app_state.rate_limiter)
    # Invalid keys are throttled per client address (api/security.py, KeyThrottle).
    throttle = cast(KeyThrottle | None, getattr(app_state, "key_throttle", None))
    source = request.client.host if request.client is not None else None
    key = await authenticate(
        await get_store(request),
        limiter,
        await bearer(request),
        throttle=throttle,
        source=source,
    )
    state.api_key = key
    state.key_id = key.id  # for the request's log line (api/request_id.py)
    warning = expiry_warning(key, now_ms())
    if warning is not None:
        response.headers[EXPIRES_HEADER] = warning
    return key


class _KeyScheme(SecurityBase):
    """A dependency that authenticates the Bearer key: the OpenAPI document names the scheme
    for every route that has one (FastAPI finds them by this base class)."""

    def __init__(self) -> None:
        self.model = bearer.model
        self.scheme_name = bearer.scheme_name


class _CurrentKey(_KeyScheme):
    async def __call__(self, request: Request, response: Response) -> ApiKey:
        return await authenticated(request, response)


current_key = _CurrentKey()
CurrentKey = Annotated[ApiKey, Depends(current_key)]


@dataclass(frozen=True, slots=True)
class FleetCaller:
    """A key of a fleet; ``fleet_id`` scopes every query it makes."""

    key: ApiKey
    fleet_id: str

    @property
    def role(self) -> Role:
        return self.key.role

    def require(self, minimum: Role) -> None:
        """403 unless the key's role is ``minimum`` or higher."""
        if ROLE_RANK[self.key.role] < ROLE_RANK[minimum]:
            raise forbidden(f"this needs the {minimum} role or higher; the key is {self.role}")


def forbidden(detail: str) -> ApiProblem:
    return ApiProblem(403, detail, type_="urn:gp8:problem:forbidden")


async def fleet_key(key: ApiKey) -> FleetCaller:
    """Any key of a fleet; the operator's keys are refused fleet data."""
    if key.role is Role.OPERATOR or key.fleet_id is None:
        raise forbidden("operator keys manage fleets and keys; fleet data needs a key of the fleet")
    return FleetCaller(key=key, fleet_id=key.fleet_id)


class _FleetKey(_KeyScheme):
    async def __call__(self, request: Request, response: Response) -> FleetCaller:
        return await fleet_key(await authenticated(request, response))


FleetKey = Annotated[FleetCaller, Depends(_FleetKey())]


def _fleet_role(minimum: Role) -> Role:
    if minimum not in ROLE_RANK:
        raise ValueError(f"{minimum} is not a fleet role")
    return minimum


class _RequireRole(_KeyScheme):
    """Fleet keys of role ``minimum`` or higher; a fleet being offboarded takes no writes
    (api/offboarding.py)."""

    def __init__(self, minimum: Role) -> None:
        super().__init__()
        self.minimum = _fleet_role(minimum)

    async def __call__(self, request: Request, response: Response) -> FleetCaller:
        caller = await fleet_key(await authenticated(request, response))
        caller.require(self.minimum)
        await refuse_writes_while_offboarding(request, await get_store(request), caller.fleet_id)
        return caller


def require_role(minimum: Role) -> _RequireRole:
    """A dependency admitting fleet keys of role ``minimum`` or higher."""
    return _RequireRole(minimum)


Viewer = Annotated[FleetCaller, Depends(require_role(Role.VIEWER))]
Manager = Annotated[FleetCaller, Depends(require_role(Role.MANAGER))]
Admin = Annotated[FleetCaller, Depends(require_role(Role.ADMIN))]


class _RequireRoleOnVehicle:
    """`_RequireRole` for a route on ``{vehicle_id}``, the vehicle looked up first. Two nodes,
    not one: the key is checked (`FleetKey`, a sub-dependency) before ``vehicle_id`` is
    validated, so a request without a valid key is a 401 whatever its path."""

    def __init__(self, minimum: Role) -> None:
        self.minimum = _fleet_role(minimum)

    async def __call__(self, vehicle_id: Id, caller: FleetKey, request: Request) -> FleetCaller:
        store = await get_store(request)
        await store.vehicles.get(caller.fleet_id, vehicle_id)
        caller.require(self.minimum)
        await refuse_writes_while_offboarding(request, store, caller.fleet_id)
        return caller


def require_role_on_vehicle(minimum: Role) -> _RequireRoleOnVehicle:
    """Like `require_role` for a route on ``{vehicle_id}``, but the vehicle is looked up first:
    another fleet's vehicle is a 404 whatever the key's role, and only then a low role a 403."""
    return _RequireRoleOnVehicle(minimum)


VehicleManager = Annotated[FleetCaller, Depends(require_role_on_vehicle(Role.MANAGER))]
VehicleAdmin = Annotated[FleetCaller, Depends(require_role_on_vehicle(Role.ADMIN))]


class _RequireOperator(_KeyScheme):
    async def __call__(self, request: Request, response: Response) -> ApiKey:
        key = await authenticated(request, response)
        if key.role is not Role.OPERATOR:
            raise forbidden("this needs an operator key")
        return key


require_operator = _RequireOperator()
Operator = Annotated[ApiKey, Depends(require_operator)]


class _GetAudit(_KeyScheme):
    async def __call__(self, request: Request, response: Response) -> Audit:
        key = await authenticated(request, response)
        return Audit((await get_store(request)).access_log, key)


get_audit = _GetAudit()
AuditDep = Annotated[Audit, Depends(get_audit)]
