"""Exports of a data subject's records: the right of access and portability (docs/gdpr.md)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from fastapi import APIRouter, Request, status
from fastapi.responses import FileResponse

from api.deps import Admin, AuditDep, StoreDep
from api.params import Id
from api.problems import ApiProblem, problem_responses
from api.schemas.gdpr import ExportCreate, ExportPublic
from api.services.export_job import ExportWorker
from api.services.exports import attachment
from api.services.privacy import stored_badge
from api.times import datetime_to_ms
from retention.purge import export_file
from storage.models import new_id, now_ms
from storage.retention import ExportJob, ExportStatus

router = APIRouter(
    prefix="/v1/exports",
    tags=["exports"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)


def exports_dir(request: Request) -> Path | None:
    """Where the export worker writes (`gp8 serve`: GP8_DATA_DIR/exports); None: no worker."""
    return cast(Path | None, getattr(request.app.state, "exports_dir", None))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExportPublic,
    responses=problem_responses(400, 413, 415),
)
async def create_export(
    body: ExportCreate, caller: Admin, store: StoreDep, audit: AuditDep, request: Request
) -> ExportPublic:
    """Export a vehicle's or a driver's records over [from, to) as a zip of JSON and CSV
    (admin); runs in the background: poll GET /v1/exports/{id}."""
    if body.vehicle_id is not None:
        await store.vehicles.get(caller.fleet_id, body.vehicle_id)  # 404 for another fleet's
    start = now_ms()
    badge = None if body.driver_badge is None else stored_badge(request, body.driver_badge)
    job = await store.exports.create(
        ExportJob(
            id=new_id("exp"),
            fleet_id=caller.fleet_id,
            vehicle_id=body.vehicle_id,
            driver_badge=badge,
            from_ms=datetime_to_ms(body.from_),
            to_ms=datetime_to_ms(body.to),
            requested_by=caller.key.id,
            created_ms=start,
            updated_ms=start,
        )
    )
    # A driver is logged under the badge's pseudonym: the audit log names no badge number.
    subject = body.vehicle_id or str(badge)
    await audit(
        "export", "vehicle" if body.vehicle_id else "driver", subject, detail=f"export {job.id}"
    )
    worker = cast(ExportWorker | None, getattr(request.app.state, "export_worker", None))
    if worker is not None:
        worker.wake()
    return ExportPublic.of(job)


@router.get("/{export_id}", response_model=ExportPublic)
async def get_export(export_id: Id, caller: Admin, store: StoreDep) -> ExportPublic:
    """An export's status (pending, running, done, failed) and, once done, its counts."""
    return ExportPublic.of(await store.exports.get(caller.fleet_id, export_id))


@router.get(
    "/{export_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(409),
    },
)
async def download_export(
    export_id: Id, caller: Admin, store: StoreDep, audit: AuditDep, request: Request
) -> FileResponse:
    """The export's zip (positions, events, alerts, commands and access log, JSON and CSV)."""
    job = await store.exports.get(caller.fleet_id, export_id)
    directory = exports_dir(request)
    path = None if directory is None else export_file(directory, job)
    if job.status is not ExportStatus.DONE or path is None or not path.is_file():
        raise ApiProblem(
            409, f"the export is {job.status}, not done", type_="urn:gp8:problem:export-not-ready"
        )
    subject = job.vehicle_id or str(job.driver_badge)
    await audit("download", "export", export_id, detail=f"subject {subject}")
    headers = attachment("gp8-export", subject, job.id, extension="zip")
    return FileResponse(path, media_type="application/zip", headers=headers)
