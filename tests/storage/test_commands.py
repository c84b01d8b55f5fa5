"""Contract: remote commands, their audit log, policies, alerts and lock states, on each engine."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Collection
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo_async_mock import AsyncMongoMockClient, AsyncMongoMockCollection

from storage.audit_chain import verify, walk
from storage.errors import Conflict, NotFound, StorageUnavailable
from storage.models import (
    MAX_COMMAND_SEQ,
    NUMBER_TOKEN,
    Alert,
    AlertKind,
    AuditEntry,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    CommandStep,
    Fleet,
    KillSwitch,
    Vehicle,
    VehicleLockState,
    first_command_seq,
    new_id,
)
from storage.mongo import MongoStore
from storage.mongo.command_schema import COMMAND_AUDIT, COMMAND_IDEMPOTENCY, COMMANDS
from storage.mongo.commands import IDEMPOTENCY_STALE_MS, MongoCommands
from storage.mongo.transactions import ServerTransactions, supports_transactions
from storage.repository import Store
from storage.sqlite import SqliteStore
from tests.storage.conftest import UNREACHABLE_MONGO_URL, make_device
from tests.storage.fakes import FakeTransactions

IMEI = "356938035643809"
OTHER_IMEI = "356938035643810"
T0 = 1_714_564_800_000
LIVE = (CommandState.QUEUED, CommandState.SENT)


def command(
    fleet_id: str,
    vehicle_id: str,
    device_id: str,
    *,
    imei: str = IMEI,
    kind: CommandKind = CommandKind.LOCK,
    created_ms: int = T0,
    ttl_s: int = 300,
    key: str | None = None,
) -> CommandRecord:
    return CommandRecord(
        id=new_id("cmd"),
        fleet_id=fleet_id,
        vehicle_id=vehicle_id,
        device_id=device_id,
        imei=imei,
        kind=kind,
        param=0,
        seq=0,
        status=CommandState.QUEUED,
        created_ms=created_ms,
        updated_ms=created_ms,
        expires_ms=created_ms + ttl_s * 1000,
        ttl_s=ttl_s,
        requested_by="key_1",
        reason="customer locked out",
        idempotency_key=key,
    )


def entry(
    c: CommandRecord, action: str = "command.requested", at_ms: int | None = None
) -> AuditEntry:
    return AuditEntry(
        id=new_id("aud"),
        time_ms=c.created_ms if at_ms is None else at_ms,
        fleet_id=c.fleet_id,
        action=action,
        actor="key:key_1",
        key_id="key_1",
        vehicle_id=c.vehicle_id,
        command_id=c.id,
        status=c.status.value,
    )


async def one_step(
    store: Store,
    command_id: str,
    *,
    expected: Collection[CommandState],
    status: CommandState,
    at_ms: int,
    **fields: Any,
) -> CommandRecord | None:
    """One `CommandStep` through `transitions`: the command after it, None if not stored."""
    step = CommandStep(status, frozenset(expected), at_ms, **fields)
    changed = await store.commands.transitions(command_id, [step])
    return changed[0] if changed else None


async def create(store: Store, c: CommandRecord) -> CommandRecord:
    stored, created = await store.commands.create(c, entry(c))
    assert created
    return stored


@pytest.fixture
async def device_id(store: Store, fleet: Fleet, vehicle: Vehicle) -> str:
    device = await make_device(store, fleet.id, IMEI)
    await store.devices.fit(fleet.id, vehicle.id, IMEI, T0 - 1000)
    return device


async def test_create_numbers_each_box_from_the_clock_and_audits_the_request(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    first = await create(store, command(fleet.id, vehicle.id, device_id))
    second = await create(store, command(fleet.id, vehicle.id, device_id))
    other_box = await create(store, command(fleet.id, vehicle.id, "dev_x", imei=OTHER_IMEI))

    assert first.seq == first_command_seq(T0)
    assert second.seq == first.seq + 1
    assert other_box.seq == first_command_seq(T0)
    assert await store.commands.get(fleet.id, first.id) == first
    assert await store.commands.by_seq(IMEI, second.seq) == second
    assert await store.commands.by_seq(IMEI, second.seq + 1) is None
    audit = await store.audit.list(fleet.id, command_id=first.id)
    assert [(e.action, e.command_id) for e in audit.items] == [("command.requested", first.id)]


async def test_idempotency_key_returns_the_first_command_per_fleet(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    first = await create(store, command(fleet.id, vehicle.id, device_id, key="k-1"))
    again = command(fleet.id, vehicle.id, device_id, key="k-1")
    found, created = await store.commands.create(again, entry(again))

    assert not created and found == first
    assert await store.commands.by_idempotency_key(fleet.id, "k-1") == first
    with pytest.raises(NotFound):
        await store.commands.get(fleet.id, again.id)
    # The same key in another fleet is another command.
    theirs = await create(
        store, command(other_fleet.id, "veh_b", "dev_b", imei=OTHER_IMEI, key="k-1")
    )
    assert theirs.id != first.id
    assert await store.commands.by_idempotency_key(other_fleet.id, "k-1") == theirs
    assert await store.commands.by_idempotency_key(fleet.id, "k-2") is None


async def test_transition_is_compare_and_set_and_audited_with_it(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    c = await create(store, command(fleet.id, vehicle.id, device_id))
    sent = await one_step(
        store,
        c.id,
        expected={CommandState.QUEUED},
        status=CommandState.SENT,
        at_ms=T0 + 10,
        changes={"sent_ms": T0 + 10, "gateway_id": "gw-1"},
        attempts_delta=1,
        audit=entry(c, "command.sent", T0 + 10),
    )
    assert sent is not None
    assert (sent.status, sent.sent_ms, sent.gateway_id, sent.attempts, sent.updated_ms) == (
        CommandState.SENT,
        T0 + 10,
        "gw-1",
        1,
        T0 + 10,
    )
    # A second "queued -> sent" (another gateway racing) changes nothing and logs nothing.
    lost = await one_step(
        store,
        c.id,
        expected={CommandState.QUEUED},
        status=CommandState.SENT,
        at_ms=T0 + 11,
        attempts_delta=1,
        audit=entry(c, "command.sent", T0 + 11),
    )
    assert lost is None
    assert await store.commands.get(fleet.id, c.id) == sent
    assert (
        await one_step(store, "cmd_missing", expected=LIVE, status=CommandState.EXPIRED, at_ms=T0)
        is None
    )
    with pytest.raises(ValueError, match="not changeable"):
        await one_step(
            store,
            c.id,
            expected=LIVE,
            status=CommandState.SENT,
            at_ms=T0,
            changes={"seq": 1},  # type: ignore[typeddict-unknown-key]
        )
    acked = await one_step(
        store,
        c.id,
        expected={CommandState.SENT},
        status=CommandState.ACKNOWLEDGED,
        at_ms=T0 + 20,
        changes={"completed_ms": T0 + 20, "result_state": 4},
        audit=entry(c, "command.acknowledged", T0 + 20),
    )
    assert acked is not None and acked.result_state == 4 and acked.attempts == 1
    actions = [e.action for e in (await store.audit.list(fleet.id, command_id=c.id)).items]
    assert actions == ["command.requested", "command.sent", "command.acknowledged"]


def step(
    c: CommandRecord,
    status: CommandState,
    expected: set[CommandState],
    at_ms: int,
    *,
    detail: str = "",
    **changes: Any,
) -> CommandStep:
    line = dataclasses.replace(
        entry(c, f"command.{status.value}", at_ms), status=status.value, detail=detail
    )
    return CommandStep(status, frozenset(expected), at_ms, audit=line, changes=changes)


async def chain_holds(store: Store, fleet_id: str) -> None:
    report = await verify(
        walk(lambda after, n: store.audit.chain(fleet_id, after_seq=after, limit=n), batch=2)
    )
    assert report.broken is None and report.entries > 0


async def test_create_then_stores_the_command_and_its_steps_in_one_write(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    first = await create(store, command(fleet.id, vehicle.id, device_id))  # a chain to extend
    c = command(fleet.id, vehicle.id, device_id, key="k-1")
    sent_step = step(
        c,
        CommandState.SENT,
        {CommandState.QUEUED},
        T0 + 5,
        detail=f"attempt 1, command number {NUMBER_TOKEN}",
        sent_ms=T0 + 5,
        gateway_id="gw-1",
    )
    sent_step = dataclasses.replace(sent_step, attempts_delta=1)
    versions, created = await store.commands.create_then(c, entry(c), [sent_step])

    assert created and [v.status for v in versions] == [CommandState.QUEUED, CommandState.SENT]
    queued, sent = versions
    assert queued.seq == first.seq + 1 == sent.seq
    assert (sent.sent_ms, sent.gateway_id, sent.attempts) == (T0 + 5, "gw-1", 1)
    assert await store.commands.get(fleet.id, c.id) == sent
    lines = (await store.audit.list(fleet.id, command_id=c.id)).items
    assert [(e.action, e.status) for e in lines] == [
        ("command.requested", "queued"),
        ("command.sent", "sent"),
    ]
    assert lines[1].detail == f"attempt 1, command number {sent.seq}"  # the number it got
    await chain_holds(store, fleet.id)

    # A replay of the key: the command as it is, no step applied, nothing logged.
    again = command(fleet.id, vehicle.id, device_id, key="k-1")
    replay, created = await store.commands.create_then(again, entry(again), [sent_step])
    assert not created and replay == [sent]
    assert len((await store.audit.list(fleet.id, command_id=c.id)).items) == 2


async def test_a_step_that_would_overtake_a_waiting_command_is_not_stored(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    waiting = await create(store, command(fleet.id, vehicle.id, device_id))
    # Another box's queued command, numbered apart from this box's: it never counts.
    elsewhere = await create(
        store, command(fleet.id, vehicle.id, "dev_x", imei=OTHER_IMEI, created_ms=T0 + 3_600_000)
    )

    def sending(c: CommandRecord, overtakes: set[int]) -> CommandStep:
        sent = step(c, CommandState.SENT, {CommandState.QUEUED}, T0 + 5)
        return dataclasses.replace(sent, overtakes=frozenset(overtakes))

    # The box has an older command queued: the new one stays queued, unlogged beyond its request.
    c = command(fleet.id, vehicle.id, device_id)
    versions, created = await store.commands.create_then(c, entry(c), [sending(c, set())])
    assert created and [v.status for v in versions] == [CommandState.QUEUED]
    assert len((await store.audit.list(fleet.id, command_id=c.id)).items) == 1

    # Once the older one is written on the session (named in ``overtakes``), it may go.
    d = command(fleet.id, vehicle.id, device_id)
    others = {waiting.seq, versions[0].seq}
    versions, _ = await store.commands.create_then(d, entry(d), [sending(d, others)])
    assert [v.status for v in versions] == [CommandState.QUEUED, CommandState.SENT]
    assert elsewhere.status is CommandState.QUEUED and elsewhere.seq not in others


async def test_transitions_stop_at_the_first_step_that_is_not_expected(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    c = await create(store, command(fleet.id, vehicle.id, device_id))
    sent = await one_step(
        store, c.id, expected={CommandState.QUEUED}, status=CommandState.SENT, at_ms=T0 + 1
    )
    assert sent is not None
    delivered = step(c, CommandState.SENT, {CommandState.SENT}, T0 + 2, delivered_ms=T0 + 2)
    acked = step(c, CommandState.ACKNOWLEDGED, {CommandState.SENT}, T0 + 3, completed_ms=T0 + 3)
    changed = await store.commands.transitions(c.id, [delivered, acked])
    assert [(v.status, v.delivered_ms, v.completed_ms) for v in changed] == [
        (CommandState.SENT, T0 + 2, None),
        (CommandState.ACKNOWLEDGED, T0 + 2, T0 + 3),
    ]
    actions = [e.action for e in (await store.audit.list(fleet.id, command_id=c.id)).items]
    assert actions == ["command.requested", "command.sent", "command.acknowledged"]
    await chain_holds(store, fleet.id)

    # Final now: the first step's compare-and-set fails, so neither is stored or logged.
    expired = step(c, CommandState.EXPIRED, {CommandState.SENT}, T0 + 4)
    assert await store.commands.transitions(c.id, [delivered, expired]) == []
    assert (await store.commands.get(fleet.id, c.id)).status is CommandState.ACKNOWLEDGED
    assert len((await store.audit.list(fleet.id, command_id=c.id)).items) == 3


async def test_pending_expiring_and_status_queries(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    a = await create(store, command(fleet.id, vehicle.id, device_id, ttl_s=10))
    b = await create(store, command(fleet.id, vehicle.id, device_id, ttl_s=100))
    c = await create(store, command(fleet.id, vehicle.id, device_id, ttl_s=100))
    await one_step(store, b.id, expected=LIVE, status=CommandState.SENT, at_ms=T0 + 5_000)
    await one_step(store, c.id, expected=LIVE, status=CommandState.CANCELLED, at_ms=T0 + 6_000)

    pending = await store.commands.pending_for_box(IMEI, T0 + 1_000)
    assert [p.id for p in pending] == [a.id, b.id]  # command-number order, no final state
    later = await store.commands.pending_for_box(IMEI, T0 + 10_000)
    assert [p.id for p in later] == [b.id]  # a has expired
    assert await store.commands.pending_for_box(OTHER_IMEI, T0) == []

    assert [e.id for e in await store.commands.expiring(T0 + 10_000)] == [a.id]
    assert [e.id for e in await store.commands.expiring(T0 + 100_000)] == [a.id, b.id]

    queued = await store.commands.in_status(CommandState.QUEUED)
    assert [q.id for q in queued] == [a.id]
    sent = await store.commands.in_status(CommandState.SENT, updated_from_ms=T0 + 5_000)
    assert [s.id for s in sent] == [b.id]
    assert await store.commands.in_status(CommandState.SENT, updated_to_ms=T0 + 5_000) == []


async def test_list_filters_pages_and_fleet_isolation(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    made = [
        await create(
            store,
            command(
                fleet.id,
                vehicle.id,
                device_id,
                created_ms=T0 + i,
                kind=CommandKind.LOCK if i % 2 else CommandKind.DISABLE_ENGINE_START,
            ),
        )
        for i in range(5)
    ]
    await create(store, command(fleet.id, "veh_other", device_id, created_ms=T0 + 9))

    first = await store.commands.list(fleet.id, vehicle_id=vehicle.id, limit=2)
    assert [c.id for c in first.items] == [made[0].id, made[1].id]
    assert first.next_cursor is not None
    rest = await store.commands.list(fleet.id, vehicle_id=vehicle.id, cursor=first.next_cursor)
    assert [c.id for c in rest.items] == [c.id for c in made[2:]]
    assert rest.next_cursor is None
    locks = await store.commands.list(fleet.id, vehicle_id=vehicle.id, kind=CommandKind.LOCK)
    assert [c.id for c in locks.items] == [made[1].id, made[3].id]
    window = await store.commands.list(fleet.id, from_ms=T0 + 1, to_ms=T0 + 3)
    assert [c.id for c in window.items] == [made[1].id, made[2].id]
    assert (await store.commands.list(fleet.id, status=CommandState.SENT)).items == []
    assert (await store.commands.list(fleet.id)).items[-1].vehicle_id == "veh_other"

    assert (await store.commands.list(other_fleet.id)).items == []
    with pytest.raises(NotFound):
        await store.commands.get(other_fleet.id, made[0].id)

    engine_kinds = {CommandKind.DISABLE_ENGINE_START, CommandKind.ENABLE_ENGINE_START}
    assert await store.commands.count_since(fleet.id, engine_kinds, T0) == 3
    assert await store.commands.count_since(fleet.id, engine_kinds, T0 + 1) == 2
    assert await store.commands.count_since(other_fleet.id, engine_kinds, T0) == 0


async def test_vehicle_lock_state_only_moves_forward(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    assert await store.commands.vehicle_state(fleet.id, vehicle.id) is None
    newer = VehicleLockState(fleet.id, vehicle.id, device_id, True, True, T0 + 100, "cmd_2")
    older = VehicleLockState(fleet.id, vehicle.id, device_id, False, False, T0 + 50, "cmd_1")
    await store.commands.set_vehicle_state(newer)
    await store.commands.set_vehicle_state(older)
    assert await store.commands.vehicle_state(fleet.id, vehicle.id) == newer
    newest = dataclasses.replace(older, updated_ms=T0 + 200)
    await store.commands.set_vehicle_state(newest)
    assert await store.commands.vehicle_state(fleet.id, vehicle.id) == newest
    assert await store.commands.vehicle_state("flt_other", vehicle.id) is None


async def test_policies_and_kill_switch(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    assert await store.policies.get(fleet.id) == CommandPolicy(fleet_id=fleet.id)
    policy = CommandPolicy(fleet.id, four_eyes=True, engine_start_cap_per_hour=3, updated_ms=T0)
    await store.policies.put(policy)
    assert await store.policies.get(fleet.id) == policy
    assert await store.policies.get(other_fleet.id) == CommandPolicy(fleet_id=other_fleet.id)
    off = dataclasses.replace(policy, four_eyes=False, engine_start_cap_per_hour=None)
    await store.policies.put(off)
    assert await store.policies.get(fleet.id) == off

    assert await store.policies.kill_switch() == KillSwitch()
    on = KillSwitch(engaged=True, reason="incident 42", changed_ms=T0, changed_by="key_op")
    await store.policies.set_kill_switch(on)
    assert await store.policies.kill_switch() == on


async def test_alerts_open_list_and_clear(
    store: Store, fleet: Fleet, other_fleet: Fleet, vehicle: Vehicle
) -> None:
    dup = Alert(
        id=new_id("alr"),
        fleet_id=fleet.id,
        kind=AlertKind.DUPLICATE_BOX,
        raised_ms=T0,
        device_id="dev_1",
        vehicle_id=vehicle.id,
        detail="two live sessions",
        freezes_commands=True,
    )
    cap = Alert(new_id("alr"), fleet.id, AlertKind.ENGINE_START_CAP, T0 + 1, vehicle_id="veh_2")
    await store.alerts.raise_alert(dup)
    await store.alerts.raise_alert(cap)

    assert await store.alerts.open_alerts(device_id="dev_1") == [dup]
    assert await store.alerts.open_alerts(vehicle_id=vehicle.id) == [dup]
    assert await store.alerts.open_alerts(device_id="dev_9", vehicle_id="veh_2") == [cap]
    assert await store.alerts.open_alerts(vehicle_id="veh_2", kind=AlertKind.DUPLICATE_BOX) == []
    assert await store.alerts.open_alerts() == []
    assert [a.id for a in (await store.alerts.list(fleet.id)).items] == [dup.id, cap.id]
    assert (await store.alerts.list(fleet.id, vehicle_id="veh_2")).items == [cap]
    with pytest.raises(NotFound):
        await store.alerts.get(other_fleet.id, dup.id)
    with pytest.raises(NotFound):
        await store.alerts.clear(other_fleet.id, dup.id, by="key_x", at_ms=T0 + 5)

    cleared = await store.alerts.clear(fleet.id, dup.id, by="key_admin", at_ms=T0 + 10)
    assert (cleared.cleared_ms, cleared.cleared_by) == (T0 + 10, "key_admin")
    again = await store.alerts.clear(fleet.id, dup.id, by="key_other", at_ms=T0 + 20)
    assert again == cleared  # the first clearing stays
    assert await store.alerts.open_alerts(device_id="dev_1") == []
    assert [a.id for a in (await store.alerts.list(fleet.id, open_only=True)).items] == [cap.id]


async def test_audit_is_per_fleet_and_platform_entries_stand_apart(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    def audit(fleet_id: str | None, time_ms: int, vehicle_id: str | None) -> AuditEntry:
        return AuditEntry(
            id=new_id("aud"),
            time_ms=time_ms,
            fleet_id=fleet_id,
            action="kill_switch.set" if fleet_id is None else "command.requested",
            actor="key:k",
            vehicle_id=vehicle_id,
            reason="theft",
            theft_case_id="case-7",
        )

    mine = [audit(fleet.id, T0 + i, "veh_a" if i % 2 else "veh_b") for i in range(4)]
    for e in [*mine, audit(other_fleet.id, T0, "veh_a"), audit(None, T0, None)]:
        await store.audit.append(e)

    assert (await store.audit.list(fleet.id)).items == mine
    assert (await store.audit.list(fleet.id, vehicle_id="veh_a")).items == [mine[1], mine[3]]
    page = await store.audit.list(fleet.id, limit=3)
    assert page.items == mine[:3] and page.next_cursor is not None
    assert (await store.audit.list(fleet.id, cursor=page.next_cursor)).items == mine[3:]
    assert (await store.audit.list(fleet.id, from_ms=T0 + 2)).items == mine[2:]
    platform = (await store.audit.list(None)).items
    assert [e.action for e in platform] == ["kill_switch.set"]


async def test_erasure_removes_commands_but_numbers_are_never_reused(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    used = await create(store, command(fleet.id, vehicle.id, device_id))
    await store.commands.set_vehicle_state(
        VehicleLockState(fleet.id, vehicle.id, device_id, True, False, T0, used.id)
    )
    await store.fleets.delete(fleet.id)

    assert await store.commands.by_seq(IMEI, used.seq) is None
    assert (await store.audit.list(fleet.id)).items == []
    assert await store.commands.vehicle_state(fleet.id, vehicle.id) is None
    # The same box, provisioned again for someone else, continues its numbering.
    new_fleet = await store.fleets.create("new owner")
    new_device = await make_device(store, new_fleet.id, IMEI)
    fresh = await create(store, command(new_fleet.id, "veh_n", new_device))
    assert fresh.seq == used.seq + 1


async def test_numbers_wrap_to_one_after_u32(
    store: Store, engine: str, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    await create(store, command(fleet.id, vehicle.id, device_id))
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE command_seqs SET last = ?", (MAX_COMMAND_SEQ,))
    else:
        assert isinstance(store, MongoStore)
        await store._db.collection("command_seqs").update_one(
            {"_id": IMEI}, {"$set": {"last": MAX_COMMAND_SEQ}}
        )
    wrapped = await create(store, command(fleet.id, vehicle.id, device_id))
    after_wrap = await create(store, command(fleet.id, vehicle.id, device_id))
    assert (wrapped.seq, after_wrap.seq) == (1, 2)


async def test_transition_stores_the_vehicle_state_with_the_status(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    c = await create(store, command(fleet.id, vehicle.id, device_id))
    state = VehicleLockState(fleet.id, vehicle.id, device_id, True, False, T0 + 30, c.id)
    done = await one_step(
        store,
        c.id,
        expected={CommandState.QUEUED},
        status=CommandState.ACKNOWLEDGED,
        at_ms=T0 + 30,
        vehicle_state=state,
    )
    assert done is not None
    assert await store.commands.vehicle_state(fleet.id, vehicle.id) == state
    # An older report, with a transition that does not apply, never replaces it.
    older = dataclasses.replace(state, doors_locked=False, updated_ms=T0 + 10)
    lost = await one_step(
        store,
        c.id,
        expected={CommandState.QUEUED},
        status=CommandState.FAILED,
        at_ms=T0 + 40,
        vehicle_state=older,
    )
    assert lost is None
    assert await store.commands.vehicle_state(fleet.id, vehicle.id) == state


# --- create: one transaction, or a fail-safe order where the server has none ------------------


async def _atomic_create(store: Store) -> bool:
    """Does this engine store a command and its request's audit line in one transaction?"""
    if isinstance(store, MongoStore):
        assert isinstance(store.commands, MongoCommands)
        return await store.commands._transactions.available()
    return True  # SQLite: one function on the writer thread, one transaction


