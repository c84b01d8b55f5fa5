from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Request, Response, status

from api.deps import AuditDep, CurrentKey, StoreDep, forbidden
from api.params import Cursor, Id, Limit
from api.problems import invalid, problem_responses
from api.schemas.keys import KeyCreate, KeyCreated, KeyPublic, KeysPublic
from api.security import DAY_MS, new_api_key
from api.times import datetime_to_ms, iso_ms
from storage.errors import NotFound
from storage.models import ApiKey, Role, now_ms

router = APIRouter(
    prefix="/v1/fleets/{fleet_id}/keys",
    tags=["keys"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)


def _check(key: ApiKey) -> None:
    if key.role is not Role.ADMIN:
        raise forbidden(f"managing keys needs the admin role; the key is {key.role}")


async def key_manager(fleet_id: Id, key: CurrentKey, store: StoreDep) -> str:
    """The fleet whose keys may be managed: by the operator, or an admin of that fleet."""
    if key.role is Role.OPERATOR:
        await store.fleets.get(fleet_id)  # NotFound for a fleet that does not exist
        return fleet_id
    if key.fleet_id != fleet_id:
        raise NotFound("fleet not found")
    _check(key)
    return fleet_id


async def key_of_managed_fleet(key_id: Id, fleet_id: Id, key: CurrentKey, store: StoreDep) -> str:
    """As `key_manager` for a route on one key; a key of another fleet is a 404 before any
    role check, so a low-role key learns nothing about it either."""
    if key.role is Role.OPERATOR:
        await store.fleets.get(fleet_id)
    elif key.fleet_id != fleet_id:
        raise NotFound("fleet not found")
    await store.keys.get(fleet_id, key_id)
    if key.role is not Role.OPERATOR:
        _check(key)
    return fleet_id


ManagedFleet = Annotated[str, Depends(key_manager)]
KeyOfManagedFleet = Annotated[str, Depends(key_of_managed_fleet)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    responses=problem_responses(400, 413, 415),
)
async def create_key(
    body: KeyCreate,
    fleet_id: ManagedFleet,
    store: StoreDep,
    audit: AuditDep,
    request: Request,
    response: Response,
) -> KeyCreated:
    """Create a key of the fleet for a named person; its secret is in this response only."""
    response.headers["Cache-Control"] = "no-store"  # it holds a secret
    now = now_ms()
    if body.expires_at is None:
        expires_ms = now + cast(int, request.app.state.key_ttl_days) * DAY_MS
    else:
        expires_ms = datetime_to_ms(body.expires_at)
    if expires_ms <= now:
        raise invalid(
            ("body", "expires_at"),
            f"expires_at ({iso_ms(expires_ms)}) must be in the future (now: {iso_ms(now)})",
        )
    secret, record = new_api_key(
        fleet_id=fleet_id,
        role=Role(body.role.value),
        name=body.name,
        email=body.email,
        expires_ms=expires_ms,
    )
    created = await store.keys.create(record)
    await audit(
        "create",
        "key",
        created.id,
        fleet_id=fleet_id,
        detail=f"{created.role.value} for {created.name} <{created.email}>",
    )
    return KeyCreated(**KeyPublic.of(created).model_dump(), key=secret)


@router.get("", response_model=KeysPublic, responses=problem_responses(400))
async def list_keys(
    fleet_id: ManagedFleet,
    store: StoreDep,
    audit: AuditDep,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> KeysPublic:
    """List the fleet's keys, revoked ones included (never their secrets)."""
    page = await store.keys.list(fleet_id, cursor=cursor, limit=limit)
    # Their owners' names and e-mail addresses are personal data: the read is logged.
    await audit("read", "keys", None, fleet_id=fleet_id, detail=f"{len(page.items)} keys")
    return KeysPublic(data=[KeyPublic.of(k) for k in page.items], next_cursor=page.next_cursor)


@router.get("/{key_id}", response_model=KeyPublic)
async def get_key(
    key_id: Id, fleet_id: KeyOfManagedFleet, store: StoreDep, audit: AuditDep
) -> KeyPublic:
    """One key of the fleet (never its secret)."""
    key = await store.keys.get(fleet_id, key_id)
    await audit("read", "key", key_id, fleet_id=fleet_id)
    return KeyPublic.of(key)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(
    key_id: Id, fleet_id: KeyOfManagedFleet, store: StoreDep, audit: AuditDep
) -> None:
    """Revoke a key: it stops working at once, on every process (keys are looked up per
    request); it stays listed with its revocation time."""
    await store.keys.revoke(fleet_id, key_id, now_ms())
    await audit("revoke", "key", key_id, fleet_id=fleet_id)
