"""The parked guard (/v1/vehicles/{id}/guard) and theft cases (/v1/vehicles/{id}/theft,
/v1/alerts/{id}/theft, /v1/theft-cases): docs/theft.md. The use cases are tracking/theft.py's;
every read of a case (its timeline is personal data) and every export is in the access log."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from api.deps import (
    Admin,
    AuditDep,
    FleetCaller,
    StoreDep,
    VehicleAdmin,
    VehicleManager,
    Viewer,
)
from api.params import Cursor, Id, Limit, Order, OrderQuery
from api.problems import ApiProblem, problem_responses
from api.schemas.theft import (
    GuardPublic,
    GuardUpdate,
    ImmobilisePublic,
    ImmobiliseRequest,
    TheftCaseClose,
    TheftCaseCreate,
    TheftCaseDetail,
    TheftCasePublic,
    TheftCasesPublic,
    TheftFromAlert,
    TrackFormat,
)
from api.services import formats, resources
from api.services.commands import get_commands
from api.services.paging import WALK_PAGE, position_pages
from api.times import datetime_to_ms, iso_ms
from commands import Requester
from storage.models import CommandState, StreamKind, TheftCase, TheftCaseStatus, now_ms
from tracking.guard import get_guard, set_guard
from tracking.theft import TheftService

router = APIRouter(tags=["theft"], responses=problem_responses(401, 403, 404, 422, 429, 503))
_BODY_ERRORS = problem_responses(400, 409, 413, 415)

# Theft cases on the live stream and to webhooks look like GET /v1/theft-cases/{id} without
# the timeline.
resources.register(
    StreamKind.THEFT_CASE, lambda case: TheftCasePublic.of(case).model_dump(mode="json")
)


async def get_theft(request: Request, store: StoreDep) -> TheftService:
    """The use cases over this process's command service (gp8 serve's, or a store-only one);
    ``app.state.theft_options`` holds the settings (fast interval, hold period)."""
    options = cast(dict[str, Any], getattr(request.app.state, "theft_options", None) or {})
    return TheftService(store, get_commands(request), **options)


TheftDep = Annotated[TheftService, Depends(get_theft)]


def _requester(caller: FleetCaller) -> Requester:
    return Requester(key_id=caller.key.id, fleet_id=caller.fleet_id, role=caller.role)


# --- the parked guard -------------------------------------------------------------------


@router.get("/v1/vehicles/{vehicle_id}/guard", response_model=GuardPublic)
async def get_vehicle_guard(vehicle_id: Id, caller: Viewer, store: StoreDep) -> GuardPublic:
    """The vehicle's parked guard: disarmed, armed (around where it parked) or triggered."""
    return GuardPublic.of(await get_guard(store, caller.fleet_id, vehicle_id))


@router.put("/v1/vehicles/{vehicle_id}/guard", response_model=GuardPublic, responses=_BODY_ERRORS)
async def put_vehicle_guard(
    vehicle_id: Id, body: GuardUpdate, caller: VehicleManager, store: StoreDep, audit: AuditDep
) -> GuardPublic:
    """Disarm the guard (manager): it arms again only after the next start and park; an open
    suspected_theft alert closes. Or arm it now around the vehicle's last position."""
    try:
        guard = await set_guard(
            store,
            caller.fleet_id,
            vehicle_id,
            armed=body.armed,
            by=caller.key.id,
            at_ms=now_ms(),
        )
    except ValueError as exc:
        raise ApiProblem(409, str(exc), type_="urn:gp8:problem:conflict") from None
    await audit("update", "guard", vehicle_id, detail="armed" if body.armed else "disarmed")
    return GuardPublic.of(guard)


# --- theft cases ------------------------------------------------------------------------


async def _opened(
    caller: FleetCaller, theft: TheftService, audit: AuditDep, vehicle_id: str, **kw: Any
) -> TheftCasePublic:
    case = await theft.open(_requester(caller), vehicle_id, **kw)
    await audit("create", "theft_case", case.id, detail=f"vehicle {vehicle_id}")
    return TheftCasePublic.of(case)


@router.post(
    "/v1/vehicles/{vehicle_id}/theft",
    status_code=status.HTTP_201_CREATED,
    response_model=TheftCasePublic,
    responses=_BODY_ERRORS,
)
async def open_theft_case(
    vehicle_id: Id,
    caller: VehicleAdmin,
    theft: TheftDep,
    audit: AuditDep,
    body: Annotated[TheftCaseCreate | None, Body()] = None,
) -> TheftCasePublic:
    """Open a theft case (admin): the box reports fast, the case goes on the live stream, the
    vehicle's data is held beyond retention. 409 when the vehicle has an open case."""
    body = body or TheftCaseCreate()
    reported = datetime_to_ms(body.reported_at) if body.reported_at is not None else None
    return await _opened(
        caller,
        theft,
        audit,
        vehicle_id,
        reported_ms=reported,
        note=body.note,
        alert_id=body.alert_id,
    )


@router.post(
    "/v1/alerts/{alert_id}/theft",
    status_code=status.HTTP_201_CREATED,
    response_model=TheftCasePublic,
    responses=_BODY_ERRORS,
)
async def open_theft_case_from_alert(
    alert_id: Id,
    caller: Admin,
    store: StoreDep,
    theft: TheftDep,
    audit: AuditDep,
    body: Annotated[TheftFromAlert | None, Body()] = None,
) -> TheftCasePublic:
    """Open a theft case from a (suspected-theft) alert in one call (admin)."""
    alert = await store.alerts.get(caller.fleet_id, alert_id)
    if alert.vehicle_id is None:
        raise ApiProblem(409, "this alert is about no vehicle", type_="urn:gp8:problem:conflict")
    body = body or TheftFromAlert()
    reported = datetime_to_ms(body.reported_at) if body.reported_at is not None else None
    return await _opened(
        caller,
        theft,
        audit,
        alert.vehicle_id,
        reported_ms=reported,
        note=body.note,
        alert_id=alert.id,
    )


