from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.commands import LockStatePublic
from api.schemas.common import Imei, Label, Plate, TimeIn, Timestamp, Vin
from api.times import iso_ms
from storage.models import Fitting, Vehicle


class VehicleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vin: Vin
    plate: Plate = ""
    label: Label = ""


class VehicleUpdate(BaseModel):
    """Fields to change; an absent or null field is left as it is."""

    model_config = ConfigDict(extra="forbid")

    vin: Vin | None = None
    plate: Plate | None = None
    label: Label | None = None


class VehiclePublic(BaseModel):
    id: str
    vin: str
    plate: str
    label: str
    device_id: str | None
    created_at: Timestamp
    lock_state: LockStatePublic | None = Field(
        default=None,
        description="Doors and engine-start inhibit (docs/commands.md); null only in the answer "
        "to the vehicle's creation, before anything is known",
    )

    @classmethod
    def of(cls, vehicle: Vehicle) -> VehiclePublic:
        return cls(
            id=vehicle.id,
            vin=vehicle.vin,
            plate=vehicle.plate,
            label=vehicle.label,
            device_id=vehicle.device_id,
            created_at=iso_ms(vehicle.created_ms),
        )


class VehiclesPublic(BaseModel):
    data: list[VehiclePublic]
    next_cursor: str | None


class FittingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    imei: Imei
    fitted_at: TimeIn | None = Field(
        default=None,
        description="When the box was fitted, if not now: for recording a past fitting (an "
        "import, a simulation). Not in the future, not before the box's last fitting.",
    )
    move: bool = Field(
        default=False,
        description="Move the box when it is fitted to another vehicle of the fleet (that "
        "vehicle is left without a box). Without it, such a request is refused with 409.",
    )


class FittingPublic(BaseModel):
    device_id: str
    vehicle_id: str
    fitted_at: Timestamp
    removed_at: Timestamp | None

    @classmethod
    def of(cls, fitting: Fitting) -> FittingPublic:
        return cls(
            device_id=fitting.device_id,
            vehicle_id=fitting.vehicle_id,
            fitted_at=iso_ms(fitting.from_ms),
            removed_at=iso_ms(fitting.to_ms) if fitting.to_ms is not None else None,
        )


class FittingsPublic(BaseModel):
    data: list[FittingPublic]
