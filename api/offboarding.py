"""A fleet being offboarded is read-only through the API (docs/gdpr.md, "Offboarding").

Checked for every request of a fleet key that could write (any method but GET, HEAD and
OPTIONS), except the exports, which must keep working for the whole window. The fleet's
offboarding is read through a short per-process cache: an offboarding started on another
process applies here within `CACHE_S`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from api.problems import ApiProblem
from api.times import iso_ms
from storage.repository import Store
from storage.retention import Offboarding

CACHE_S = 5.0
PROBLEM_TYPE = "urn:gp8:problem:fleet-offboarding"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# Still allowed while offboarding: the customer recovers its data through them.
_ALLOWED_PREFIXES = ("/v1/exports",)


@dataclass
class OffboardingCache:
    entries: dict[str, tuple[float, Offboarding | None]] = field(default_factory=dict)

    async def get(self, store: Store, fleet_id: str) -> Offboarding | None:
        now = time.monotonic()
        cached = self.entries.get(fleet_id)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        found = await store.retention.offboarding(fleet_id)
        self.entries[fleet_id] = (now, found)
        return found

    def forget(self, fleet_id: str) -> None:
        self.entries.pop(fleet_id, None)


def offboarding_cache(request: Request) -> OffboardingCache:
    cache = getattr(request.app.state, "offboarding_cache", None)
    if cache is None:
        cache = request.app.state.offboarding_cache = OffboardingCache()
    return cache


async def refuse_writes_while_offboarding(request: Request, store: Store, fleet_id: str) -> None:
    """409 for a write to a fleet that is being offboarded."""
    # The scope's path, which request.url.path is made of: building the URL costs ~7 µs of
    # every write.
    if request.method in _READS or request.scope["path"].startswith(_ALLOWED_PREFIXES):
        return
    offboarding = await offboarding_cache(request).get(store, fleet_id)
    if offboarding is None:
        return
    raise ApiProblem(
        409,
        f"the fleet is being offboarded: read-only until its data is erased at"
        f" {iso_ms(offboarding.ends_ms)}; exports still work",
        type_=PROBLEM_TYPE,
    )
