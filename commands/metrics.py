"""Counters of the command service, exposed through a prometheus-client custom collector.

The service bumps plain `Counter`s on the event loop (no locks, no prometheus objects on the hot
path: tests run several services in one process, each with counters of its own); `collect()`
turns them into metric families at scrape time. Register it with
``registry.register(service.metrics)``.

* ``gp8_commands_total{status}``: commands that entered each status in this process (a new
  command enters ``queued`` or ``pending_approval``); every status is exposed from the start.
* ``gp8_command_writes_total{result}``: COMMAND frames handed to a transport, ``written`` or
  ``failed`` (the box was gone); resends count as writes.
* ``gp8_command_events_total{event}``: everything else the service counts (late and duplicate
  answers, held deliveries, duplicate logins, errors; the ``stats`` of GET /health).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from storage.models import CommandState

WRITE_RESULTS = ("written", "failed")


class CommandMetrics:
    def __init__(self) -> None:
        self.statuses: Counter[CommandState] = Counter()
        self.writes: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def entered(self, status: CommandState) -> None:
        self.statuses[status] += 1

    def wrote(self, ok: bool) -> None:
        self.writes[WRITE_RESULTS[0] if ok else WRITE_RESULTS[1]] += 1

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so registering does not run a collection."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        # Copies first: a scrape served from another thread must not see a dict mid-update.
        statuses, writes, events = dict(self.statuses), dict(self.writes), dict(self.events)
        commands, frames, others = self._families()
        for status in CommandState:
            commands.add_metric([status.value], statuses.get(status, 0))
        for result in WRITE_RESULTS:
            frames.add_metric([result], writes.get(result, 0))
        for event, count in sorted(events.items()):
            others.add_metric([event], count)
        yield from (commands, frames, others)

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "gp8_commands", "Commands that entered each status.", labels=["status"]
            ),
            CounterMetricFamily(
                "gp8_command_writes",
                "COMMAND frames handed to a transport, by result.",
                labels=["result"],
            ),
            CounterMetricFamily(
                "gp8_command_events", "Other events of the command service.", labels=["event"]
            ),
        )
