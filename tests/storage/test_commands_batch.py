"""Contract: many commands created at once (`create_many`), on each engine; and the SQLite
writer's group commit, which lets concurrent writes share one transaction."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.errors import StorageError
from storage.models import Fleet, Vehicle, first_command_seq
from storage.repository import Store
from storage.sqlite.db import Database
from tests.storage import test_commands as contract
from tests.storage.conftest import ENGINES_WITH_TRANSACTIONS, make_device
from tests.storage.test_commands import OTHER_IMEI, T0, command, create, entry

device_id = contract.device_id  # the fixture: a box fitted to ``vehicle``


@pytest.fixture(params=ENGINES_WITH_TRANSACTIONS)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


async def test_create_many_numbers_stores_and_audits_each_in_order(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    other = await make_device(store, fleet.id, OTHER_IMEI)
    earlier = await create(store, command(fleet.id, vehicle.id, device_id, key="k-0"))
    batch = [
        command(fleet.id, vehicle.id, device_id, key="k-1"),
        command(fleet.id, "veh_2", other, imei=OTHER_IMEI, key="k-2"),
        command(fleet.id, vehicle.id, device_id),
        command(fleet.id, vehicle.id, device_id, key="k-0"),  # a replay of `earlier`
        command(fleet.id, vehicle.id, device_id, key="k-1"),  # a replay inside the batch
    ]

    answers = await store.commands.create_many([(c, entry(c)) for c in batch])

    assert [created for _, created in answers] == [True, True, True, False, False]
    first, second, third, replay, inner = (c for c, _ in answers)
    assert first.seq == earlier.seq + 1 and third.seq == earlier.seq + 2
    assert second.seq == first_command_seq(T0)
    assert replay == earlier and inner == first
    for stored in (first, second, third):
        assert await store.commands.get(fleet.id, stored.id) == stored
        audit = await store.audit.list(fleet.id, command_id=stored.id)
        assert [e.action for e in audit.items] == ["command.requested"]
    assert await store.commands.by_idempotency_key(fleet.id, "k-2") == second
    # The replays stored nothing: no command, no audit line.
    for c in batch[3:]:
        assert (await store.audit.list(fleet.id, command_id=c.id)).items == []
    assert await store.commands.create_many([]) == []


async def test_by_idempotency_keys_finds_the_fleets_commands_by_key(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    first = await create(store, command(fleet.id, vehicle.id, device_id, key="k#1"))
    second = await create(store, command(fleet.id, vehicle.id, device_id, key="k#2"))
    await create(store, command(other_fleet.id, "veh_b", "dev_b", imei=OTHER_IMEI, key="k#3"))

    found = await store.commands.by_idempotency_keys(fleet.id, ["k#1", "k#2", "k#3", "k#9"])

    assert found == {"k#1": first, "k#2": second}
    assert await store.commands.by_idempotency_keys(fleet.id, []) == {}


async def test_create_many_keeps_the_audit_chain_whole(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    batch = [command(fleet.id, vehicle.id, device_id) for _ in range(5)]
    await store.commands.create_many([(c, entry(c)) for c in batch])

    chain = await store.audit.chain(fleet.id)
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert all(e.prev_hash == before.hash for before, e in itertools.pairwise(chain))


# --- the SQLite writer's group commit ----------------------------------------------------


def _insert(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
    if n < 0:
        raise ValueError("refused")
    return n


def _rows(conn: sqlite3.Connection) -> list[int]:
    return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A `Database` on a file with one table ``t (n INTEGER PRIMARY KEY)``."""

    def prepare(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")

    database = Database(tmp_path / "t.sqlite3", busy_timeout_ms=1000, prepare=prepare)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def test_group_commit_answers_each_write_and_rolls_back_only_the_failing_one(
    db: Database,
) -> None:
    values = [1, 2, -3, 4, 2]  # -3 raises after its insert; the second 2 hits the key
    answers = await asyncio.gather(*(db.write(_insert, n) for n in values), return_exceptions=True)
    assert answers[:2] == [1, 2] and answers[3] == 4
    assert isinstance(answers[2], ValueError)
    assert not isinstance(answers[4], int)  # the duplicate key, as a storage error
    assert await db.read(_rows) == [1, 2, 4]


async def test_a_write_alone_in_its_group_takes_no_savepoint_and_fails_alone(db: Database) -> None:
    statements: list[str] = []
    await db.write(lambda conn: conn.set_trace_callback(statements.append))
    # One at a time: each write is its group's only one.
    with pytest.raises(ValueError):
        await db.write(_insert, -3)  # raises after its insert: rolled back whole
    assert await db.write(_insert, 5) == 5
    with pytest.raises(StorageError):  # the key is taken
        await db.write(_insert, 5)
    assert await db.write(_insert, 6) == 6
    assert await db.read(_rows) == [5, 6]
    assert statements and not [s for s in statements if "SAVEPOINT" in s]


def _read(conn: sqlite3.Connection, n: int) -> int:
    (found,) = conn.execute("SELECT count(*) FROM t WHERE n <= ?", (n,)).fetchone()
    if n < 0:
        raise ValueError("refused")
    return int(found)


async def test_queued_reads_are_answered_each_with_its_own_result_or_error(db: Database) -> None:
    await asyncio.gather(*(db.write(_insert, n) for n in range(1, 6)))
    # Queued together, run by the reader in one batch: one failing read fails alone.
    answers = await asyncio.gather(
        *(db.read(_read, n) for n in (1, 5, -1, 3)), return_exceptions=True
    )
    assert answers[0] == 1 and answers[1] == 5 and answers[3] == 3
    assert isinstance(answers[2], ValueError)
    # A cancelled read leaves the reader serving the next ones.
    cancelled = asyncio.ensure_future(db.read(_read, 2))
    cancelled.cancel()
    assert await db.read(_read, 4) == 4


def _slow(conn: sqlite3.Connection, seconds: float) -> str:
    time.sleep(seconds)  # stands for a long read: a day of history
    return "slow"


async def test_a_quick_read_is_answered_without_waiting_for_a_long_one_after_it(
    db: Database,
) -> None:
    quick = asyncio.ensure_future(db.read(_read, 1))
    slow = asyncio.ensure_future(db.read(_slow, 0.5))
    done, _ = await asyncio.wait({quick, slow}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {quick}
    assert await slow == "slow"
