from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from api.schemas.common import Timestamp
from api.schemas.positions import PositionPublic


class EventType(StrEnum):
    """protocol.EventCode names in lower case (tests keep the two in step)."""

    SOS = "sos"
    POWER_CUT = "power_cut"
    POWER_RESTORED = "power_restored"
    BATTERY_LOW = "battery_low"
    TAMPER = "tamper"
    GPS_JAMMING = "gps_jamming"
    GSM_JAMMING = "gsm_jamming"
    TOWING = "towing"
    CRASH = "crash"
    HARSH_BRAKING = "harsh_braking"
    HARSH_ACCELERATION = "harsh_acceleration"
    HARSH_CORNERING = "harsh_cornering"
    DASHBOARD_WARNING = "dashboard_warning"
    IGNITION_ON = "ignition_on"
    IGNITION_OFF = "ignition_off"
    DRIVER_BADGE = "driver_badge"
    OVERSPEED = "overspeed"


class EventPublic(BaseModel):
    time: Timestamp
    type: str
    detail: int
    vehicle_id: str | None
    device_id: str
    received_at: Timestamp
    position: PositionPublic


class EventsPublic(BaseModel):
    data: list[EventPublic]
    next_cursor: str | None
