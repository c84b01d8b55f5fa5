"""Bulk onboarding from a CSV file: vehicles, their boxes and the fittings between them
(POST /v1/imports and ``gp8 admin import``, one code path; docs/api.md, "Bulk import").

The file is validated whole before anything is stored, and every problem is reported with its
line number and column: a file with one bad row stores nothing, and the operator fixes all of
its rows in one go instead of one error per attempt. Then `ImportRepo.provision` stores it all
or nothing (one transaction on SQLite; on MongoDB a transaction where the deployment has them,
else a compensating delete).

One row per vehicle and/or box (columns in any order; ``vin`` and ``imei`` at least):

* ``vin`` [``plate``, ``label``]: a vehicle;
* ``imei``, ``model`` [``protocol``]: a box; with a ``vin`` on the same row it is fitted to
  that vehicle from ``fitted_at`` (RFC 3339 or epoch ms; default: the time of the import).
"""

from __future__ import annotations

import csv
import io
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from api.routes.devices import SECRET_BYTES
from api.schemas.common import LABEL_MAX, PLATE_MAX
from api.services.fittings import FITTED_AT_SKEW_MS
from api.times import iso_ms, parse_time
from api.validation import imei_error, text_error, vin_error
from storage.models import (
    Device,
    DeviceModel,
    DeviceProtocol,
    DeviceStatus,
    Fitting,
    Vehicle,
    new_id,
)
from storage.repository import Store

COLUMNS = ("vin", "plate", "label", "imei", "model", "protocol", "fitted_at")
REQUIRED_COLUMNS = ("vin", "imei")
# Rows per file: 10,000 vehicles with their boxes is the onboarding the import is sized for;
# beyond a few times that, split the file (each part is still all or nothing).
MAX_ROWS = 50_000
# Errors reported per file: enough to fix a file in one pass, bounded for a file that is
# wrong throughout (the wrong column order, say).
MAX_ERRORS = 200
HEADER_LINE = 1


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem of the file: its line (the header is line 1), the column, why."""

    row: int
    column: str | None
    msg: str


class ImportInvalid(Exception):
    """The file has errors; nothing was stored."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} error(s) in the file; nothing was imported")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ImportedBox:
    """A box the import provisioned: its LOGIN secret is shown here once (None: Teltonika)."""

    row: int
    imei: str
    device_id: str
    vehicle_id: str | None
    secret: str | None


@dataclass(frozen=True, slots=True)
class ImportResult:
    vehicles: list[Vehicle]
    boxes: list[ImportedBox]
    fittings: int
    vehicle_lines: dict[str, int]  # VIN -> the file's line it was on


@dataclass
class _Plan:
    vehicles: list[Vehicle] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    fittings: list[Fitting] = field(default_factory=list)
    boxes: list[ImportedBox] = field(default_factory=list)
    vin_rows: dict[str, int] = field(default_factory=dict)
    imei_rows: dict[str, int] = field(default_factory=dict)


