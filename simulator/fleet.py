"""N simulated boxes at once, in one process: 1 to 10,000 drivers on one event loop.

Connections ramp up through a semaphore (``connect_concurrency`` logins in progress at most),
so starting 10,000 boxes is a steady climb instead of 10,000 SYNs in one millisecond; storms
deliberately skip it. ``rate`` caps the fleet's positions per second. The run ends when every
box has sent its ``count`` positions (or the scenario's end), when ``duration_s`` of wall time
has passed, or when ``stop()`` is called (Ctrl-C); every box then delivers what it still holds,
within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.driver import (
    FRAMES_PER_PUMP,
    RECONNECT_DELAY_S,
    RECONNECT_MAX_S,
    BoxDriver,
    DriveContext,
)
from simulator.outbox import ACK_TIMEOUT_S
from simulator.pacing import RateLimiter, SimClock, StormBarrier, plan_start, wall_ms
from simulator.provision import ProvisionedBox
from simulator.report import Report
from simulator.scenario import Scenario
from simulator.trajectory import RoadNetwork
from simulator.transport import TransportConfig, box_factory

log = logging.getLogger(__name__)

# Logins in progress at once while the fleet connects: the gateway checks an HMAC and reads
# storage per login; 200 keeps a 10,000-box ramp to a few seconds without a SYN flood.
CONNECT_CONCURRENCY = 200
# How often the number of connected boxes is sampled for the report's peak.
CONNECTED_SAMPLE_S = 0.5
# The default report interval when neither the command line nor the scenario gives one.
DEFAULT_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class FleetOptions:
    transport: TransportConfig
    interval_s: float
    count: int | None = None
    duration_s: float | None = None  # wall seconds
    rate: float | None = None  # positions per second, fleet-wide
    seed: str = "0"
    connect_concurrency: int = CONNECT_CONCURRENCY
    reconnect_delay_s: float = RECONNECT_DELAY_S
    reconnect_max_s: float = RECONNECT_MAX_S
    flush_timeout_s: float = ACK_TIMEOUT_S
    final_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    # Between the records of the past the run starts in (before now), when coarser than
    # interval_s: see DriveContext.history_interval_s.
    history_interval_s: float | None = None


def span_s(scenario: Scenario, interval_s: float, count: int | None) -> float:
    """Simulated time the run covers: what has to fit between the start and now."""
    if count is not None:
        # Count intervals, not count - 1: each box's first fix is somewhere in the first one.
        return count * interval_s
    duration = scenario.duration_s
    return duration if duration is not None else 0.0


def make_clock(
    scenario: Scenario,
    options: FleetOptions,
    *,
    lon: float,
    floor_ms: int | None = None,
    now_ms: int | None = None,
) -> SimClock:
    """The simulated clock of a run: ending about now, starting no earlier than ``floor_ms``."""
    now = wall_ms() if now_ms is None else now_ms
    start = plan_start(
        now,
        span_s(scenario, options.interval_s, options.count),
        start_local_min=scenario.start_local_min,
        lon=lon,
        floor_ms=floor_ms,
    )
    return SimClock(start)


class Fleet:
    def __init__(
        self,
        boxes: Sequence[ProvisionedBox],
        *,
        scenario: Scenario,
        network: RoadNetwork,
        clock: SimClock,
        options: FleetOptions,
        report: Report | None = None,
    ) -> None:
        if not boxes:
            raise ValueError("a fleet needs at least one box")
        self.options = options
        self.report = report or Report()
        self.report.devices = len(boxes)
        self.report.scenario = scenario.name
        self.report.transport = options.transport.kind
        self.report.rate_target = options.rate
        self.clock = clock
        self._stop = asyncio.Event()
        transport = options.transport
        self.context = DriveContext(
            scenario=scenario,
            network=network,
            clock=clock,
            report=self.report,
            storms=StormBarrier(len(boxes)),
            connect_gate=asyncio.Semaphore(options.connect_concurrency),
            stop=self._stop,
            interval_s=options.interval_s,
            count=options.count,
            limiter=RateLimiter(options.rate) if options.rate else None,
            seed=options.seed,
            max_unsent=transport.batch_size * FRAMES_PER_PUMP,
            reconnect_delay_s=options.reconnect_delay_s,
            reconnect_max_s=options.reconnect_max_s,
            flush_timeout_s=options.flush_timeout_s,
            final_timeout_s=options.final_timeout_s,
            stop_timeout_s=options.stop_timeout_s,
            history_interval_s=options.history_interval_s,
            live_from_ms=clock.now_ms(),
        )
        make_box = box_factory(transport)
        self.drivers = [
            BoxDriver(index, box, make_box, self.context) for index, box in enumerate(boxes)
        ]
        self.report.boxes = [driver.box for driver in self.drivers]
        floor = max((b.fitted_ms for b in boxes if b.fitted_ms is not None), default=None)
        if floor is not None and clock.start_ms < floor:
            self.report.note("some records predate their box's fitting: they belong to no vehicle")

    @property
    def boxes(self) -> list[BoxDriver]:
        return self.drivers

    def stop(self) -> None:
        """End the run: boxes stop producing and deliver what they hold."""
        if not self._stop.is_set():
            self._stop.set()
            for driver in self.drivers:
                driver.abort_wait()

    async def run(self, stop: asyncio.Event | None = None) -> Report:
        """Run every box to its end; ``stop`` (set by a signal handler, say) ends it early."""
        loop = asyncio.get_running_loop()
        timer = (
            loop.call_later(self.options.duration_s, self.stop)
            if self.options.duration_s is not None
            else None
        )
        watcher = asyncio.create_task(self._watch(stop)) if stop is not None else None
        sampler = asyncio.create_task(self._sample_connections())
        self.report.started = time.monotonic()
        tasks = [
            asyncio.create_task(driver.run(), name=f"driver-{driver.provisioned.imei}")
            for driver in self.drivers
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sampler.cancel()
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            self.report.finished = time.monotonic()
            self.report.connected()  # last max_connected reading
        return self.report

    async def _sample_connections(self) -> None:
        """Peak connections, for the report (counting 10,000 boxes takes about a millisecond)."""
        while True:
            self.report.connected()
            await asyncio.sleep(CONNECTED_SAMPLE_S)

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stop()

    def failures(self) -> list[str]:
        return [d.failed for d in self.drivers if d.failed]


def estimated_records(scenario: Scenario, options: FleetOptions, devices: int) -> int | None:
    """Positions the run will send, when it is known in advance."""
    if options.count is not None:
        return options.count * devices
    duration = scenario.duration_s
    if duration is None or options.interval_s <= 0:
        return None
    return math.ceil(duration / options.interval_s) * devices
