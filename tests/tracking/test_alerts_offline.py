"""The box_offline sweep: its pure decision, and a sweep over a real store."""

from __future__ import annotations

import dataclasses

from storage.models import (
    AlertKind,
    AlertRule,
    AlertRuleType,
    AlertState,
    Device,
    DeviceConnection,
    DeviceModel,
    Severity,
    Transport,
    alert_state,
)
from tests.tracking.alerts_world import T0, World, store, world  # noqa: F401
from tracking.offline import OfflineSweep, decide
from tracking.rules import RuleBook

HOUR = 3_600_000
DAY = 24 * HOUR

RULE = AlertRule("arl_1", "flt", AlertRuleType.BOX_OFFLINE, "offline", 0, 0)
DEVICE = Device("dev_1", "flt", "490154203237518", DeviceModel.GP8000, "s", 0, vehicle_id="veh")


def connection(online: bool, since_ms: int) -> DeviceConnection:
    return DeviceConnection("dev_1", online, Transport.TCP, "gw", since_ms)


def test_decide_offline_beyond_the_rule() -> None:
    now = T0
    assert decide([RULE], DEVICE, None, is_open=False, now=now).raise_rule is None
    assert decide([RULE], DEVICE, connection(True, 0), is_open=False, now=now).raise_rule is None
    short = connection(False, now - 23 * HOUR)
    assert decide([RULE], DEVICE, short, is_open=False, now=now).raise_rule is None
    long = connection(False, now - 25 * HOUR)
    raised = decide([RULE], DEVICE, long, is_open=False, now=now).raise_rule
    assert raised is not None and raised.id == RULE.id
    assert decide([RULE], DEVICE, long, is_open=True, now=now).raise_rule is None  # open already
    hourly = dataclasses.replace(RULE, id="arl_2", offline_minutes=60, severity=Severity.CRITICAL)
    raised = decide([RULE, hourly], DEVICE, short, is_open=False, now=now).raise_rule
    assert raised == hourly
    muted = dataclasses.replace(RULE, muted_vehicle_ids=("veh",))
    assert decide([muted], DEVICE, long, is_open=False, now=now).raise_rule is None


def test_decide_close_when_back() -> None:
    assert decide([RULE], DEVICE, connection(True, T0), is_open=True, now=T0).close
    assert not decide([RULE], DEVICE, connection(True, T0), is_open=False, now=T0).close


async def test_sweep_raises_once_and_closes_when_back(world: World) -> None:  # noqa: F811
    now = [T0]
    sweep = OfflineSweep(
        world.store, RuleBook(world.store.alert_rules, ttl_s=0.0), wall_ms=lambda: now[0]
    )
    await world.store.devices.set_connection(
        DeviceConnection(world.device_id, False, Transport.TCP, "gw", T0 - 2 * HOUR)
    )
    await sweep.sweep()
    assert await world.alerts(AlertKind.BOX_OFFLINE) == []  # the default rule: a day
    now[0] = T0 + DAY
    await sweep.sweep()
    await sweep.sweep()
    (alert,) = await world.alerts(AlertKind.BOX_OFFLINE)
    assert (alert.count, alert.first_ms, alert.vehicle_id) == (1, T0 - 2 * HOUR, world.vehicle_id)
    assert alert_state(alert) is AlertState.OPEN and "offline for 26.0 h" in alert.detail
    await world.store.devices.set_connection(
        DeviceConnection(world.device_id, True, Transport.TCP, "gw", T0 + DAY + 1)
    )
    await sweep.sweep()
    (alert,) = await world.alerts(AlertKind.BOX_OFFLINE)
    assert alert_state(alert) is AlertState.CLOSED and alert.close_reason == "box back online"
    assert sweep.counters["raised"] == 1 and sweep.counters["closed"] == 1
