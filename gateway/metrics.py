"""Gateway counters: a plain object the handlers bump, read by /health and /metrics.

No dependency: the counters are ints and `collections.Counter`s (one key per label value), which
is all the Prometheus text format needs. Everything runs on the event loop thread, so no locks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable

# Upper bounds, in seconds, of the ACK latency histogram: from a frame's bytes read to its ACK
# written. Dominated by the pipeline's max_delay_ms plus one storage commit.
ACK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_PREFIX = "gp8_gateway_"


class GatewayMetrics:
    def __init__(self) -> None:
        self.connections_current = 0
        self.connections_total = 0
        self.connections_refused = 0  # beyond max_connections
        self.superseded = 0  # sessions closed because the same box logged in again
        self.storage_errors = 0  # failed flushes
        self.flushes = 0
        self.store_seconds = 0.0  # time spent in telemetry.store (busy fraction of the writer)
        self.logins: Counter[str] = Counter()  # by LoginStatus name, lower case
        self.frames: Counter[str] = Counter()  # good frames by message type
        self.frame_errors: Counter[str] = Counter()  # by FrameError.reason and session errors
        self.records: Counter[str] = Counter()  # "stored", "duplicate" (positions and events)
        self.records_rejected: Counter[str] = Counter()  # by RecordRejection value
        self.nacks: Counter[str] = Counter()  # by NackReason name, lower case
        self.closes: Counter[str] = Counter()  # why connections ended
        self._latency_counts = [0] * (len(ACK_LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

    def observe_ack_latency(self, seconds: float) -> None:
        self._latency_counts[bisect_left(ACK_LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds

    def snapshot(self) -> dict[str, object]:
        """Plain JSON-ready values, for GET /health."""
        return {
            "connections": {
                "current": self.connections_current,
                "total": self.connections_total,
                "refused": self.connections_refused,
            },
            "logins": dict(self.logins),
            "frames": dict(self.frames),
            "frame_errors": dict(self.frame_errors),
            "records": dict(self.records),
            "records_rejected": dict(self.records_rejected),
            "nacks": dict(self.nacks),
            "closes": dict(self.closes),
            "superseded": self.superseded,
            "storage_errors": self.storage_errors,
            "flushes": self.flushes,
            "store_seconds": round(self.store_seconds, 3),
            "ack_latency": {
                "count": sum(self._latency_counts),
                "sum_s": round(self._latency_sum, 6),
            },
        }

    def render_prometheus(self) -> str:
        """The counters in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def scalar(name: str, kind: str, help_: str, value: float) -> None:
            lines.extend((f"# HELP {_PREFIX}{name} {help_}", f"# TYPE {_PREFIX}{name} {kind}"))
            lines.append(f"{_PREFIX}{name} {value}")

        def labelled(name: str, label: str, help_: str, values: Counter[str]) -> None:
            lines.extend((f"# HELP {_PREFIX}{name} {help_}", f"# TYPE {_PREFIX}{name} counter"))
            for key, value in sorted(values.items()):
                lines.append(f'{_PREFIX}{name}{{{label}="{_escape(key)}"}} {value}')

        scalar("connections", "gauge", "Open box connections.", self.connections_current)
        scalar("connections_total", "counter", "Accepted connections.", self.connections_total)
        scalar(
            "connections_refused_total",
            "counter",
            "Connections refused at max_connections.",
            self.connections_refused,
        )
        scalar(
            "superseded_total",
            "counter",
            "Sessions closed because the box logged in again.",
            self.superseded,
        )
        scalar("storage_errors_total", "counter", "Failed storage flushes.", self.storage_errors)
        scalar("flushes_total", "counter", "Storage flushes.", self.flushes)
        scalar("store_seconds_total", "counter", "Time spent storing flushes.", self.store_seconds)
        labelled("logins_total", "status", "LOGIN attempts by result.", self.logins)
        labelled("frames_total", "type", "Well-formed frames by message type.", self.frames)
        labelled("frame_errors_total", "reason", "Rejected frames by reason.", self.frame_errors)
        labelled("records_total", "result", "Records stored or found duplicate.", self.records)
        labelled(
            "records_rejected_total",
            "reason",
            "Impossible records dropped.",
            self.records_rejected,
        )
        labelled("nacks_total", "reason", "NACKs sent by reason.", self.nacks)
        labelled("closes_total", "reason", "Closed connections by reason.", self.closes)
        lines.extend(self._histogram_lines())
        return "\n".join(lines) + "\n"

    def _histogram_lines(self) -> Iterable[str]:
        name = f"{_PREFIX}ack_latency_seconds"
        yield f"# HELP {name} Time from a frame read to its ACK written."
        yield f"# TYPE {name} histogram"
        cumulative = 0
        for bound, count in zip(ACK_LATENCY_BUCKETS, self._latency_counts, strict=False):
            cumulative += count
            yield f'{name}_bucket{{le="{bound}"}} {cumulative}'
        cumulative += self._latency_counts[-1]
        yield f'{name}_bucket{{le="+Inf"}} {cumulative}'
        yield f"{name}_sum {self._latency_sum}"
        yield f"{name}_count {cumulative}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
