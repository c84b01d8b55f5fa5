"""The platform kill switch as the service sees it: read through a short cache, because every
delivery and every immobilization request asks (docs/commands.md, "Kill switch")."""

from __future__ import annotations

from commands.clock import Clock
from storage.models import KillSwitch
from storage.repository import PolicyRepo

# The switch is read at most this often; a change made through this process applies at once,
# one made elsewhere within this delay.
KILL_SWITCH_CACHE_S = 1.0


class KillSwitchView:
    def __init__(self, policies: PolicyRepo, clock: Clock) -> None:
        self._policies = policies
        self._clock = clock
        self._cached: tuple[KillSwitch, float] | None = None

    async def current(self) -> KillSwitch:
        cached = self._cached
        if cached is not None and self._clock.monotonic() - cached[1] < KILL_SWITCH_CACHE_S:
            return cached[0]
        switch = await self._policies.kill_switch()
        self._cached = (switch, self._clock.monotonic())
        return switch

    async def set(self, switch: KillSwitch) -> None:
        await self._policies.set_kill_switch(switch)
        self._cached = (switch, self._clock.monotonic())
