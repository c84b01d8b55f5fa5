"""Remote commands: request, follow, cancel, approve (docs/commands.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Response, status

from api.deps import FleetKey, StoreDep, Viewer
from api.params import DAY_MS, Cursor, Id, Limit, Order, OrderQuery, TimeRange, time_range
from api.problems import problem_responses, refusal_members
from api.schemas.commands import (
    BulkCommandCreate,
    BulkCommandsPublic,
    BulkItemPublic,
    BulkRefusal,
    CommandCreate,
    CommandPublic,
    CommandsPublic,
)
from api.services.commands import CommandsDep
from commands import BulkRequest, CommandRequest, Requester, rules
from storage.models import CommandKind, CommandState
from storage.repository import Store

router = APIRouter(tags=["commands"], responses=problem_responses(401, 403, 404, 422, 429, 503))

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=rules.IDEMPOTENCY_KEY_MAX,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes the request safe to retry: the same key returns the same command, "
        "never a second one (per fleet, kept for the command's lifetime)",
    ),
]
_HISTORY_SPAN = Depends(time_range(30 * DAY_MS, max_span_ms=None))


def _requester(caller: FleetKey) -> Requester:
    return Requester(key_id=caller.key.id, fleet_id=caller.fleet_id, role=caller.role)


async def _listing(
    store: Store,
    fleet_id: str,
    span: TimeRange,
    status_: CommandState | None,
    type_: CommandKind | None,
    cursor: str | None,
    limit: int,
    order: Order,
    *,
    vehicle_id: str | None = None,
) -> CommandsPublic:
    """One page of the fleet's (or the vehicle's) commands: both listings' query."""
    page = await store.commands.list(
        fleet_id,
        vehicle_id=vehicle_id,
        status=status_,
        kind=type_,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        cursor=cursor,
        limit=limit,
        newest_first=order.newest_first,
    )
    return CommandsPublic(
        data=[CommandPublic.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/v1/vehicles/{vehicle_id}/commands",
    status_code=status.HTTP_201_CREATED,
    response_model=CommandPublic,
    responses={
        200: {"description": "Replay: the command an earlier request with this key created"},
        202: {"description": "Created, waiting for a second admin's approval (four-eyes)"},
        **problem_responses(400, 409, 413, 415),
    },
)
async def create_command(
    vehicle_id: Id,
    body: Annotated[CommandCreate, Body()],
    caller: FleetKey,
    service: CommandsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> CommandPublic:
    """Send a command to the vehicle's box: 201 with the command (queued, sent, or failed at
    once for ``ttl_s`` 0 and a box offline), 202 when it awaits approval, 200 for a replay.

    manager: lock, unlock, locate; admin: everything. 409 when commands to the vehicle are
    frozen (duplicate box), immobilizations are suspended (kill switch) or no box is fitted;
    429 past the fleet's hourly engine-start cap.
    """
    request = CommandRequest(
        vehicle_id=vehicle_id,
        kind=CommandKind(body.type),
        params=body.params_dict(),
        ttl_s=body.ttl_s,
        reason=body.reason,
        theft_case_id=body.theft_case_id,
        idempotency_key=idempotency_key,
    )
    command, created = await service.create(_requester(caller), request)
    response.headers["Location"] = f"/v1/commands/{command.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    elif command.status is CommandState.PENDING_APPROVAL:
        response.status_code = status.HTTP_202_ACCEPTED
    return CommandPublic.of(command)


@router.post(
    "/v1/commands/bulk",
    response_model=BulkCommandsPublic,
    responses=problem_responses(400, 413, 415),
)
async def create_bulk_commands(
    body: Annotated[BulkCommandCreate, Body()],
    caller: FleetKey,
    service: CommandsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BulkCommandsPublic:
    """One command type for many vehicles (``vehicle_ids``, or ``all``: the whole fleet):
    the answer says per vehicle its command id and status, or the problem that refused it.

    Role rules as for a single command (403 for the whole order). Every per-vehicle rule
    applies per vehicle: four-eyes (``pending_approval``), the hourly engine-start cap, the
    kill switch, the duplicate-box freeze. One Idempotency-Key covers the order: a retry
    answers the same commands (``replayed``) and creates none twice.
    """
    bulk = BulkRequest(
        kind=body.type,
        vehicle_ids=None if body.all else body.vehicle_ids,
        params=dict(body.params),
        ttl_s=body.ttl_s,
        reason=body.reason,
        theft_case_id=body.theft_case_id,
        idempotency_key=idempotency_key,
    )
    outcomes = await service.create_bulk(_requester(caller), bulk)
    items = [
        BulkItemPublic(
            vehicle_id=o.vehicle_id,
            command_id=None if o.command is None else o.command.id,
            status=None if o.command is None else o.command.status,
            replayed=o.command is not None and not o.created,
            problem=None if o.refusal is None else BulkRefusal(**refusal_members(o.refusal)),
        )
        for o in outcomes
    ]
    created = sum(o.created for o in outcomes)
    replayed = sum(i.replayed for i in items)
    if replayed and not created:
        response.headers["Idempotent-Replayed"] = "true"
    return BulkCommandsPublic(
        data=items, created=created, replayed=replayed, refused=len(items) - created - replayed
    )


@router.get(
    "/v1/vehicles/{vehicle_id}/commands",
    response_model=CommandsPublic,
    responses=problem_responses(400),
)
async def list_vehicle_commands(
    vehicle_id: Id,
    caller: Viewer,
    store: StoreDep,
    span: Annotated[TimeRange, _HISTORY_SPAN],
    status_: Annotated[CommandState | None, Query(alias="status")] = None,
    type_: Annotated[CommandKind | None, Query(alias="type")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = Order.ASC,
) -> CommandsPublic:
    """The vehicle's commands created in from..to (default: the last 30 days), oldest first
    unless ``order=desc``."""
    await store.vehicles.get(caller.fleet_id, vehicle_id)
    return await _listing(
        store, caller.fleet_id, span, status_, type_, cursor, limit, order, vehicle_id=vehicle_id
    )


@router.get("/v1/commands", response_model=CommandsPublic, responses=problem_responses(400))
async def list_commands(
    caller: Viewer,
    store: StoreDep,
    span: Annotated[TimeRange, _HISTORY_SPAN],
    status_: Annotated[CommandState | None, Query(alias="status")] = None,
    type_: Annotated[CommandKind | None, Query(alias="type")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = Order.ASC,
) -> CommandsPublic:
    """The fleet's commands, oldest first unless ``order=desc``; ``status=pending_approval``
    lists what awaits a second admin."""
    return await _listing(store, caller.fleet_id, span, status_, type_, cursor, limit, order)


@router.get("/v1/commands/{command_id}", response_model=CommandPublic)
async def get_command(command_id: Id, caller: Viewer, store: StoreDep) -> CommandPublic:
    """One command and where it is in its lifecycle."""
    return CommandPublic.of(await store.commands.get(caller.fleet_id, command_id))


@router.delete(
    "/v1/commands/{command_id}", response_model=CommandPublic, responses=problem_responses(409)
)
async def cancel_command(command_id: Id, caller: FleetKey, service: CommandsDep) -> CommandPublic:
    """Cancel a command not sent yet (queued or awaiting approval); 409 once it was sent.

    Needs the role that may send that command type.
    """
    return CommandPublic.of(await service.cancel(_requester(caller), command_id))


@router.post(
    "/v1/commands/{command_id}/approve",
    response_model=CommandPublic,
    responses=problem_responses(409),
)
async def approve_command(command_id: Id, caller: FleetKey, service: CommandsDep) -> CommandPublic:
    """Four-eyes: a second admin (not the requesting key) releases a pending command."""
    return CommandPublic.of(await service.approve(_requester(caller), command_id))
