"""Bulk import of vehicles, boxes and fittings from a CSV file (docs/api.md, "Bulk import")."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from api.deps import Admin, AuditDep, StoreDep
from api.problems import ApiProblem, problem_responses
from api.schemas.imports import ImportErrorPublic, ImportPublic
from api.services.imports import COLUMNS, ImportInvalid, import_csv
from storage.models import now_ms

router = APIRouter(tags=["imports"], responses=problem_responses(401, 403, 404, 422, 429, 503))

CSV_TYPES = ("text/csv", "application/csv")
_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {
                "schema": {"type": "string", "description": f"Header: {','.join(COLUMNS)}"},
            }
        },
    }
}


@router.post(
    "/v1/imports",
    status_code=status.HTTP_201_CREATED,
    response_model=ImportPublic,
    responses=problem_responses(400, 409, 413, 415),
    openapi_extra=_CSV_BODY,
)
async def create_import(
    request: Request, caller: Admin, store: StoreDep, audit: AuditDep, response: Response
) -> ImportPublic:
    """Onboard vehicles, boxes and fittings from a CSV file (admin), all or nothing.

    The file is validated whole first: 422 lists every error with its line and column, and
    nothing is stored. 201 answers what was created, with each new GP8 box's LOGIN secret
    (shown here only). 409 when a VIN or IMEI was taken while the file was being stored.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_TYPES:
        raise ApiProblem(
            415,
            "send the file as text/csv",
            type_="urn:gp8:problem:unsupported-media-type",
        )
    try:
        text = (await request.body()).decode("utf-8-sig")  # a BOM from spreadsheet exports
    except UnicodeDecodeError as exc:
        raise ApiProblem(
            422, f"the file is not UTF-8: {exc.reason}", type_="urn:gp8:problem:import-invalid"
        ) from exc
    try:
        result = await import_csv(store, caller.fleet_id, text, now_ms=now_ms())
    except ImportInvalid as exc:
        raise ApiProblem(
            422,
            str(exc),
            type_="urn:gp8:problem:import-invalid",
            errors=[ImportErrorPublic.of(e).model_dump() for e in exc.errors],
        ) from exc
    response.headers["Cache-Control"] = "no-store"  # it holds the boxes' secrets
    detail = (
        f"{len(result.vehicles)} vehicles, {len(result.boxes)} boxes, {result.fittings} fittings"
    )
    await audit("import", "fleet", caller.fleet_id, detail=detail)
    return ImportPublic.of(result)