@router.get("/v1/theft-cases", response_model=TheftCasesPublic, responses=problem_responses(400))
async def list_theft_cases(
    caller: Viewer,
    store: StoreDep,
    status_: Annotated[TheftCaseStatus | None, Query(alias="status")] = None,
    vehicle_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = Order.ASC,
) -> TheftCasesPublic:
    """The fleet's theft cases, oldest first unless ``order=desc``."""
    page = await store.theft_cases.list(
        caller.fleet_id,
        vehicle_id=vehicle_id,
        status=status_,
        cursor=cursor,
        limit=limit,
        newest_first=order.newest_first,
    )
    return TheftCasesPublic(
        data=[TheftCasePublic.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get("/v1/theft-cases/{case_id}", response_model=TheftCaseDetail)
async def get_theft_case(
    case_id: Id,
    caller: Viewer,
    theft: TheftDep,
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Positions shown at most")] = 10_000,
) -> TheftCaseDetail:
    """The case and its timeline: every position and event since the theft started, where the
    vehicle is now and how old that is, its box's state, the case's commands, who did what."""
    timeline = await theft.timeline(caller.fleet_id, case_id, limit=limit)
    await audit("read", "theft_case", case_id, detail=f"{len(timeline.positions)} positions")
    return TheftCaseDetail.of_timeline(timeline)


_TRACK_CONTENT: dict[str, Any] = {
    "application/geo+json": {"schema": {"$ref": "#/components/schemas/PositionsFeatureCollection"}},
    "text/csv": {"schema": {"type": "string"}},
    "application/gpx+xml": {"schema": {"type": "string"}},
}


@router.get(
    "/v1/theft-cases/{case_id}/track",
    response_class=Response,
    responses={200: {"content": _TRACK_CONTENT}},
)
async def export_theft_track(
    case_id: Id,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    format: Annotated[TrackFormat, Query(description="geojson, gpx or csv")] = "geojson",
) -> Response:
    """The case's track since the theft started, for the police: GeoJSON points, GPX or CSV.
    The export is written to the access log."""
    case: TheftCase = await store.theft_cases.get(caller.fleet_id, case_id)
    end = (case.closed_ms if case.closed_ms is not None else now_ms()) + 1
    first = await store.telemetry.positions(
        caller.fleet_id, case.vehicle_id, from_ms=case.started_ms, to_ms=end, limit=WALK_PAGE
    )
    await audit(
        "export",
        "theft_case_track",
        case.id,
        detail=f"{format} {iso_ms(case.started_ms)}/{iso_ms(end)} vehicle {case.vehicle_id}",
    )
    pages = position_pages(
        store.telemetry,
        caller.fleet_id,
        case.vehicle_id,
        from_ms=case.started_ms,
        to_ms=end,
        first=first,
    )
    fmt = formats.Format(format)
    if fmt is formats.Format.CSV:
        chunks = formats.csv_rows(pages)
        media_type = formats.MEDIA_TYPES[fmt] + "; charset=utf-8; header=present"
    elif fmt is formats.Format.GPX:
        chunks = formats.gpx_track(pages, f"theft case {case.id}")
        media_type = formats.MEDIA_TYPES[fmt]
    else:
        chunks = formats.geojson_points(pages)
        media_type = formats.MEDIA_TYPES[fmt]
    filename = f"{case.id}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(chunks, media_type=media_type, headers=headers)


@router.post(
    "/v1/theft-cases/{case_id}/immobilise",
    status_code=status.HTTP_201_CREATED,
    response_model=ImmobilisePublic,
    responses={202: {"model": ImmobilisePublic}, **_BODY_ERRORS},
)
async def immobilise_from_case(
    case_id: Id,
    response: Response,
    caller: Admin,
    theft: TheftDep,
    audit: AuditDep,
    body: Annotated[ImmobiliseRequest | None, Body()] = None,
) -> ImmobilisePublic:
    """``disable_engine_start`` for the case's vehicle (admin), with every command safety rule:
    the box never cuts a running engine, it refuses the next start. 202 when it waits for a
    second admin (four-eyes)."""
    case, command = await theft.immobilise(_requester(caller), case_id, body.reason if body else "")
    if command.status is CommandState.PENDING_APPROVAL:
        response.status_code = status.HTTP_202_ACCEPTED
    await audit("create", "command", command.id, detail=f"theft case {case.id}")
    return ImmobilisePublic.of(case.id, command)


@router.post(
    "/v1/theft-cases/{case_id}/close", response_model=TheftCasePublic, responses=_BODY_ERRORS
)
async def close_theft_case(
    case_id: Id, body: TheftCaseClose, caller: Admin, theft: TheftDep, audit: AuditDep
) -> TheftCasePublic:
    """Close the case (admin) with its outcome: the box's usual interval is restored; the legal
    hold ends after its period."""
    case = await theft.close(_requester(caller), case_id, body.outcome, body.note)
    await audit(
        "update", "theft_case", case.id, detail=f"closed: {body.outcome.value}", reason=body.note
    )
    return TheftCasePublic.of(case)
