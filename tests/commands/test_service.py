"""CommandService behind a fake transport: scale-out, resends, late answers, refits, NACKs.

The transport is the one Protocol the service sends through (`Sender`); storage is each real
engine (SQLite, and MongoDB's in-memory fake).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo_async_mock import AsyncMongoMockClient

from gateway.commands import (
    CommandRequest,
    CommandService,
    InvalidCommand,
    Requester,
    VehicleFrozen,
    rules,
)
from protocol.gp8 import (
    Ack,
    Command,
    CommandFailure,
    CommandResult,
    CommandStatus,
    CommandType,
    Nack,
    NackReason,
    RecordFlags,
)
from storage.errors import StorageUnavailable
from storage.models import Alert, CommandKind, CommandState, DeviceModel, Role
from storage.mongo import MongoStore
from storage.repository import Store
from storage.sqlite import SqliteStore

IMEI = "356938035643809"
# SQLite fsyncs every commit; these tests do not measure that.
TMPFS = "/dev/shm" if Path("/dev/shm").is_dir() else None
T0 = 1_714_564_800_000


@dataclass
class FakeSender:
    online: set[str] = field(default_factory=set)
    sent: list[tuple[str, Command]] = field(default_factory=list)
    fail: bool = False

    def is_online(self, imei: str) -> bool:
        return imei in self.online

    async def send(self, imei: str, message: Command) -> bool:
        if self.fail or imei not in self.online:
            return False
        self.sent.append((imei, message))
        return True


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@dataclass
class World:
    store: Store
    clock: Clock
    fleet_id: str
    vehicle_id: str
    admin: Requester

    def service(self, sender: FakeSender | None = None, **kw: float) -> CommandService:
        service = CommandService(self.store, gateway_id="gw-t", clock=self.clock, **kw)
        if sender is not None:
            service.add_sender(sender)
        return service

    async def status(self, command_id: str) -> CommandState:
        return (await self.store.commands.get(self.fleet_id, command_id)).status


@pytest.fixture(params=["sqlite", "mongo-fake"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    path = Path(tempfile.mkdtemp(prefix="gp8-cmd-svc-", dir=TMPFS))
    store: Store
    if request.param == "sqlite":
        store = SqliteStore(path / "gp8.sqlite3")
    else:
        store = MongoStore(AsyncMongoMockClient(), "gp8_test")
    await store.start()
    fleet = await store.fleets.create("f")
    vehicle = await store.vehicles.create(fleet.id, vin="VF1AAAAA000000001", plate="P", label="L")
    await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s")
    await store.devices.fit(fleet.id, vehicle.id, IMEI, T0 - 1000)
    yield World(store, Clock(), fleet.id, vehicle.id, Requester("key_admin", fleet.id, Role.ADMIN))
    await store.close()
    shutil.rmtree(path, ignore_errors=True)


def lock(world: World, **kw: object) -> CommandRequest:
    return CommandRequest(vehicle_id=world.vehicle_id, kind=CommandKind.LOCK, **kw)  # type: ignore[arg-type]


def done(seq: int, state: int = RecordFlags.DOORS_LOCKED) -> CommandResult:
    return CommandResult(900, seq, CommandStatus.DONE, CommandFailure.NONE, state)


async def test_a_gateway_delivers_what_an_api_only_process_queued(world: World) -> None:
    api = world.service()  # no transport: an API-only process
    sender = FakeSender(online={IMEI})
    gateway = world.service(sender)

    command, created = await api.create(world.admin, lock(world))
    assert created and command.status is CommandState.QUEUED
    assert await gateway.poll() == 1
    assert sender.sent == [(IMEI, Command(command.seq, CommandType.LOCK, 0))]
    assert await world.status(command.id) is CommandState.SENT
    assert await gateway.poll() == 0  # not sent twice on the same session

    await gateway.on_box_reply(IMEI, done(command.seq))
    stored = await world.store.commands.get(world.fleet_id, command.id)
    assert stored.status is CommandState.ACKNOWLEDGED
    assert stored.result_state == RecordFlags.DOORS_LOCKED and stored.gateway_id == "gw-t"
    state = await world.store.commands.vehicle_state(world.fleet_id, world.vehicle_id)
    assert state is not None and state.doors_locked and not state.engine_start_inhibited


async def test_unacknowledged_command_is_resent_until_the_box_acks_it(world: World) -> None:
    sender = FakeSender(online={IMEI})
    service = world.service(sender, resend_after_s=10.0)
    command, _ = await service.create(world.admin, lock(world))
    assert len(sender.sent) == 1

    world.clock.ms += 11_000
    await service.poll()
    assert [m.seq for _, m in sender.sent] == [command.seq, command.seq]  # same number
    assert (await world.store.commands.get(world.fleet_id, command.id)).attempts == 2

    await service.on_box_reply(IMEI, Ack(901, command.seq))  # the box has it now
    stored = await world.store.commands.get(world.fleet_id, command.id)
    assert stored.delivered_ms == world.clock.ms and stored.status is CommandState.SENT
    world.clock.ms += 11_000
    await service.poll()
    assert len(sender.sent) == 2  # an ACKed command waits for its result, not resent


async def test_a_late_answer_after_expiry_is_recorded_and_updates_the_vehicle(
    world: World,
) -> None:
    sender = FakeSender(online={IMEI})
    service = world.service(sender)
    inhibit = CommandRequest(world.vehicle_id, CommandKind.DISABLE_ENGINE_START, ttl_s=5)
    command, _ = await service.create(world.admin, inhibit)
    world.clock.ms += 6_000
    assert await service.expire_due() == 1
    assert await world.status(command.id) is CommandState.EXPIRED

    world.clock.ms += 1_000
    await service.on_box_reply(IMEI, done(command.seq, RecordFlags.ENGINE_START_INHIBITED))
    assert await world.status(command.id) is CommandState.EXPIRED  # final stays final
    state = await world.store.commands.vehicle_state(world.fleet_id, world.vehicle_id)
    assert state is not None and state.engine_start_inhibited  # but the truth is shown
    audit = await world.store.audit.list(world.fleet_id, command_id=command.id)
    actions = [e.action for e in audit.items]
    assert actions == [
        "command.requested",
        "command.sent",
        "command.expired",
        "command.late_result",
    ]
    assert "before the box answered" in audit.items[2].detail
    assert service.stats["late_results"] == 1


async def test_a_command_never_goes_to_a_box_moved_to_another_vehicle(world: World) -> None:
    sender = FakeSender()
    service = world.service(sender)
    command, _ = await service.create(world.admin, lock(world))
    other = await world.store.vehicles.create(
        world.fleet_id, vin="VF1AAAAA000000002", plate="Q", label="M"
    )
    await world.store.devices.fit(world.fleet_id, other.id, IMEI, T0)

    sender.online.add(IMEI)
    await service.on_box_online(IMEI)
    await service.settle()  # the delivery it started
    assert sender.sent == []
    stored = await world.store.commands.get(world.fleet_id, command.id)
    assert (stored.status, stored.failure) == (CommandState.FAILED, "box_refitted")


async def test_nack_bad_crc_resends_other_nacks_fail(world: World) -> None:
    sender = FakeSender(online={IMEI})
    service = world.service(sender)
    first, _ = await service.create(world.admin, lock(world))
    await service.on_box_reply(IMEI, Nack(902, first.seq, NackReason.BAD_CRC))
    await service.settle()
    assert [m.seq for _, m in sender.sent] == [first.seq, first.seq]

    second, _ = await service.create(world.admin, lock(world))
    await service.on_box_reply(IMEI, Nack(903, second.seq, NackReason.MALFORMED))
    stored = await world.store.commands.get(world.fleet_id, second.id)
    assert (stored.status, stored.failure) == (CommandState.FAILED, "box_nack_malformed")


async def test_answers_to_unknown_numbers_are_counted_not_fatal(world: World) -> None:
    service = world.service(FakeSender(online={IMEI}))
    await service.on_box_reply(IMEI, done(12345))
    await service.on_box_reply(IMEI, Ack(1, 12345))
    await service.on_box_reply("000000000000000", done(1))
    assert service.stats["results_unknown"] == 2


async def test_a_failed_write_leaves_it_sent_for_the_next_login(world: World) -> None:
    sender = FakeSender(online={IMEI}, fail=True)
    service = world.service(sender)
    command, _ = await service.create(world.admin, lock(world))
    assert command.status is CommandState.SENT and service.stats["send_failed"] == 1
    sender.fail = False
    await service.on_box_online(IMEI)  # the box logged in again
    await service.settle()
    assert [m.seq for _, m in sender.sent] == [command.seq]


async def test_reconnect_right_after_a_reboot_is_not_a_duplicate(world: World) -> None:
    service = world.service(FakeSender(online={IMEI}))
    reboot, _ = await service.create(
        world.admin, CommandRequest(world.vehicle_id, CommandKind.REBOOT)
    )
    await service.on_box_reply(IMEI, done(reboot.seq, 0))
    await service.on_duplicate_login(IMEI, old_remote="a:1", new_remote="a:2", idle_s=1.0)
    assert await world.store.alerts.open_alerts(vehicle_id=world.vehicle_id) == []
    lock_again, _ = await service.create(world.admin, lock(world))
    assert lock_again.status is CommandState.SENT


async def test_duplicate_freezes_at_once_and_delivery_holds(world: World) -> None:
    sender = FakeSender()
    service = world.service(sender)
    queued, _ = await service.create(world.admin, lock(world))
    await service.on_duplicate_login(IMEI, old_remote="a:1", new_remote="b:2", idle_s=0.5)
    sender.online.add(IMEI)
    assert await service.deliver(IMEI) == []
    assert sender.sent == [] and await world.status(queued.id) is CommandState.QUEUED
    (alert,) = await world.store.alerts.open_alerts(vehicle_id=world.vehicle_id)
    assert alert.freezes_commands and "b:2" in alert.detail
    await service.on_duplicate_login(IMEI, old_remote="b:2", new_remote="a:3", idle_s=0.5)
    assert len(await world.store.alerts.open_alerts(vehicle_id=world.vehicle_id)) == 1


@given(
    kind=st.sampled_from(list(CommandKind)),
    params=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(), st.booleans(), st.text(max_size=4)),
        max_size=3,
    ),
)
def test_wire_param_accepts_only_the_typed_parameters(
    kind: CommandKind, params: dict[str, object]
) -> None:
    valid = (
        kind is CommandKind.SET_REPORT_INTERVAL
        and set(params) == {"seconds"}
        and type(params["seconds"]) is int
        and rules.REPORT_INTERVAL_MIN_S <= params["seconds"] <= rules.REPORT_INTERVAL_MAX_S  # type: ignore[operator]
    ) or (kind is not CommandKind.SET_REPORT_INTERVAL and not params)
    if valid:
        param = rules.wire_param(kind, params)
        assert 0 <= param <= rules.REPORT_INTERVAL_MAX_S
    else:
        with pytest.raises(InvalidCommand):
            rules.wire_param(kind, params)


def test_roles_per_kind() -> None:
    for kind in CommandKind:
        assert not rules.role_allows(Role.VIEWER, kind)
        assert not rules.role_allows(Role.OPERATOR, kind)
        assert rules.role_allows(Role.ADMIN, kind)
        assert rules.role_allows(Role.MANAGER, kind) is (
            kind in {CommandKind.LOCK, CommandKind.UNLOCK, CommandKind.LOCATE}
        )
    assert set(rules.WIRE_TYPE) == set(CommandKind)


async def test_duplicate_stays_frozen_when_the_alert_cannot_be_stored(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = FakeSender(online={IMEI})
    service = world.service(sender)
    alerts = world.store.alerts
    raise_alert = alerts.raise_alert
    failures = [StorageUnavailable("down")]

    async def flaky(alert: Alert) -> Alert:
        if failures:
            raise failures.pop()
        return await raise_alert(alert)

    monkeypatch.setattr(alerts, "raise_alert", flaky)
    with pytest.raises(StorageUnavailable):
        await service.on_duplicate_login(IMEI, old_remote="a:1", new_remote="b:2", idle_s=0.1)
    with pytest.raises(VehicleFrozen) as refused:
        await service.create(world.admin, lock(world))
    # The freeze check stored the alert on its way: from now on storage holds the freeze.
    (alert,) = await world.store.alerts.open_alerts(vehicle_id=world.vehicle_id)
    assert refused.value.alert_ids == [alert.id] and "b:2" in alert.detail
    assert sender.sent == []
    await service.clear_alert(world.admin, alert.id)
    command, _ = await service.create(world.admin, lock(world))
    assert command.status is CommandState.SENT
