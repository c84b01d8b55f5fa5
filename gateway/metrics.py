"""Gateway counters: plain objects the hot path bumps, exposed through prometheus-client.

The counters are ints, `collections.Counter`s (one key per label value) and `Histogram`s, bumped
on the event loop thread (no locks; a dict increment per frame). They are read two ways: as JSON
by GET /health (`snapshot`) and in the Prometheus text format by GET /metrics, through a
`prometheus_client` custom collector (`MetricsCollector`) that turns each object into metric
families at scrape time, following one table per class (`FIELDS`). prometheus-client does the
exposition (names, label escaping, histogram buckets); we do not use its own Counter objects
because every gateway instance (tests run dozens in one process) has counters of its own and
/health needs the same values as JSON.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

# Upper bounds, in seconds, of the ACK latency histogram: from a frame's bytes read to its ACK
# written. Dominated by the pipeline's max_delay_ms plus one storage commit.
ACK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds one storage flush takes (one commit: an fsync on SQLite, a majority write on Mongo).
STORE_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)
# Records per flush: 1 when idle, batch_size under load, up to max_batch_size when catching up.
FLUSH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 4000, 8000)


class Histogram:
    """Counts per bucket and a sum, like a Prometheus histogram (buckets are upper bounds)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs ending with +Inf, as prometheus-client wants them."""
        out: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            out.append((str(bound), cumulative))
        out.append(("+Inf", cumulative + self.counts[-1]))
        return out

    def snapshot(self) -> dict[str, float]:
        return {"count": self.count, "sum": round(self.sum, 6)}


Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Field:
    """One exposed value: attribute ``attr`` of a metrics object, as metric ``name``."""

    attr: str
    name: str
    kind: Kind
    help: str
    label: str | None = None  # for Counter attributes: the label their keys are values of


class SessionMetrics:
    """What the device-session core counts (gateway/core.py), one object per transport."""

    FIELDS: tuple[Field, ...] = (
        Field("frames", "frames", "counter", "Well-formed frames by type.", "type"),
        Field("frame_errors", "frame_errors", "counter", "Rejected frames by reason.", "reason"),
        Field(
            "records_rejected",
            "records_rejected",
            "counter",
            "Impossible records dropped.",
            "reason",
        ),
        Field("nacks", "nacks", "counter", "Refusals (NACKs) sent by reason.", "reason"),
        Field("logins", "logins", "counter", "Login attempts by result.", "status"),
        Field("hook_failures", "hook_failures", "counter", "Failed command/login hooks.", "hook"),
        Field(
            "ack_latency",
            "ack_latency_seconds",
            "histogram",
            "Time from a data frame received to its answer ready.",
        ),
    )

    def __init__(self) -> None:
        self.frames: Counter[str] = Counter()  # good frames by rule name
        self.frame_errors: Counter[str] = Counter()  # by FrameError.reason and session errors
        self.records_rejected: Counter[str] = Counter()  # by RecordRejection value
        self.nacks: Counter[str] = Counter()  # by refusal (gateway.core.Refusal value)
        self.logins: Counter[str] = Counter()  # by LoginStatus name, lower case
        self.hook_failures: Counter[str] = Counter()  # "command_reply", "login"
        self.ack_latency = Histogram(ACK_LATENCY_BUCKETS)

    def observe_ack_latency(self, seconds: float) -> None:
        self.ack_latency.observe(seconds)

    def snapshot(self) -> dict[str, object]:
        """Plain JSON-ready values, for GET /health."""
        return snapshot_of(self)


class GatewayMetrics(SessionMetrics):
    """The TCP gateway's counters, with the ingest pipeline's (shared by every transport of
    the process: records stored are counted here for TCP and MQTT together)."""

    FIELDS = (
        Field("connections_current", "connections_open", "gauge", "Open box connections."),
        Field("connections_total", "connections_total", "counter", "Accepted connections."),
        Field(
            "connections_refused",
            "connections_refused_total",
            "counter",
            "Connections refused at max_connections.",
        ),
        Field(
            "source_refusals",
            "source_network_refusals",
            "counter",
            "Connections closed at once: their source is outside the listener's allowed networks.",
            "listener",
        ),
        Field(
            "superseded",
            "superseded_total",
            "counter",
            "Sessions closed because the box logged in again.",
        ),
        Field("closes", "closes", "counter", "Closed connections by reason.", "reason"),
        Field(
            "login_lockouts",
            "login_lockouts",
            "counter",
            "Lock-outs after failed logins, by what was locked (source or source+IMEI).",
            "scope",
        ),
        *SessionMetrics.FIELDS,
        Field(
            "records",
            "records",
            "counter",
            "Records stored or found duplicate (every transport).",
            "result",
        ),
        Field("flushes", "flushes_total", "counter", "Storage flushes."),
        Field("storage_errors", "storage_errors_total", "counter", "Failed storage writes."),
        Field(
            "state_writes",
            "connection_states",
            "counter",
            "Connection states (online/offline): written, coalesced into a newer one, in a"
            " failed write (retried), or waited for longer than the login or close may wait.",
            "result",
        ),
        Field(
            "shed",
            "shed_records_total",
            "counter",
            "Records answered SERVER_BUSY at once because the ingest queue was above its"
            " high-water mark (the box resends them later).",
        ),
        Field("store_seconds", "store_seconds_total", "counter", "Time spent storing flushes."),
        Field("flush_size", "flush_records", "histogram", "Records per storage flush."),
        Field("store_latency", "store_latency_seconds", "histogram", "Seconds per flush."),
        Field(
            "processing",
            "processing",
            "counter",
            "Processing stage: batches handled, failed, timed out, dropped.",
            "result",
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self.connections_current = 0
        self.connections_total = 0
        self.connections_refused = 0  # beyond max_connections
        self.source_refusals: Counter[str] = Counter()  # by listener (gateway/networks.py)
        self.superseded = 0  # sessions closed because the same box logged in again
        self.storage_errors = 0  # failed flushes and failed connection-state writes
        # "written", "coalesced", "failed", "wait_timed_out" (gateway/states.py, registry.py)
        self.state_writes: Counter[str] = Counter()
        self.shed = 0  # records refused at once above the ingest high-water mark
        self.flushes = 0
        self.store_seconds = 0.0  # time spent in telemetry.store (busy fraction of the writer)
        self.records: Counter[str] = Counter()  # "stored", "duplicate" (positions and events)
        self.closes: Counter[str] = Counter()  # why connections ended
        self.login_lockouts: Counter[str] = Counter()  # "source", "identity" (gateway/auth.py)
        self.flush_size = Histogram(FLUSH_SIZE_BUCKETS)
        self.store_latency = Histogram(STORE_LATENCY_BUCKETS)
        self.processing: Counter[str] = Counter()  # see processing/stage.py

    def snapshot(self) -> dict[str, object]:
        # GET /health has always nested the connection counters.
        values = snapshot_of(self)
        values["connections"] = {
            "current": values.pop("connections_current"),
            "total": values.pop("connections_total"),
            "refused": values.pop("connections_refused"),
        }
        return values


def snapshot_of(metrics: Any) -> dict[str, object]:
    out: dict[str, object] = {}
    for field in metrics.FIELDS:
        value = getattr(metrics, field.attr)
        if isinstance(value, Histogram):
            out[field.attr] = value.snapshot()
        elif isinstance(value, Counter):
            out[field.attr] = dict(value)
        elif isinstance(value, float):
            out[field.attr] = round(value, 3)
        else:
            out[field.attr] = value
    return out


def families(metrics: Any, prefix: str, labels: dict[str, str] | None = None) -> Iterator[Metric]:
    """The metric families of ``metrics`` (an object with a ``FIELDS`` table)."""
    const = labels or {}
    names, values = list(const), list(const.values())
    for field in metrics.FIELDS:
        name = f"{prefix}{field.name}"
        value = getattr(metrics, field.attr)
        if field.kind == "histogram":
            histogram = HistogramMetricFamily(name, field.help, labels=names)
            histogram.add_metric(values, value.buckets(), value.sum)
            yield histogram
        elif field.label is not None:
            family = CounterMetricFamily(name, field.help, labels=[*names, field.label])
            for key, count in sorted(value.items()):
                family.add_metric([*values, str(key)], count)
            yield family
        elif field.kind == "gauge":
            gauge = GaugeMetricFamily(name, field.help, labels=names)
            gauge.add_metric(values, float(value))
            yield gauge
        else:
            counter = CounterMetricFamily(name, field.help, labels=names)
            counter.add_metric(values, float(value))
            yield counter


class MetricsCollector:
    """A prometheus-client collector over one metrics object (register it in a
    ``CollectorRegistry``; the API's GET /metrics renders that registry)."""

    def __init__(self, metrics: Any, prefix: str, labels: dict[str, str] | None = None) -> None:
        self._metrics = metrics
        self._prefix = prefix
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        return families(self._metrics, self._prefix, self._labels)

    def describe(self) -> list[Metric]:
        # Empty: the registry then does not call collect() at registration to learn names.
        return []
