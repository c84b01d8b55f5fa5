"""What a simulation run did: counters, ACK latency percentiles, live progress and the final
report (a rich table for people, one JSON line for machines).

The counters are plain ints bumped by the box drivers on the event loop thread (no locks):
records acknowledged and refused are counted from each frame's answer, by kind, as the box's
outbox settles them. The numbers that live in each box (NACKs, logins, resends, pending) are
summed over the boxes when a snapshot is taken.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from protocol.gp8 import LoginStatus
from simulator.box import Box

# Latency histogram: logarithmic buckets 2 % wide from 10 µs, so any percentile is within 2 %
# of the truth with a fixed few kilobytes, however many frames a 10,000-box run ACKs.
LATENCY_MIN_S = 1e-5
LATENCY_PRECISION = 0.02
_LOG_STEP = math.log1p(LATENCY_PRECISION)
# Live progress refreshes: often enough to feel live, rarely enough to cost nothing.
PROGRESS_REFRESH_PER_S = 2.0


class LatencyHistogram:
    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.max_s = 0.0
        self.sum_s = 0.0

    def record(self, seconds: float) -> None:
        seconds = max(seconds, LATENCY_MIN_S)
        self._buckets[int(math.log(seconds / LATENCY_MIN_S) / _LOG_STEP)] += 1
        self.count += 1
        self.sum_s += seconds
        self.max_s = max(self.max_s, seconds)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100) in seconds: the upper bound of its bucket."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(self.max_s, LATENCY_MIN_S * math.exp((index + 1) * _LOG_STEP))
        return self.max_s  # pragma: no cover - rank <= count


@dataclass
class Report:
    devices: int = 0
    scenario: str = ""
    transport: str = "tcp"
    rate_target: float | None = None
    sent: int = 0  # position records handed to the boxes
    events_sent: int = 0
    acked: int = 0  # position records ACKed
    events_acked: int = 0
    rejected: int = 0  # position records refused for good (a final NACK)
    events_rejected: int = 0
    garbage: int = 0  # corrupted frames injected
    drops: int = 0  # links the simulator cut mid-frame
    storms: int = 0
    connect_errors: int = 0
    login_refused: Counter[str] = field(default_factory=Counter)
    commands: int = 0
    locates: int = 0
    max_connected: int = 0
    _links: int = 0  # boxes logged in now, as the drivers count them (link_up/link_down)
    sim_start_ms: int | None = None
    sim_end_ms: int | None = None
    notes: list[str] = field(default_factory=list)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    started: float = field(default_factory=time.monotonic)
    first_send: float | None = None
    last_ack: float | None = None
    finished: float | None = None
    boxes: list[Box] = field(default_factory=list)

    # --- hooks for the drivers ---------------------------------------------------------------

    def on_sent(self, positions: int, events: int = 0) -> None:
        if self.first_send is None:
            self.first_send = time.monotonic()
        self.sent += positions
        self.events_sent += events

    def on_ack(self, records: int, is_event: bool, latency_s: float) -> None:
        if is_event:
            self.events_acked += records
        else:
            self.acked += records
        self.latency.record(latency_s)
        self.last_ack = time.monotonic()

    def on_refused(self, records: int, is_event: bool) -> None:
        if is_event:
            self.events_rejected += records
        else:
            self.rejected += records

    def on_sim_time(self, time_ms: int) -> None:
        if self.sim_start_ms is None or time_ms < self.sim_start_ms:
            self.sim_start_ms = time_ms
        if self.sim_end_ms is None or time_ms > self.sim_end_ms:
            self.sim_end_ms = time_ms

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # --- reading -----------------------------------------------------------------------------

    def connected(self) -> int:
        count = sum(1 for box in self.boxes if box.connected)
        self.max_connected = max(self.max_connected, count)
        return count

    def link_up(self) -> None:
        """A box logged in. Counted as it happens, so a run shorter than the sampling period
        still reports its peak (a 0.3 s run of 100 boxes was ``max_connected: 0``)."""
        self._links += 1
        self.max_connected = max(self.max_connected, self._links)

    def link_down(self) -> None:
        """A box's link is gone (cut, lost, closed, or being replaced by a new login)."""
        self._links = max(0, self._links - 1)

    def positions_per_s(self) -> float:
        if self.first_send is None or self.last_ack is None or self.last_ack <= self.first_send:
            return 0.0
        return self.acked / (self.last_ack - self.first_send)

    def snapshot(self) -> dict[str, Any]:
        """Every figure, JSON-ready; the final line of `gp8 sim` is this."""
        boxes = self.boxes
        nacks: Counter[str] = Counter()
        for box in boxes:
            for reason, n in box.nacks.items():
                nacks[reason.name.lower()] += n
        logins = sum(box.logins for box in boxes)
        end = self.finished if self.finished is not None else time.monotonic()

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "devices": self.devices,
            "connected": self.connected(),
            "max_connected": self.max_connected,
            "sent": self.sent,
            "acked": self.acked,
            "rejected": self.rejected + self.events_rejected,
            "resent": sum(box.resent for box in boxes),
            "pending": sum(box.pending for box in boxes),
            "events_sent": self.events_sent,
            "events_acked": self.events_acked,
            "garbage": self.garbage,
            "drops": self.drops,
            "storms": self.storms,
            "logins": logins,
            "reconnects": max(0, logins - sum(1 for box in boxes if box.logins)),
            "connect_errors": self.connect_errors,
            "login_refused": dict(self.login_refused),
            "nacks": dict(nacks),
            "commands": self.commands,
            "locates": self.locates,
            "ack_latency_ms": {
                "p50": ms(self.latency.percentile(50)),
                "p95": ms(self.latency.percentile(95)),
                "p99": ms(self.latency.percentile(99)),
                "max": ms(self.latency.max_s) if self.latency.count else None,
                "frames": self.latency.count,
            },
            "positions_per_s": round(self.positions_per_s(), 1),
            "rate_target": self.rate_target,
            "elapsed_s": round(end - self.started, 3),
            "scenario": self.scenario,
            "transport": self.transport,
            "sim_start": _iso(self.sim_start_ms),
            "sim_end": _iso(self.sim_end_ms),
            "notes": list(self.notes),
        }

    def login_refusal(self, status: LoginStatus) -> None:
        self.login_refused[status.name.lower()] += 1


