"""Rules for recording a fitting in the past (``fitted_at``)."""

from __future__ import annotations

from storage.errors import Conflict
from storage.repository import DeviceRepo

# A client clock a little ahead of ours is not "the future".
FITTED_AT_SKEW_MS = 60_000


async def check_backdated_fitting(
    devices: DeviceRepo, fleet_id: str, vehicle_id: str, imei: str, at_ms: int
) -> None:
    """Conflict when the box's recorded history already reaches past ``at_ms``: a fitting that
    began or ended later would make the history overlap itself. A box already fitted to this
    vehicle passes (fitting it again changes nothing), and a box not in the fleet is left to
    `DeviceRepo.fit`, which answers NotFound."""
    page = await devices.list(fleet_id, imei=imei, limit=1)
    if not page.items or page.items[0].vehicle_id == vehicle_id:
        return
    for fitting in await devices.fittings(page.items[0].id):
        latest = fitting.to_ms if fitting.to_ms is not None else fitting.from_ms
        if max(latest, fitting.from_ms) > at_ms:
            raise Conflict("the box's fitting history already goes past fitted_at")


async def refuse_silent_move(
    devices: DeviceRepo, fleet_id: str, vehicle_id: str, imei: str
) -> None:
    """Conflict when the box is fitted to another vehicle: fitting it here would take it from
    there, which a client must ask for (``"move": true``) rather than do by a typo."""
    page = await devices.list(fleet_id, imei=imei, limit=1)
    if page.items and page.items[0].vehicle_id not in (None, vehicle_id):
        raise Conflict(
            f'box {imei} is fitted to vehicle {page.items[0].vehicle_id}; send "move": true to'
            " move it here"
        )
