from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from api.schemas.common import Timestamp
from api.schemas.positions import PositionPublic


class EventType(StrEnum):
    """Every stored event code: protocol.gp8.EventCode names in lower case, then the codes only
    Teltonika boxes report."""

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
    # Teltonika boxes only (gateway/adapters/teltonika.py, FMB_EVENTS; tests keep them in step).
    TRIP = "trip"
    IDLING = "idling"
    AUTO_GEOFENCE = "auto_geofence"
    GEOFENCE_ZONE_1 = "geofence_zone_1"
    GEOFENCE_ZONE_2 = "geofence_zone_2"
    GEOFENCE_ZONE_3 = "geofence_zone_3"
    GEOFENCE_ZONE_4 = "geofence_zone_4"
    GEOFENCE_ZONE_5 = "geofence_zone_5"
    # A profile's privacy input (DeviceProfile.privacy_input): detail 1 on, 0 off.
    PRIVACY_SWITCH = "privacy_switch"


class EventPublic(BaseModel):
    time: Timestamp
    type: str
    detail: int = Field(description="The code-specific value as the box sent it")
    detail_decoded: dict[str, int | float | list[str]] | None = Field(
        default=None,
        description="What detail means, named (docs/protocol.md §4.3): warnings for "
        "dashboard_warning, external_power_mv for power_cut, limit_kmh for overspeed, ...; "
        "null for codes whose detail is 0",
    )
    vehicle_id: str | None
    device_id: str
    received_at: Timestamp
    position: PositionPublic


class EventsPublic(BaseModel):
    data: list[EventPublic]
    next_cursor: str | None