async def test_a_create_failing_half_way_never_leaves_a_command_without_its_audit_line(
    store: Store, fleet: Fleet, vehicle: Vehicle, device_id: str
) -> None:
    first = await create(store, command(fleet.id, vehicle.id, device_id))
    # The same id again: the command's own insert fails, after whatever came before it.
    clash = dataclasses.replace(command(fleet.id, vehicle.id, device_id), id=first.id)
    requested = dataclasses.replace(entry(clash), id=new_id("aud"))
    with pytest.raises(Conflict):
        await store.commands.create(clash, requested)

    assert await store.commands.get(fleet.id, first.id) == first
    lines = {e.id for e in (await store.audit.list(fleet.id, command_id=first.id)).items}
    # With a transaction the request's line went with the failed insert; without one it was
    # written first (the fail-safe order) and stays: a line too many, never a command unaudited.
    assert (requested.id in lines) is not await _atomic_create(store)


@pytest.fixture
async def fake_store() -> AsyncIterator[MongoStore]:
    store = MongoStore(AsyncMongoMockClient(), "gp8_test")
    await store.start()
    yield store
    await store.close()


async def _fitted(store: Store) -> tuple[str, str, str]:
    fleet = await store.fleets.create("f")
    vehicle = await store.vehicles.create(fleet.id, vin="VF1AAAAA000000001", plate="P", label="L")
    device = await make_device(store, fleet.id, IMEI)
    await store.devices.fit(fleet.id, vehicle.id, IMEI, T0 - 1000)
    return fleet.id, vehicle.id, device


