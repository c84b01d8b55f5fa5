"""Request dependencies as Annotated aliases: the store, the caller's key, its role, the log.

Role checks follow one rule: a key of another fleet gets 404 (the fleet's resources do not
exist for it), a key of the right fleet with too low a role gets 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

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


async def current_key(
    request: Request,
    response: Response,
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    limiter = cast(RateLimiter | None, request.app.state.rate_limiter)
    # Invalid keys are throttled per client address (api/security.py, KeyThrottle).
    throttle = cast(KeyThrottle | None, getattr(request.app.state, "key_throttle", None))
    source = request.client.host if request.client is not None else None
    key = await authenticate(store, limiter, credentials, throttle=throttle, source=source)
    request.state.key_id = key.id  # for the request's log line (api/request_id.py)
    warning = expiry_warning(key, now_ms())
    if warning is not None:
        response.headers[EXPIRES_HEADER] = warning
    return key


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


async def fleet_key(key: CurrentKey) -> FleetCaller:
    """Any key of a fleet; the operator's keys are refused fleet data."""
    if key.role is Role.OPERATOR or key.fleet_id is None:
        raise forbidden("operator keys manage fleets and keys; fleet data needs a key of the fleet")
    return FleetCaller(key=key, fleet_id=key.fleet_id)


FleetKey = Annotated[FleetCaller, Depends(fleet_key)]


def require_role(minimum: Role) -> Callable[..., Awaitable[FleetCaller]]:
    """A dependency admitting fleet keys of role ``minimum`` or higher."""
    if minimum not in ROLE_RANK:
        raise ValueError(f"{minimum} is not a fleet role")

    async def check(caller: FleetKey, request: Request, store: StoreDep) -> FleetCaller:
        caller.require(minimum)
        # A fleet being offboarded takes no writes (api/offboarding.py).
        await refuse_writes_while_offboarding(request, store, caller.fleet_id)
        return caller

    return check


Viewer = Annotated[FleetCaller, Depends(require_role(Role.VIEWER))]
Manager = Annotated[FleetCaller, Depends(require_role(Role.MANAGER))]
Admin = Annotated[FleetCaller, Depends(require_role(Role.ADMIN))]


def require_role_on_vehicle(
    minimum: Role,
) -> Callable[..., Awaitable[FleetCaller]]:
    """Like `require_role` for a route on ``{vehicle_id}``, but the vehicle is looked up first:
    another fleet's vehicle is a 404 whatever the key's role, and only then a low role a 403."""
    if minimum not in ROLE_RANK:
        raise ValueError(f"{minimum} is not a fleet role")

    async def check(
        vehicle_id: Id, caller: FleetKey, store: StoreDep, request: Request
    ) -> FleetCaller:
        await store.vehicles.get(caller.fleet_id, vehicle_id)
        caller.require(minimum)
        await refuse_writes_while_offboarding(request, store, caller.fleet_id)
        return caller

    return check


VehicleManager = Annotated[FleetCaller, Depends(require_role_on_vehicle(Role.MANAGER))]
VehicleAdmin = Annotated[FleetCaller, Depends(require_role_on_vehicle(Role.ADMIN))]


async def require_operator(key: CurrentKey) -> ApiKey:
    if key.role is not Role.OPERATOR:
        raise forbidden("this needs an operator key")
    return key


Operator = Annotated[ApiKey, Depends(require_operator)]


async def get_audit(store: StoreDep, key: CurrentKey) -> Audit:
    return Audit(store.access_log, key)


AuditDep = Annotated[Audit, Depends(get_audit)]
