"""Contract: fleets and API keys."""

from __future__ import annotations

import dataclasses

import pytest

from storage.errors import Conflict, NotFound
from storage.models import Fleet, Role
from storage.repository import Store
from tests.storage.factories import api_key


async def test_fleet_create_get_list(store: Store) -> None:
    a = await store.fleets.create("Alpha")
    b = await store.fleets.create("Beta")
    assert await store.fleets.get(a.id) == a
    assert a.name == "Alpha" and a.created_ms > 0
    page = await store.fleets.list()
    assert [f.id for f in page.items] == sorted([a.id, b.id])
    assert page.next_cursor is None


async def test_fleet_get_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.fleets.get("flt_doesnotexist")


async def test_fleet_delete_then_not_found(store: Store, fleet: Fleet) -> None:
    await store.fleets.delete(fleet.id)
    with pytest.raises(NotFound):
        await store.fleets.get(fleet.id)
    with pytest.raises(NotFound):
        await store.fleets.delete(fleet.id)


async def test_key_create_get_by_hash(store: Store, fleet: Fleet) -> None:
    key = api_key(fleet.id)
    assert await store.keys.create(key) == key
    assert await store.keys.get(fleet.id, key.id) == key
    assert await store.keys.get_by_hash(key.key_hash) == key
    assert await store.keys.get_by_hash("0" * 64) is None


async def test_key_same_id_or_hash_conflicts(store: Store, fleet: Fleet) -> None:
    key = api_key(fleet.id)
    await store.keys.create(key)
    with pytest.raises(Conflict):
        await store.keys.create(dataclasses.replace(api_key(fleet.id), id=key.id))
    with pytest.raises(Conflict):
        await store.keys.create(dataclasses.replace(api_key(fleet.id), key_hash=key.key_hash))
    assert [k.id for k in (await store.keys.list(fleet.id)).items] == [key.id]


async def test_key_for_missing_fleet_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.keys.create(api_key("flt_doesnotexist"))


async def test_operator_keys_are_apart_from_fleet_keys(store: Store, fleet: Fleet) -> None:
    operator = api_key(None, Role.OPERATOR)
    admin = api_key(fleet.id)
    await store.keys.create(operator)
    await store.keys.create(admin)
    assert [k.id for k in (await store.keys.list(None)).items] == [operator.id]
    assert [k.id for k in (await store.keys.list(fleet.id)).items] == [admin.id]
    assert await store.keys.get(None, operator.id) == operator
    with pytest.raises(NotFound):
        await store.keys.get(None, admin.id)
    with pytest.raises(NotFound):
        await store.keys.get(fleet.id, operator.id)


async def test_revoke_keeps_first_time(store: Store, fleet: Fleet) -> None:
    key = api_key(fleet.id)
    await store.keys.create(key)
    revoked = await store.keys.revoke(fleet.id, key.id, 5_000)
    assert revoked == dataclasses.replace(key, revoked_ms=5_000)
    again = await store.keys.revoke(fleet.id, key.id, 9_000)
    assert again.revoked_ms == 5_000
    assert (await store.keys.get_by_hash(key.key_hash)) == revoked


async def test_revoke_missing_is_not_found(store: Store, fleet: Fleet) -> None:
    with pytest.raises(NotFound):
        await store.keys.revoke(fleet.id, "key_doesnotexist", 1)
