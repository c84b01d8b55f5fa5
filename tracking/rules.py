"""A fleet's alert rules and badge policy as the handlers and the API read them, with the
default rules created lazily: the first time anything reads a fleet's rules, a fleet that never
had its defaults gets them (tracking/rules_logic.py `default_rules`), so fleets created before
the rules existed are protected too, and a default rule someone deleted stays deleted.

The handlers read through a `RuleBook`, which keeps each fleet's rules for ``ttl_s`` (5 s): a
change made through the API of another gp8 process applies within that; the API of this
process calls `invalidate` after each write, which makes it immediate here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage.errors import NotFound, StorageError
from storage.models import AlertRule, TrackingPolicy, now_ms
from storage.repository import AlertRuleRepo
from tracking.rules_logic import default_rules

log = logging.getLogger(__name__)

# How long a fleet's rules are used before they are read again.
RULES_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class FleetRules:
    rules: tuple[AlertRule, ...]
    policy: TrackingPolicy


async def ensure_defaults(repo: AlertRuleRepo, fleet_id: str, at_ms: int) -> TrackingPolicy:
    """The fleet's policy, after creating its default rules if it never had them."""
    policy = await repo.policy(fleet_id)
    if policy.defaults_ms is None:
        if await repo.ensure_defaults(fleet_id, default_rules(fleet_id, at_ms), at_ms):
            log.info("fleet %s: default alert rules created", fleet_id)
        policy = await repo.policy(fleet_id)
    return policy


async def load(repo: AlertRuleRepo, fleet_id: str, at_ms: int) -> FleetRules:
    policy = await ensure_defaults(repo, fleet_id, at_ms)
    return FleetRules(tuple(await repo.list(fleet_id)), policy)


class RuleBook:
    """Each fleet's rules, read through and kept ``ttl_s``; a fleet that is gone has none."""

    def __init__(
        self,
        repo: AlertRuleRepo,
        *,
        ttl_s: float = RULES_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._repo = repo
        self._ttl_s = ttl_s
        self._clock = clock
        self._wall_ms = wall_ms
        self._fleets: dict[str, tuple[float, FleetRules]] = {}

    async def get(self, fleet_id: str) -> FleetRules:
        cached = self._fleets.get(fleet_id)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        try:
            rules = await load(self._repo, fleet_id, self._wall_ms())
        except NotFound:  # erased while its boxes still report
            rules = FleetRules((), TrackingPolicy(fleet_id))
        except StorageError:
            if cached is None:
                raise
            log.warning("fleet %s: alert rules not reloaded, using the ones in hand", fleet_id)
            rules = cached[1]
        self._fleets[fleet_id] = (self._clock() + self._ttl_s, rules)
        return rules

    def invalidate(self, fleet_id: str) -> None:
        self._fleets.pop(fleet_id, None)
