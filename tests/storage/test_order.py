"""Contract: every time-ordered listing reads newest first too (``newest_first``), as the exact
reverse of its oldest-first order, page by page, on every engine.

Each listing is seeded with rows sharing timestamps, so page boundaries fall inside a group of
equal times: only the tiebreak column keeps a row from coming twice or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from storage.errors import InvalidCursor
from storage.models import AlertKind, AuditEntry, Fleet, Page, TheftCaseStatus, new_id
from storage.repository import Store
from tests.storage.conftest import make_device
from tests.storage.factories import access_entry, event, position
from tests.storage.test_alert_rules import incident
from tests.storage.test_commands import IMEI, command, entry
from tests.storage.test_geofences import crossing, fence
from tests.storage.test_pagination import walk
from tests.storage.test_theft import case, hold_of
from tests.storage.test_webhooks import endpoint, queued

T0 = 1_714_564_800_000
# Three instants, two rows at each: pages of 1 and 4 split every group and the middle one.
TIMES = (T0, T0, T0 + 1_000, T0 + 1_000, T0 + 2_000, T0 + 2_000)
LIMITS = (1, 4)

Read = Callable[[Store, Fleet, str | None, int, bool], Awaitable[Page[Any]]]


@dataclass(frozen=True)
class Listing:
    seed: Callable[[Store, Fleet], Awaitable[None]]
    read: Read
    identity: Callable[[Any], object]
    time: Callable[[Any], int]


async def _positions(store: Store, fleet: Fleet) -> None:
    await store.telemetry.store(
        [position(fleet.id, f"dev_{i % 2}", "veh_1", t) for i, t in enumerate(TIMES)], []
    )


async def _events(store: Store, fleet: Fleet) -> None:
    # Same instant and box, two codes: the third key column breaks that tie.
    await store.telemetry.store(
        [],
        [
            event(fleet.id, "dev_1", "veh_1", t, ("sos", "tamper")[i % 2])
            for i, t in enumerate(TIMES)
        ],
    )


async def _commands(store: Store, fleet: Fleet) -> None:
    vehicle = await store.vehicles.create(fleet.id, vin="VF1ORDER000000001", plate="P", label="")
    device_id = await make_device(store, fleet.id, IMEI)
    await store.devices.fit(fleet.id, vehicle.id, IMEI, T0 - 1_000)
    for t in TIMES:
        c = command(fleet.id, vehicle.id, device_id, created_ms=t)
        await store.commands.create(c, entry(c))


async def _audit(store: Store, fleet: Fleet) -> None:
    for t in TIMES:
        await store.audit.append(
            AuditEntry(id=new_id("aud"), time_ms=t, fleet_id=fleet.id, action="a", actor="k")
        )


async def _access(store: Store, fleet: Fleet) -> None:
    for t in TIMES:
        await store.access_log.append(access_entry(fleet.id, t))


async def _crossings(store: Store, fleet: Fleet) -> None:
    f = await store.geofences.create(fence(fleet.id))
    await store.geofences.save([], [crossing(f, f"veh_{i % 2}", t) for i, t in enumerate(TIMES)])


async def _cases(store: Store, fleet: Fleet) -> None:
    for i, t in enumerate(TIMES):
        c = case(fleet.id, f"veh_{i}", t, status=TheftCaseStatus.CLOSED)
        await store.theft_cases.create(c, hold_of(c))


async def _deliveries(store: Store, fleet: Fleet) -> None:
    hook = await store.webhooks.create(endpoint(fleet.id))
    await queued(store, hook, *range(1, len(TIMES) + 1))


async def _alerts(store: Store, fleet: Fleet) -> None:
    for i, t in enumerate(TIMES):
        await store.alerts.trigger(incident(fleet.id, f"veh_{i}", AlertKind.SOS, t))


async def _hook_id(store: Store, fleet: Fleet) -> str:
    return (await store.webhooks.list(fleet.id)).items[0].id


LISTINGS: dict[str, Listing] = {
    "telemetry.positions": Listing(
        _positions,
        lambda s, f, c, n, d: s.telemetry.positions(
            f.id, "veh_1", from_ms=0, to_ms=2**62, cursor=c, limit=n, newest_first=d
        ),
        lambda p: (p.time_ms, p.device_id),
        lambda p: p.time_ms,
    ),
    "telemetry.events": Listing(
        _events,
        lambda s, f, c, n, d: s.telemetry.events(f.id, cursor=c, limit=n, newest_first=d),
        lambda e: (e.time_ms, e.device_id, e.code),
        lambda e: e.time_ms,
    ),
    "commands.list": Listing(
        _commands,
        lambda s, f, c, n, d: s.commands.list(f.id, cursor=c, limit=n, newest_first=d),
        lambda c: c.id,
        lambda c: c.created_ms,
    ),
    "audit.list": Listing(
        _audit,
        lambda s, f, c, n, d: s.audit.list(f.id, cursor=c, limit=n, newest_first=d),
        lambda e: e.id,
        lambda e: e.time_ms,
    ),
    "access_log.list": Listing(
        _access,
        lambda s, f, c, n, d: s.access_log.list(f.id, cursor=c, limit=n, newest_first=d),
        lambda e: e.id,
        lambda e: e.time_ms,
    ),
    "geofences.events": Listing(
        _crossings,
        lambda s, f, c, n, d: s.geofences.events(f.id, cursor=c, limit=n, newest_first=d),
        lambda e: e.id,
        lambda e: e.time_ms,
    ),
    "theft_cases.list": Listing(
        _cases,
        lambda s, f, c, n, d: s.theft_cases.list(f.id, cursor=c, limit=n, newest_first=d),
        lambda c: c.id,
        lambda c: c.opened_ms,
    ),
    "alerts.list": Listing(
        _alerts,
        lambda s, f, c, n, d: s.alerts.list(f.id, cursor=c, limit=n, newest_first=d),
        lambda a: a.id,
        lambda a: a.raised_ms,
    ),
}


async def _read_deliveries(s: Store, f: Fleet, c: str | None, n: int, d: bool) -> Page[Any]:
    return await s.webhooks.deliveries(
        f.id, await _hook_id(s, f), cursor=c, limit=n, newest_first=d
    )


# Deliveries are ordered by stream cursor (the order their changes happened), newest first
# by default.
LISTINGS["webhooks.deliveries"] = Listing(
    _deliveries, _read_deliveries, lambda d: d.id, lambda d: d.cursor
)


@pytest.fixture(params=sorted(LISTINGS))
async def listing(request: pytest.FixtureRequest, store: Store, fleet: Fleet) -> Listing:
    chosen = LISTINGS[request.param]
    await chosen.seed(store, fleet)
    return chosen


async def test_newest_first_is_the_reverse_page_by_page(
    store: Store, fleet: Fleet, listing: Listing
) -> None:
    for limit in LIMITS:

        def pages(
            newest_first: bool, n: int = limit
        ) -> Callable[[str | None], Awaitable[Page[Any]]]:
            return lambda cursor: listing.read(store, fleet, cursor, n, newest_first)

        oldest = await walk(pages(False), limit)
        newest = await walk(pages(True), limit)
        ids = [listing.identity(item) for item in oldest]
        assert len(ids) == len(TIMES) and len(set(ids)) == len(ids)  # each row once
        times = [listing.time(item) for item in oldest]
        assert times == sorted(times)
        assert [listing.identity(item) for item in newest] == ids[::-1]


async def test_a_cursor_of_one_order_is_refused_by_the_other(
    store: Store, fleet: Fleet, listing: Listing
) -> None:
    for newest_first in (False, True):
        page = await listing.read(store, fleet, None, 2, newest_first)
        assert page.next_cursor is not None
        with pytest.raises(InvalidCursor):
            await listing.read(store, fleet, page.next_cursor, 2, not newest_first)