def _iso(time_ms: int | None) -> str | None:
    if time_ms is None:
        return None
    seconds, millis = divmod(time_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


# --- rendering --------------------------------------------------------------------------------


def _rows(snap: dict[str, Any]) -> Iterable[tuple[str, str]]:
    lat = snap["ack_latency_ms"]

    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    yield "devices (max connected)", f"{snap['devices']:,} ({snap['max_connected']:,})"
    yield "positions sent", f"{snap['sent']:,}"
    yield "positions acknowledged", f"{snap['acked']:,}"
    yield "events sent / acknowledged", f"{snap['events_sent']:,} / {snap['events_acked']:,}"
    yield "rejected (refused for good)", f"{snap['rejected']:,}"
    yield "resent", f"{snap['resent']:,}"
    yield "still pending", f"{snap['pending']:,}"
    yield "positions/s achieved", f"{snap['positions_per_s']:,.1f}"
    yield "ack latency p50 / p95 / p99 (ms)", f"{f(lat['p50'])} / {f(lat['p95'])} / {f(lat['p99'])}"
    yield "logins (reconnects)", f"{snap['logins']:,} ({snap['reconnects']:,})"
    if snap["connect_errors"] or snap["login_refused"]:
        refused = ", ".join(f"{k} {v}" for k, v in snap["login_refused"].items()) or "0"
        yield "connect errors / refused logins", f"{snap['connect_errors']:,} / {refused}"
    if snap["garbage"] or snap["nacks"]:
        nacks = ", ".join(f"{k} {v}" for k, v in sorted(snap["nacks"].items())) or "0"
        yield "corrupted frames sent / NACKs", f"{snap['garbage']:,} / {nacks}"
    if snap["drops"] or snap["storms"]:
        yield "links cut / storms", f"{snap['drops']:,} / {snap['storms']:,}"
    if snap["commands"]:
        yield "commands executed (locates)", f"{snap['commands']:,} ({snap['locates']:,})"
    yield "simulated time", f"{snap['sim_start'] or '-'} → {snap['sim_end'] or '-'}"
    yield "wall time (s)", f"{snap['elapsed_s']:,.1f}"


def render_table(snap: dict[str, Any], title: str = "gp8 sim") -> Any:
    """The final report as a rich Table."""
    from rich.table import Table

    table = Table(title=f"{title}: {snap['scenario']} over {snap['transport']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in _rows(snap):
        table.add_row(name, value)
    return table


def progress_line(snap: dict[str, Any], rate: float) -> str:
    p95 = snap["ack_latency_ms"]["p95"]
    return (
        f"{snap['elapsed_s']:7.1f}s  connected {snap['connected']:,}/{snap['devices']:,}  "
        f"sent {snap['sent']:,}  acked {snap['acked']:,}  {rate:,.0f} pos/s  "
        f"p95 {'-' if p95 is None else f'{p95:,.1f}'} ms  resent {snap['resent']:,}  "
        f"rejected {snap['rejected']:,}"
    )


@contextmanager
def live_progress(
    report: Report, stream: TextIO, *, enabled: bool, force_terminal: bool | None = None
) -> Iterator[None]:
    """A rich Live line on ``stream`` while the block runs (when ``enabled``)."""
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(file=stream, force_terminal=force_terminal)
    last = [time.monotonic(), report.acked]

    def render() -> Text:
        now = time.monotonic()
        elapsed = max(now - last[0], 1e-6)
        rate = (report.acked - last[1]) / elapsed
        if elapsed >= 1.0:
            last[0], last[1] = now, report.acked
        return Text(progress_line(report.snapshot(), rate))

    class _Renderable:
        def __rich__(self) -> Text:
            return render()

    with Live(
        _Renderable(), console=console, refresh_per_second=PROGRESS_REFRESH_PER_S, transient=True
    ):
        yield
