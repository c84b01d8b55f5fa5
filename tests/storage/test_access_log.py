"""Contract: the access log."""

from __future__ import annotations

import dataclasses

import pytest

from storage.errors import Conflict
from storage.models import Fleet
from storage.repository import Store
from tests.storage.factories import access_entry


async def test_append_and_list_in_time_order(store: Store, fleet: Fleet) -> None:
    late = access_entry(fleet.id, 3_000, "delete")
    early = access_entry(fleet.id, 1_000, "create")
    middle = access_entry(fleet.id, 2_000)
    for entry in (late, early, middle):
        await store.access_log.append(entry)
    assert (await store.access_log.list(fleet.id)).items == [early, middle, late]
    ranged = await store.access_log.list(fleet.id, from_ms=1_500, to_ms=3_000)
    assert ranged.items == [middle]


async def test_operator_entries_are_apart(store: Store, fleet: Fleet) -> None:
    operator = access_entry(None, 1_000, "create")
    mine = access_entry(fleet.id, 1_000)
    await store.access_log.append(operator)
    await store.access_log.append(mine)
    assert (await store.access_log.list(None)).items == [operator]
    assert (await store.access_log.list(fleet.id)).items == [mine]


async def test_same_id_twice_conflicts(store: Store, fleet: Fleet) -> None:
    entry = access_entry(fleet.id, 1_000)
    await store.access_log.append(entry)
    with pytest.raises(Conflict):
        await store.access_log.append(dataclasses.replace(entry, time_ms=2_000))
    assert (await store.access_log.list(fleet.id)).items == [entry]
