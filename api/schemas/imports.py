"""Bulk import (POST /v1/imports): what it created, and the per-row errors of a bad file."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.services.imports import ImportResult, RowError


class ImportedBoxPublic(BaseModel):
    line: int = Field(description="The file's line the box was on (the header is line 1)")
    imei: str
    device_id: str
    vehicle_id: str | None = Field(description="The vehicle it was fitted to, if any")
    secret: str | None = Field(
        description="The box's LOGIN secret: shown in this response only. Null for a "
        "Teltonika box, which has none"
    )


class ImportedVehiclePublic(BaseModel):
    line: int
    id: str
    vin: str


class ImportPublic(BaseModel):
    vehicles: list[ImportedVehiclePublic]
    boxes: list[ImportedBoxPublic]
    fittings: int

    @classmethod
    def of(cls, result: ImportResult) -> ImportPublic:
        return cls(
            vehicles=[
                ImportedVehiclePublic(line=result.vehicle_lines[v.vin], id=v.id, vin=v.vin)
                for v in result.vehicles
            ],
            boxes=[
                ImportedBoxPublic(
                    line=b.row,
                    imei=b.imei,
                    device_id=b.device_id,
                    vehicle_id=b.vehicle_id,
                    secret=b.secret,
                )
                for b in result.boxes
            ],
            fittings=result.fittings,
        )


class ImportErrorPublic(BaseModel):
    """One problem of the file, as an entry of the 422 problem's ``errors``: located like
    every validation issue (``loc``: ``["body", line, column]``), with its line and column
    also as members of their own."""

    loc: list[str | int]
    msg: str
    type: str = "import_row"
    row: int = Field(description="The file's line (the header is line 1)")
    column: str | None

    @classmethod
    def of(cls, error: RowError) -> ImportErrorPublic:
        where: list[str | int] = ["body", error.row]
        if error.column is not None:
            where.append(error.column)
        return cls(loc=where, msg=error.msg, row=error.row, column=error.column)
