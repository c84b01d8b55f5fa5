from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Imei, Timestamp
from api.times import iso_ms
from storage.models import Device, DeviceModel


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    imei: Imei
    model: DeviceModel


class DevicePublic(BaseModel):
    id: str
    imei: str
    model: DeviceModel
    status: str
    vehicle_id: str | None
    created_at: Timestamp

    @classmethod
    def of(cls, device: Device) -> DevicePublic:
        return cls(
            id=device.id,
            imei=device.imei,
            model=device.model,
            status=device.status.value,
            vehicle_id=device.vehicle_id,
            created_at=iso_ms(device.created_ms),
        )


class DeviceCreated(DevicePublic):
    secret: str = Field(
        description="The box's LOGIN secret: shown in this response only; configure it in the box"
    )

    @classmethod
    def created(cls, device: Device) -> DeviceCreated:
        return cls(**DevicePublic.of(device).model_dump(), secret=device.secret)


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    next_cursor: str | None
