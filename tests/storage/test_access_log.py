"""Contract: the access log, and the hash chains of both audit logs (storage/audit_chain.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from storage.audit_chain import GENESIS, Broken, Chained, entry_hash, verify, walk
from storage.errors import Conflict
from storage.models import AccessLogEntry, AuditEntry, Fleet, new_id
from storage.repository import Store
from tests.storage.factories import access_entry


async def test_append_and_list_in_time_order(store: Store, fleet: Fleet) -> None:
    late = access_entry(fleet.id, 3_000, "delete")
    early = access_entry(fleet.id, 1_000, "create")
    middle = access_entry(fleet.id, 2_000)
    for entry in (late, early, middle):
        await store.access_log.append(entry)
    listed = (await store.access_log.list(fleet.id)).items
    assert listed == [early, middle, late]
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


async def _items(entries: list[Chained]) -> AsyncIterator[Chained]:
    for entry in entries:
        yield entry


async def test_appends_form_one_chain_per_fleet(store: Store, fleet: Fleet) -> None:
    other = await store.fleets.create("other")
    for i in range(3):
        await store.access_log.append(access_entry(fleet.id, 1_000 + i))
        await store.access_log.append(access_entry(other.id, 1_000 + i))
    await store.access_log.append(access_entry(None, 5))
    chain = await store.access_log.chain(fleet.id)
    assert [e.seq for e in chain] == [1, 2, 3]
    assert chain[0].prev_hash == GENESIS
    assert [e.prev_hash for e in chain[1:]] == [e.hash for e in chain[:-1]]
    assert all(entry_hash(e) == e.hash for e in chain)
    assert [e.seq for e in await store.access_log.chain(fleet.id, after_seq=1, limit=1)] == [2]
    assert set(await store.access_log.chain_fleets()) == {None, fleet.id, other.id}
    report = await verify(
        walk(lambda after, n: store.access_log.chain(fleet.id, after_seq=after, limit=n), batch=2)
    )
    assert (report.entries, report.last_seq, report.broken) == (3, 3, None)


async def test_concurrent_appends_do_not_fork_the_chain(store: Store, fleet: Fleet) -> None:
    await asyncio.gather(*(store.access_log.append(access_entry(fleet.id, i)) for i in range(8)))
    chain = await store.access_log.chain(fleet.id)
    assert [e.seq for e in chain] == list(range(1, 9))
    assert (await verify(_items(list(chain)))).broken is None


async def test_command_audit_is_chained(store: Store, fleet: Fleet) -> None:
    for action in ("kill_switch.set", "policy.updated"):
        await store.audit.append(
            AuditEntry(
                id=new_id("aud"), time_ms=1_000, fleet_id=fleet.id, action=action, actor="system"
            )
        )
    chain = await store.audit.chain(fleet.id)
    assert [e.seq for e in chain] == [1, 2]
    assert chain[1].prev_hash == chain[0].hash
    assert await store.audit.chain_fleets() == [fleet.id]
    assert (await verify(_items(list(chain)))).broken is None


async def test_verify_finds_the_first_altered_or_missing_entry() -> None:
    from storage.audit_chain import link

    entries: list[AccessLogEntry] = []
    for i in range(4):
        head = (entries[-1].seq, entries[-1].hash) if entries else (0, None)
        entries.append(link(access_entry("flt_x", i), *head))
    altered = [*entries[:2], dataclasses.replace(entries[2], detail="edited"), entries[3]]
    assert (await verify(_items(list(altered)))).broken == Broken(
        3, entries[2].id, "the entry was altered"
    )
    missing = [entries[0], entries[2], entries[3]]
    assert (await verify(_items(list(missing)))).broken == Broken(2, None, "entry 2 is missing")
    # Retention deleted the oldest: the rest still checks.
    assert (await verify(_items(list(entries[2:])))).broken is None
