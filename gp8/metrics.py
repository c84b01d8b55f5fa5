"""/metrics for the parts that keep their counters as plain numbers: the live stream's hub, the
webhook service, the tracking handlers. The entry point registers these beside the gateway's
and the command service's collectors (gateway/metrics.py explains why gp8 uses custom
prometheus-client collectors over plain counters rather than its Counter objects)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

Samples = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class FamilyCollector:
    """One metric family whose samples (label values, value) are read at scrape time."""

    def __init__(
        self, name: str, help_: str, labels: tuple[str, ...], read: Samples, *, gauge: bool = False
    ) -> None:
        self._name, self._help, self._labels = name, help_, list(labels)
        self._read, self._gauge = read, gauge

    def collect(self) -> Iterator[Metric]:
        kind = GaugeMetricFamily if self._gauge else CounterMetricFamily
        family = kind(self._name, self._help, labels=self._labels)
        for values, value in self._read():
            family.add_metric(list(values), float(value))
        yield family

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time