class _Errors:
    def __init__(self) -> None:
        self.items: list[RowError] = []

    def add(self, row: int, column: str | None, msg: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append(RowError(row, column, msg))

    def raise_any(self) -> None:
        if self.items:
            raise ImportInvalid(sorted(self.items, key=lambda e: (e.row, e.column or "")))


async def import_csv(store: Store, fleet_id: str, text: str, *, now_ms: int) -> ImportResult:
    """Validate ``text`` whole (ImportInvalid with every error), then store it all or nothing.

    Raises storage's NotFound for an unknown fleet, Conflict when a VIN or IMEI was taken
    between the check and the write (nothing stored either way).
    """
    errors = _Errors()
    plan = _parse(text, fleet_id, now_ms, errors)
    errors.raise_any()
    vins, imeis = await store.imports.taken(fleet_id, plan.vin_rows, plan.imei_rows)
    for vin in sorted(vins, key=plan.vin_rows.__getitem__):
        errors.add(plan.vin_rows[vin], "vin", f"the fleet already has a vehicle with VIN {vin}")
    for imei in sorted(imeis, key=plan.imei_rows.__getitem__):
        errors.add(plan.imei_rows[imei], "imei", f"a box with IMEI {imei} is provisioned already")
    errors.raise_any()
    await store.imports.provision(fleet_id, plan.vehicles, plan.devices, plan.fittings)
    return ImportResult(plan.vehicles, plan.boxes, len(plan.fittings), plan.vin_rows)


def _parse(text: str, fleet_id: str, now_ms: int, errors: _Errors) -> _Plan:
    plan = _Plan()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        errors.add(HEADER_LINE, None, "the file is empty: it needs a header line")
        return plan
    except csv.Error as exc:
        errors.add(HEADER_LINE, None, f"not CSV: {exc}")
        return plan
    if not _header_ok(header, errors):
        return plan
    count = 0
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue  # a blank line
            count += 1
            if count > MAX_ROWS:
                errors.add(line, None, f"at most {MAX_ROWS} rows per file: split it")
                break
            if len(values) != len(header):
                errors.add(line, None, f"{len(values)} fields, the header has {len(header)}")
                continue
            row = {name: value.strip() for name, value in zip(header, values, strict=True)}
            _row(plan, row, line, fleet_id, now_ms, errors)
    except csv.Error as exc:
        errors.add(reader.line_num, None, f"not CSV: {exc}")
    if count == 0 and not errors.items:
        errors.add(HEADER_LINE, None, "the file has a header but no rows")
    return plan


def _header_ok(header: list[str], errors: _Errors) -> bool:
    ok = True
    for name in header:
        if name not in COLUMNS:
            errors.add(HEADER_LINE, name, f"unknown column; the columns are {', '.join(COLUMNS)}")
            ok = False
    for name in _duplicates(header):
        errors.add(HEADER_LINE, name, "column given twice")
        ok = False
    for name in REQUIRED_COLUMNS:
        if name not in header:
            errors.add(HEADER_LINE, name, "missing column")
            ok = False
    return ok


def _duplicates(names: Iterable[str]) -> set[str]:
    return {name for name, count in Counter(names).items() if count > 1}


def _row(
    plan: _Plan, row: dict[str, str], line: int, fleet_id: str, now_ms: int, errors: _Errors
) -> None:
    vin = row.get("vin", "").upper()
    imei = row.get("imei", "")
    if not vin and not imei:
        errors.add(line, "vin", "a row needs a vin, an imei, or both")
        return
    plate, label = row.get("plate", ""), row.get("label", "")
    if vin:
        _check(errors, line, "vin", vin_error(vin))
        if vin in plan.vin_rows:
            errors.add(line, "vin", f"VIN {vin} is also on line {plan.vin_rows[vin]}")
        for column, value, most in (("plate", plate, PLATE_MAX), ("label", label, LABEL_MAX)):
            if len(value) > most:
                errors.add(line, column, f"at most {most} characters")
            _check(errors, line, column, text_error(value))
    elif plate or label:
        errors.add(line, "vin", "plate and label belong to a vehicle: give its vin")
    model: DeviceModel | None = None
    protocol: DeviceProtocol | None = None
    if imei:
        _check(errors, line, "imei", imei_error(imei))
        if imei in plan.imei_rows:
            # One box, one vehicle: the same IMEI twice would fit one box to two vehicles.
            errors.add(line, "imei", f"IMEI {imei} is also on line {plan.imei_rows[imei]}")
        model, protocol = _model(row, line, errors)
    else:
        for column in ("model", "protocol", "fitted_at"):
            if row.get(column):
                errors.add(line, column, "belongs to a box: give its imei")
    fitted_at = now_ms
    if row.get("fitted_at"):
        if not (vin and imei):
            errors.add(line, "fitted_at", "a fitting needs both the vin and the imei")
        try:
            fitted_at = parse_time(row["fitted_at"])
        except ValueError as exc:
            errors.add(line, "fitted_at", str(exc))
        if fitted_at > now_ms + FITTED_AT_SKEW_MS:
            errors.add(line, "fitted_at", f"{iso_ms(fitted_at)} is in the future")
    if vin:
        plan.vin_rows.setdefault(vin, line)
    if imei:
        plan.imei_rows.setdefault(imei, line)
    if errors.items:
        return  # nothing is built once the file has an error: it will not be stored
    vehicle_id = new_id("veh") if vin else None
    device_id = new_id("dev") if imei else None
    if vehicle_id is not None:
        plan.vehicles.append(
            Vehicle(vehicle_id, fleet_id, vin, plate, label, now_ms, device_id=device_id)
        )
    if device_id is not None:
        assert model is not None and protocol is not None  # checked above
        # A Teltonika box logs in with its IMEI alone: there is no secret to give it.
        secret = secrets.token_urlsafe(SECRET_BYTES) if protocol is DeviceProtocol.GP8 else ""
        plan.devices.append(
            Device(
                id=device_id,
                fleet_id=fleet_id,
                imei=imei,
                model=model,
                secret=secret,
                created_ms=now_ms,
                status=DeviceStatus.ACTIVE,
                vehicle_id=vehicle_id,
                protocol=protocol,
            )
        )
        plan.boxes.append(ImportedBox(line, imei, device_id, vehicle_id, secret or None))
    if vehicle_id is not None and device_id is not None:
        plan.fittings.append(Fitting(fleet_id, device_id, vehicle_id, fitted_at))


def _model(
    row: dict[str, str], line: int, errors: _Errors
) -> tuple[DeviceModel | None, DeviceProtocol | None]:
    name = row.get("model", "")
    try:
        model = DeviceModel(name.upper())
    except ValueError:
        known = ", ".join(m.value for m in DeviceModel)
        errors.add(line, "model", f"unknown model {name!r}; the models are {known}")
        return None, None
    given = row.get("protocol", "").lower()
    if not given:
        return model, model.protocol
    try:
        protocol = DeviceProtocol(given)
    except ValueError:
        known = ", ".join(p.value for p in DeviceProtocol)
        errors.add(line, "protocol", f"unknown protocol {given!r}; the protocols are {known}")
        return model, None
    if protocol is not model.protocol:
        errors.add(
            line,
            "protocol",
            f"model {model.value} speaks {model.protocol.value}, not {protocol.value}",
        )
    return model, protocol


def _check(errors: _Errors, line: int, column: str, error: str | None) -> None:
    if error is not None:
        errors.add(line, column, error)
