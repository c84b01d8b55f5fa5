"""CommandService behind a fake transport: scale-out, resends, late answers, refits, NACKs.

The transport is the one Protocol the service sends through (`Sender`); storage is each real
engine (SQLite, and MongoDB's in-memory fake); time is the test's clock (tests/commands/world.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands import CommandRequest, InvalidCommand, VehicleFrozen, rules
from commands.alerts import REBOOT_GRACE_S
from commands.audit import AuditLines
from commands.kill_switch import KILL_SWITCH_CACHE_S
from protocol.gp8 import (
    Ack,
    Command,
    CommandType,
    Nack,
    NackReason,
    RecordFlags,
)
from storage.errors import StorageUnavailable
from storage.models import Alert, CommandKind, CommandState, Role
from tests.commands.world import IMEI, T0, Clock, FakeSender, World, done, lock


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
    await service.settle()  # a receipt is stored in the background (nothing answers an ACK)
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


async def test_the_reboot_grace_runs_on_the_injected_clock(world: World) -> None:
    service = world.service(FakeSender(online={IMEI}))
    reboot, _ = await service.create(
        world.admin, CommandRequest(world.vehicle_id, CommandKind.REBOOT)
    )
    await service.on_box_reply(IMEI, done(reboot.seq, 0))
    world.clock.advance(REBOOT_GRACE_S + 1)  # long after the reboot: a second login is a clone
    await service.on_duplicate_login(IMEI, old_remote="a:1", new_remote="b:2", idle_s=1.0)
    (alert,) = await world.store.alerts.open_alerts(vehicle_id=world.vehicle_id)
    assert alert.freezes_commands


async def test_a_kill_switch_set_elsewhere_is_seen_once_the_cache_expires(world: World) -> None:
    here, elsewhere = world.service(), world.service()
    assert not (await here.kill_switch()).engaged
    await elsewhere.set_kill_switch("key_op", engaged=True, reason="bug 42")
    assert not (await here.kill_switch()).engaged  # read less than a second ago
    world.clock.advance(KILL_SWITCH_CACHE_S)
    assert (await here.kill_switch()).engaged


def test_audit_lines_of_one_millisecond_list_in_the_order_written() -> None:
    lines = AuditLines(Clock(), "gw-t")  # the clock stands still: every line in one ms
    written = [lines.plain("flt_1", f"step.{i}", "key_1").id for i in range(200)]
    assert sorted(written) == written
    assert len(set(written)) == len(written)
