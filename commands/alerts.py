"""Alerts raised by the command service and the freeze a duplicate box puts on commands
(docs/commands.md, "Duplicate box" and "Hourly engine-start cap").

The freeze follows the box (its device record), not the vehicle, and is effective before any
storage round trip: a second live login freezes the IMEI in memory at once, and the stored
alert takes over once it is written; until then every freeze check retries storing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence

from commands.audit import SYSTEM
from commands.context import CommandContext
from commands.ports import HOOK_TIMEOUT_S
from storage.errors import StorageError
from storage.models import Alert, AlertKind, CommandPolicy, Device, new_id

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
# A box reconnects within seconds of an acknowledged REBOOT while its old socket may still
# look live: not a duplicate.
REBOOT_GRACE_S = 300.0
# Stands for a duplicate-box alert raised in this process and not stored yet.
UNSTORED_ALERT = "alr_unstored"


class Alerts:
    def __init__(self, ctx: CommandContext) -> None:
        self._ctx = ctx
        # Boxes frozen by a duplicate login whose alert is not stored yet (fail-safe), with
        # the alert's detail; storing it is retried at each freeze check.
        self._frozen: dict[str, str] = {}
        self._rebooted_at: dict[str, float] = {}  # imei -> clock.monotonic() of the answer

    def rebooted(self, imei: str) -> None:
        """The box acknowledged a REBOOT: its reconnection soon after is expected."""
        self._rebooted_at[imei] = self._ctx.clock.monotonic()

    async def on_duplicate_login(
        self, imei: str, *, old_remote: str, new_remote: str, idle_s: float
    ) -> None:
        """A second login claimed ``imei`` while its session was live: alert and freeze."""
        rebooted = self._rebooted_at.get(imei)
        if rebooted is not None and self._ctx.clock.monotonic() - rebooted < REBOOT_GRACE_S:
            log.info("imei=%s reconnected right after a reboot: not a duplicate", imei)
            return
        self._ctx.stats["duplicate_logins"] += 1
        # Frozen at once, before any storage round trip, and until the alert is stored.
        self._frozen[imei] = (
            f"IMEI {imei} logged in from {new_remote} while its session from {old_remote} was"
            f" live ({idle_s:.1f} s since its last frame)"
        )
        log.warning(
            "imei=%s: second live login from %s while %s was active %.1f s ago; commands frozen",
            imei,
            new_remote,
            old_remote,
            idle_s,
        )
        async with asyncio.timeout(HOOK_TIMEOUT_S):
            device = await self._ctx.store.devices.get_by_imei(imei)
            if device is not None:
                await self._store_duplicate(device)

    async def freezing(
        self, device: Device | None, open_alerts: Sequence[Alert] | None = None
    ) -> list[str]:
        """Ids of the open alerts that freeze commands to this box; ``open_alerts``: the box's,
        when the caller read them already (with its other reads, in one round).

        By the box, not the vehicle: the alert is about who holds that IMEI, and a vehicle
        given another box is not frozen by the old one's clone.
        """
        if device is None:
            return []
        alerts = (
            await self._ctx.store.alerts.open_alerts(device_id=device.id)
            if open_alerts is None
            else open_alerts
        )
        frozen = [a.id for a in alerts if a.freezes_commands]
        if not frozen and device.imei in self._frozen:
            # Raised here and not stored yet (storage failed): store it now, frozen either way.
            try:
                frozen = [await self._store_duplicate(device)]
            except (StorageError, TimeoutError) as exc:
                log.warning("imei=%s: duplicate-box alert still not stored: %r", device.imei, exc)
                frozen = [UNSTORED_ALERT]
        return frozen

    async def freezing_many(
        self, fleet_id: str, devices: Collection[Device]
    ) -> dict[str, list[str]]:
        """`freezing` for many boxes of one fleet (a bulk order), by device id: the fleet's
        open alerts read once instead of once per box. Boxes not frozen are left out."""
        wanted = {device.id for device in devices}
        frozen: dict[str, list[str]] = {}
        cursor: str | None = None
        while True:
            page = await self._ctx.store.alerts.list(
                fleet_id, open_only=True, cursor=cursor, limit=1000
            )
            for alert in page.items:
                if alert.freezes_commands and alert.device_id in wanted:
                    frozen.setdefault(alert.device_id, []).append(alert.id)
            cursor = page.next_cursor
            if cursor is None:
                break
        for device in devices:
            if device.id not in frozen and device.imei in self._frozen:
                frozen[device.id] = await self.freezing(device)  # stores the held alert
        return frozen

    def lift(self, imei: str) -> None:
        """An admin cleared the box's alert: forget the freeze held in memory too."""
        self._frozen.pop(imei, None)

    async def _store_duplicate(self, device: Device) -> str:
        """Store the duplicate-box alert held in memory for ``device`` (unless one is open);
        from then on the stored alert is the freeze, and clearing it anywhere lifts it."""
        store = self._ctx.store
        open_ = await store.alerts.open_alerts(device_id=device.id, kind=AlertKind.DUPLICATE_BOX)
        if open_:
            self._frozen.pop(device.imei, None)
            return open_[0].id
        alert = Alert(
            id=new_id("alr"),
            fleet_id=device.fleet_id,
            kind=AlertKind.DUPLICATE_BOX,
            raised_ms=self._ctx.clock.now_ms(),
            device_id=device.id,
            vehicle_id=device.vehicle_id,
            detail=self._frozen.get(device.imei, f"IMEI {device.imei} logged in twice"),
            freezes_commands=True,
        )
        await store.alerts.raise_alert(alert)
        self._frozen.pop(device.imei, None)
        await self._raised(alert, actor=self._ctx.lines.gateway_actor)
        return alert.id

    async def engine_start_cap(self, policy: CommandPolicy, vehicle_id: str, now: int) -> None:
        """An engine-start request was refused by the cap: one alert per hour of refusals."""
        open_ = await self._ctx.store.alerts.list(policy.fleet_id, open_only=True, limit=1000)
        if any(
            a.kind is AlertKind.ENGINE_START_CAP and a.raised_ms > now - HOUR_MS
            for a in open_.items
        ):
            return  # one alert per hour of refusals is enough to call someone
        alert = Alert(
            id=new_id("alr"),
            fleet_id=policy.fleet_id,
            kind=AlertKind.ENGINE_START_CAP,
            raised_ms=now,
            vehicle_id=vehicle_id,
            detail=f"engine-start command refused: cap of {policy.engine_start_cap_per_hour}"
            " per hour reached",
        )
        await self._ctx.store.alerts.raise_alert(alert)
        await self._raised(alert, actor=SYSTEM)

    async def _raised(self, alert: Alert, *, actor: str) -> None:
        await self._ctx.store.audit.append(
            self._ctx.lines.plain(
                alert.fleet_id,
                "alert.raised",
                None,
                actor=actor,
                vehicle_id=alert.vehicle_id,
                detail=alert.detail,
            )
        )