async def test_mongo_create_writes_claim_audit_and_command_in_one_transaction(
    fake_store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = FakeTransactions()
    fake_store.commands = MongoCommands(fake_store._db, transactions)
    writes: list[tuple[str, object, bool]] = []
    insert_one = AsyncMongoMockCollection.insert_one

    async def recording(self: Any, doc: object, *args: Any, **kwargs: Any) -> Any:
        writes.append((self.name, kwargs.get("session"), transactions.inside))
        return await insert_one(self, doc, *args, **kwargs)

    monkeypatch.setattr(AsyncMongoMockCollection, "insert_one", recording)
    fleet_id, vehicle_id, device_id = await _fitted(fake_store)
    writes.clear()
    c = command(fleet_id, vehicle_id, device_id, key="k-1")
    stored, created = await fake_store.commands.create(c, entry(c))

    assert created and transactions.runs == 1
    inside = [(name, session) for name, session, within in writes if within]
    assert inside == [
        (COMMAND_IDEMPOTENCY, transactions.session),
        (COMMAND_AUDIT, transactions.session),
        (COMMANDS, transactions.session),
    ]
    # Only the number is allocated outside (its own atomic counter).
    assert [name for name, _, within in writes if not within] == ["command_seqs"]
    assert await fake_store.commands.by_idempotency_key(fleet_id, "k-1") == stored
    audit = await fake_store.audit.list(fleet_id, command_id=stored.id)
    assert [e.action for e in audit.items] == ["command.requested"]


async def test_mongo_transaction_that_loses_the_key_returns_the_holder(
    fake_store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_store.commands = MongoCommands(fake_store._db, FakeTransactions())
    fleet_id, vehicle_id, device_id = await _fitted(fake_store)
    first = await create(fake_store, command(fleet_id, vehicle_id, device_id, key="k-1"))

    async def not_seen(fleet: str, key: str) -> None:
        return None  # a request racing the first one: its check ran before the first commit

    monkeypatch.setattr(fake_store.commands, "by_idempotency_key", not_seen)
    again = command(fleet_id, vehicle_id, device_id, key="k-1")
    assert await fake_store.commands.create(again, entry(again)) == (first, False)
    with pytest.raises(NotFound):
        await fake_store.commands.get(fleet_id, again.id)
    assert (await fake_store.audit.list(fleet_id, command_id=again.id)).items == []


async def test_mongo_fallback_gives_up_a_claim_whose_writer_died(fake_store: MongoStore) -> None:
    fleet_id, vehicle_id, device_id = await _fitted(fake_store)
    claims = fake_store._db.collection(COMMAND_IDEMPOTENCY)
    claim = {"_id": f"{fleet_id}:k-1", "fleet_id": fleet_id, "command_id": "cmd_gone"}
    await claims.insert_one({**claim, "created_ms": T0 - 1})
    fresh = command(fleet_id, vehicle_id, device_id, key="k-1")
    with pytest.raises(Conflict):  # maybe still being written: not given away
        await fake_store.commands.create(fresh, entry(fresh))

    await claims.update_one(
        {"_id": claim["_id"]}, {"$set": {"created_ms": T0 - IDEMPOTENCY_STALE_MS}}
    )
    stored, created = await fake_store.commands.create(fresh, entry(fresh))
    assert created and await fake_store.commands.by_idempotency_key(fleet_id, "k-1") == stored


@pytest.mark.parametrize(
    ("hello", "expected"),
    [
        ({"isWritablePrimary": True, "setName": "rs0", "logicalSessionTimeoutMinutes": 30}, True),
        ({"isWritablePrimary": True, "msg": "isdbgrid", "logicalSessionTimeoutMinutes": 30}, True),
        ({"isWritablePrimary": True, "logicalSessionTimeoutMinutes": 30}, False),  # standalone
        ({"isWritablePrimary": True, "setName": "rs0"}, False),  # no sessions
    ],
)
def test_transactions_only_on_a_replica_set_or_mongos(
    hello: dict[str, Any], expected: bool
) -> None:
    assert supports_transactions(hello) is expected


async def test_server_transactions_on_the_fake_or_during_an_outage() -> None:
    # The fake answers no `hello`: no transactions, the fail-safe order.
    on_fake = MongoStore(AsyncMongoMockClient(), "gp8_test")
    await on_fake.start()
    assert await ServerTransactions(on_fake._db).available() is False
    await on_fake.close()
    # Unreachable is no answer: it fails the create (retried by the caller), and is asked again.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(UNREACHABLE_MONGO_URL)
    down = ServerTransactions(MongoStore(client, "gp8_test")._db)
    for _ in range(2):
        with pytest.raises(StorageUnavailable):
            await down.available()
    await client.close()
