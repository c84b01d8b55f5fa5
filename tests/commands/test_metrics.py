"""The service's counters as a prometheus-client collector: statuses entered, frames written,
other events; exposed in the Prometheus text format by whoever registers it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from storage.models import CommandState
from tests.commands.world import IMEI, FakeSender, World, done, lock


async def test_metrics_count_each_status_entered_and_each_write(world: World) -> None:
    sender = FakeSender(online={IMEI})
    service = world.service(sender)
    registry = CollectorRegistry()
    registry.register(service.metrics)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("gp8_commands_total", status="queued") == 0  # every status from the start
    first, _ = await service.create(world.admin, lock(world))  # queued, then sent
    await service.on_box_reply(IMEI, done(first.seq))
    await service.on_box_reply(IMEI, done(first.seq))  # a repeat changes nothing
    sender.fail = True
    await service.create(world.admin, lock(world))  # queued, sent, the write fails

    expected = {CommandState.QUEUED: 2, CommandState.SENT: 2, CommandState.ACKNOWLEDGED: 1}
    for status in CommandState:
        assert sample("gp8_commands_total", status=status.value) == expected.get(status, 0)
    assert sample("gp8_command_writes_total", result="written") == 1
    assert sample("gp8_command_writes_total", result="failed") == 1
    assert sample("gp8_command_events_total", event="duplicate_results") == 1
    assert service.stats["send_failed"] == 1 == service.health()["send_failed"]
    text = generate_latest(registry).decode()
    assert 'gp8_commands_total{status="acknowledged"} 1.0' in text
    assert "# TYPE gp8_command_writes_total counter" in text
