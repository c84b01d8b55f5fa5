from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas.common import Imei, Timestamp
from api.times import iso_ms
from storage.models import Device, DeviceModel, DeviceProtocol

# How a box proves who it is at login (docs/security.md).
Authentication = Literal["hmac_secret", "imei_only"]
AUTHENTICATION: dict[DeviceProtocol, Authentication] = {
    DeviceProtocol.GP8: "hmac_secret",
    DeviceProtocol.TELTONIKA: "imei_only",
}


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    imei: Imei
    model: DeviceModel
    protocol: DeviceProtocol = Field(
        DeviceProtocol.GP8,
        description="What the box speaks: gp8 (GP8000, GP8500) or teltonika (FMB, FMC, FMM)",
    )

    @model_validator(mode="after")
    def _model_speaks_protocol(self) -> DeviceCreate:
        if self.model.protocol is not self.protocol:
            raise ValueError(
                f"model {self.model.value} speaks {self.model.protocol.value}, "
                f"not {self.protocol.value}"
            )
        return self


class DevicePublic(BaseModel):
    id: str
    imei: str
    model: DeviceModel
    status: str
    vehicle_id: str | None
    created_at: Timestamp
    protocol: DeviceProtocol
    authentication: Authentication = Field(
        description="imei_only: the box logs in with its IMEI alone, no secret (Teltonika)"
    )

    @classmethod
    def of(cls, device: Device) -> DevicePublic:
        return cls(
            id=device.id,
            imei=device.imei,
            model=device.model,
            status=device.status.value,
            vehicle_id=device.vehicle_id,
            created_at=iso_ms(device.created_ms),
            protocol=device.protocol,
            authentication=AUTHENTICATION[device.protocol],
        )


class DeviceCreated(DevicePublic):
    secret: str | None = Field(
        description="The box's LOGIN secret: shown in this response only; configure it in the "
        "box. Null for a Teltonika box, which has none"
    )

    @classmethod
    def created(cls, device: Device) -> DeviceCreated:
        return cls(**DevicePublic.of(device).model_dump(), secret=device.secret or None)


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    next_cursor: str | None
