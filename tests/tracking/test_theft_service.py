"""Theft cases' use cases (tracking/theft.py) on a real store with a command service that has
no transport: commands are stored and audited, the gateways would deliver them."""

from __future__ import annotations

import pytest

from commands import CommandService, NotAllowed, Requester, WrongState
from storage.errors import Conflict
from storage.models import (
    AlertKind,
    CommandKind,
    CommandState,
    LegalHold,
    Role,
    Severity,
    TheftCaseStatus,
    TheftOutcome,
)
from tests.tracking.alerts_world import HOME, T0, World, north_of, store, world  # noqa: F401
from tracking.alerts import incident
from tracking.theft import TheftService, interval_of

ADMIN = "key_admin"


def admin(w: World) -> Requester:
    return Requester(key_id=ADMIN, fleet_id=w.fleet_id, role=Role.ADMIN)


def service(w: World) -> TheftService:
    return TheftService(w.store, CommandService(w.store), hold_days=30)


def test_interval_of_positions(world: World) -> None:  # noqa: F811
    fixes = [world.fix(T0 + i * 20_000) for i in range(10)]
    assert interval_of(fixes) == 20
    assert interval_of(fixes[:3]) is None
    assert interval_of([world.fix(T0 + i * 1000) for i in range(10)]) == 5  # clamped to 5 s


async def test_open_follows_the_alert_and_close_restores(world: World) -> None:  # noqa: F811
    parked = [world.fix(T0 + i * 20_000) for i in range(10)]
    await world.store_records(parked)
    theft_start = T0 + 300_000
    alert, _ = await world.store.alerts.trigger(
        incident(
            world.fleet_id,
            world.vehicle_id,
            world.device_id,
            AlertKind.SUSPECTED_THEFT,
            at_ms=theft_start,
            time_ms=theft_start,
            detail="towing alarm while parked",
            severity=Severity.CRITICAL,
            position=world.fix(theft_start, north_of(*HOME, 300.0)),
        )
    )
    theft = service(world)
    case = await theft.open(admin(world), world.vehicle_id, reported_ms=T0 + 900_000, note="n")
    assert (case.alert_id, case.started_ms, case.previous_interval_s) == (
        alert.id,
        theft_start,
        20,
    )
    assert case.interval_command_id is not None
    command = await world.store.commands.get(world.fleet_id, case.interval_command_id)
    assert (command.kind, command.param, command.theft_case_id, command.status) == (
        CommandKind.SET_REPORT_INTERVAL,
        10,
        case.id,
        CommandState.QUEUED,
    )
    assert (await world.store.alerts.get(world.fleet_id, alert.id)).theft_case_id == case.id
    assert await world.store.theft_cases.holds(world.fleet_id, at_ms=T0) == [
        LegalHold(case.id, world.fleet_id, world.vehicle_id, theft_start)
    ]
    with pytest.raises(Conflict):
        await theft.open(admin(world), world.vehicle_id)

    timeline = await theft.timeline(world.fleet_id, case.id)
    assert timeline.positions == []  # nothing stored since the theft started
    assert [e.action for e in timeline.audit][:2] == ["theft_case.opened", "command.requested"]

    closed = await theft.close(admin(world), case.id, TheftOutcome.FALSE_ALARM, "the mechanic")
    assert (closed.status, closed.outcome, closed.closed_by) == (
        TheftCaseStatus.CLOSED,
        TheftOutcome.FALSE_ALARM,
        ADMIN,
    )
    assert closed.hold_until_ms is not None and closed.restore_command_id is not None
    restore = await world.store.commands.get(world.fleet_id, closed.restore_command_id)
    assert restore.param == 20
    with pytest.raises(WrongState):
        await theft.close(admin(world), case.id, TheftOutcome.RECOVERED)
    with pytest.raises(WrongState):
        await theft.immobilise(admin(world), case.id)


async def test_a_case_needs_an_admin(world: World) -> None:  # noqa: F811
    manager = Requester(key_id="key_m", fleet_id=world.fleet_id, role=Role.MANAGER)
    with pytest.raises(NotAllowed):
        await service(world).open(manager, world.vehicle_id)


async def test_immobilise_goes_through_the_command_rules(world: World) -> None:  # noqa: F811
    theft = service(world)
    case = await theft.open(admin(world), world.vehicle_id)
    case, command = await theft.immobilise(admin(world), case.id, "police agreed")
    assert (command.kind, command.theft_case_id, command.reason) == (
        CommandKind.DISABLE_ENGINE_START,
        case.id,
        "police agreed",
    )
    assert case.immobilise_command_id == command.id
