"""One simulated box in a vehicle: turns the trajectory into records, lives through the
scenario's phases (tunnels, coverage holes, storms, noise) and reacts to commands.

The loop, per box: take the next record time; wait until it is due (simulated time never
ahead of the wall clock, see simulator.pacing) and, with ``--rate``, for a slot; cross the
scenario's phase boundaries up to it; report what happened on the way (ignition, badge,
towing, warning events) and the position; send when nothing more is due now or the outbox
holds a window's worth. Sending waits for the ACKs, reconnecting with back-off as often as it
takes, so every record is delivered or the run ends with it counted as pending.

Every record's fate is counted by the box's outbox (simulator.outbox) as it happens: the
driver forwards each settled frame (ACKED or REFUSED, with its positions and events) to the
report, so nothing is inferred afterwards.

Commands (executed by the box itself, simulator.outbox) reach the vehicle through its state:
an engaged engine-start inhibit makes the next start fail (the vehicle stays parked), doors
locked remotely stay locked until the driver comes back with the key. This module adds
``LOCATE`` (a position now), ``SET_REPORT_INTERVAL`` (the cadence, 5..3600 s) and ``REBOOT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.gp8 import (
    Command,
    CommandFailure,
    CommandStatus,
    CommandType,
    EventCode,
    LoginStatus,
    PositionRecord,
)
from simulator import geo
from simulator.box import BoxError, BoxState, LoginRefused
from simulator.garbage import GarbageMaker
from simulator.outbox import ACK_TIMEOUT_S, Answer, Fate
from simulator.pacing import RateLimiter, SimClock, StormBarrier
from simulator.provision import ProvisionedBox
from simulator.report import Report
from simulator.scenario import Phase, Replay, Scenario
from simulator.trajectory import (
    Action,
    DriveOptions,
    Happening,
    RoadNetwork,
    Sample,
    Vehicle,
)
from simulator.transport import BoxFactory

log = logging.getLogger(__name__)

# SET_REPORT_INTERVAL's accepted range (docs/protocol.md §5.5).
MIN_REPORT_INTERVAL_S = 5
MAX_REPORT_INTERVAL_S = 3600
# Reconnection back-off as the firmware does it (docs/protocol.md §5.1): about 5 s after a
# lost link or a refused login, doubling up to 5 minutes, each delay ±25 % so that a fleet
# does not come back in lockstep. Without it a gateway that is slow to answer gets every box
# back at once, with everything it holds, again and again.
RECONNECT_DELAY_S = 5.0
RECONNECT_MAX_S = 300.0
RECONNECT_JITTER = 0.25
# Logins refused for these reasons will not succeed by retrying: the box gives up.
FATAL_LOGINS = frozenset(
    {
        LoginStatus.UNKNOWN_DEVICE,
        LoginStatus.BAD_PROOF,
        LoginStatus.UNSUPPORTED_VERSION,
        LoginStatus.DEVICE_DISABLED,
    }
)
# A rebooting box is silent this long.
REBOOT_S = 1.0
# A `late` backlog is released at least this long after the link returns in wall time too (at
# most its replay_delay): otherwise a run that covers its simulated time at ACK speed sends
# the backlog milliseconds after the live records, and the two cannot be told apart by
# received_at. Long enough to see, short enough for tests.
LATE_REPLAY_WALL_S = 2.0
# No fix: the hdop a GPS receiver reports when it has nothing (255 in 0.1 units).
NO_FIX_HDOP = 25.5
# CSQ "not known or not detectable" (3GPP TS 27.007), what the modem says out of coverage.
CSQ_UNKNOWN = 99
# Frames a box sends before waiting for their ACKs when many records are due at once.
FRAMES_PER_PUMP = 4
# Corrupted frames in a row, at most: the gateway closes a link after 50 bad frames without a
# good one, and the garbage behaviour tests resynchronisation, not that close.
MAX_GARBAGE_RUN = 20


@dataclass(slots=True)
class DriveContext:
    """What every driver of a fleet shares."""

    scenario: Scenario
    network: RoadNetwork
    clock: SimClock
    report: Report
    storms: StormBarrier
    connect_gate: asyncio.Semaphore
    stop: asyncio.Event
    interval_s: float
    count: int | None = None
    limiter: RateLimiter | None = None
    seed: str = "0"
    max_unsent: int = 200
    reconnect_delay_s: float = RECONNECT_DELAY_S
    reconnect_max_s: float = RECONNECT_MAX_S
    flush_timeout_s: float = ACK_TIMEOUT_S
    final_timeout_s: float = 60.0  # delivering what is left at the end of a run
    stop_timeout_s: float = 10.0  # the same when the run was stopped (Ctrl-C, --duration)
    # Records older than ``live_from_ms`` (a past being caught up with, as fast as ACKs allow)
    # are this far apart at least: a day of history at 30 s is 2,880 records, not 17,280.
    history_interval_s: float | None = None
    live_from_ms: int = 0

    @property
    def end_ms(self) -> int | None:
        """Simulated time the scenario ends, None when open-ended."""
        duration = self.scenario.duration_s
        return None if duration is None else self.clock.start_ms + math.ceil(duration * 1000)


class _GiveUp(Exception):
    """The box cannot log in and never will (unknown, disabled, wrong secret)."""


@dataclass(slots=True)
class _Buffered:
    code: EventCode | None
    record: PositionRecord
    detail: int = 0


def _drive_options(phase: Phase) -> DriveOptions:
    base = DriveOptions()
    return DriveOptions(
        speed_factor=phase.speed_factor or base.speed_factor,
        badge_probability=base.badge_probability if phase.badge is None else float(phase.badge),
        lock_probability=base.lock_probability if phase.lock is None else float(phase.lock),
        night_parking=base.night_parking if phase.night_parking is None else phase.night_parking,
    )


class BoxDriver:
    def __init__(
        self, index: int, provisioned: ProvisionedBox, make_box: BoxFactory, ctx: DriveContext
    ) -> None:
        self.index = index
        self.provisioned = provisioned
        self.ctx = ctx
        seed = f"{ctx.seed}:{index}"
        self.rng = random.Random(f"link:{seed}")
        self.garbage = GarbageMaker(random.Random(f"garbage:{seed}"))
        self.gps_noise = random.Random(f"gps:{seed}")  # a phase's gps_jitter
        self.box = make_box(
            provisioned.imei,
            provisioned.secret,
            provisioned.model,
            self._on_command,
            self._on_answer,
        )
        scenario = ctx.scenario
        first = scenario.phases[0]
        self.vehicle = Vehicle(
            ctx.network,
            seed=seed,
            start_ms=ctx.clock.start_ms,
            motion=first.motion,
            options=_drive_options(first),
            can_start=self._can_start,
        )
        self.base_interval_ms = max(0, round(ctx.interval_s * 1000))
        self.phase_interval_ms: int | None = None
        self.command_interval_ms: int | None = None
        # Boxes do not all report on the same second: each starts at its own offset within
        # the first interval (a fleet reporting in lockstep would hit the gateway in bursts).
        offset = self.rng.randrange(self.base_interval_ms) if self.base_interval_ms else 0
        self.next_t = ctx.clock.start_ms + offset
        self.last_t: int | None = None  # the last position, LOCATE ones included
        self.last_regular_t: int | None = None  # the cadence runs from here
        self.positions = 0  # regular positions produced (locate ones not counted)
        self.phase_index = -1
        self.phase = first
        self.phase_end_ms: int | None = ctx.clock.start_ms
        self.lap = 0
        self.gps_ok = True
        self.online = True
        self.replay = Replay.IN_ORDER
        self.backlog: list[_Buffered] = []
        self.release_at: int | None = None
        # Wall clock (monotonic) before which a late backlog is not released, whatever the
        # simulated time: a run catching up with its past covers "3 min" in milliseconds.
        self.release_wall: float = 0.0
        self._replay_delay_ms = 0
        self.last_fix: tuple[float, float, int] | None = None
        self.last_record: PositionRecord | None = None
        self.gsm = self.rng.randint(12, 28)
        self.failed: str | None = None
        # Cellular trouble owed to records produced in noisy or lossy phases, carried out when
        # those records are sent (in catch-up mode they are produced well before).
        self._noisy_records = 0
        self._garbage_rate = 0.0
        self._drops_owed = 0
        self._wake = asyncio.Event()
        self._locate = 0
        self._reboot = False
        self._backoff_s = ctx.reconnect_delay_s
        self._lost = False  # the link was lost: back off before reconnecting
        self._linked = False  # counted in the report's connected boxes (link_up)
        self._deadline: asyncio.Timeout | None = None

    # --- hooks (called from the box's reader, synchronously) ----------------------------------

    def _can_start(self) -> bool:
        return not self.box.state.engine_start_inhibited

    def _on_answer(self, answer: Answer) -> None:
        """A frame's records reached their final fate: count them, by kind, as they are."""
        report = self.ctx.report
        records = len(answer.entries)
        if answer.fate is Fate.ACKED:
            report.on_ack(records, answer.is_event, answer.latency_s)
        elif answer.fate is Fate.REFUSED:
            report.on_refused(records, answer.is_event)

    def _on_command(
        self, command: Command, state: BoxState
    ) -> tuple[CommandStatus, CommandFailure] | None:
        self.ctx.report.commands += 1
        kind = command.command
        if kind is CommandType.SET_REPORT_INTERVAL:
            if not MIN_REPORT_INTERVAL_S <= command.param <= MAX_REPORT_INTERVAL_S:
                return CommandStatus.FAILED, CommandFailure.INVALID_PARAMETER
            self.command_interval_ms = command.param * 1000
            if self.last_regular_t is not None:
                self.next_t = self.last_regular_t + self.command_interval_ms
        elif kind is CommandType.LOCATE:
            self._locate += 1
        elif kind is CommandType.REBOOT:
            self._reboot = True
        self._wake.set()
        return None  # the box's own execution updates its state and answers DONE

    def wake(self) -> None:
        self._wake.set()

    def abort_wait(self) -> None:
        """The run stops: stop waiting for ACKs now (they are awaited again, briefly, at the
        end) instead of up to the ACK timeout."""
        self._wake.set()
        deadline = self._deadline
        if deadline is not None:
            deadline.reschedule(asyncio.get_running_loop().time())

    # --- the loop ----------------------------------------------------------------------------

    @property
    def interval_ms(self) -> int:
        for value in (self.command_interval_ms, self.phase_interval_ms):
            if value is not None:
                return value
        return self.base_interval_ms

    def _finished(self) -> bool:
        ctx = self.ctx
        if ctx.count is not None and self.positions >= ctx.count:
            return True
        end = ctx.end_ms
        return end is not None and self.next_t >= end

    async def run(self) -> None:
        ctx = self.ctx
        try:
            self._enter_phase(0, ctx.clock.start_ms)
            if self.online:
                await self._connect()
            while not ctx.stop.is_set() and not self._finished():
                if self._reboot:
                    await self._do_reboot()
                    continue
                if self._locate:
                    await self._do_locate()
                    continue
                t = self.next_t
                if not ctx.clock.due(t):
                    await self._idle(ctx.clock.wait_s(t))
                    continue
                if ctx.limiter is not None:
                    await self._wait_for_slot(ctx.limiter)
                    if ctx.stop.is_set():
                        break
                await self._produce(t)
                self.positions += 1
                self.last_regular_t = t
                step = self.interval_ms
                if ctx.history_interval_s is not None and t < ctx.live_from_ms:
                    step = max(step, round(ctx.history_interval_s * 1000))
                self.next_t = t + step if step else max(t + 1, ctx.clock.now_ms())
                if self.online and (
                    self.box.pending >= ctx.max_unsent
                    or not ctx.clock.due(self.next_t)
                    or self._finished()
                ):
                    await self._pump()
            await self._deliver_rest()
        except _GiveUp as exc:
            self.failed = str(exc)
            ctx.report.note(f"boxes gave up: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must cost one box, not the fleet
            log.exception("box %s failed", self.box.imei)
            self.failed = repr(exc)
            ctx.report.note(f"box failures: {exc!r}")
        finally:
            self._unlink()
            ctx.storms.leave()
            with contextlib.suppress(BoxError, OSError, TimeoutError):
                async with asyncio.timeout(5.0):
                    await self.box.close()

    async def _wait_for_slot(self, limiter: RateLimiter) -> None:
        """Wait for this record's slot of the fleet's rate, sending what waits meanwhile."""
        delay = limiter.reserve()
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        if self.online and self.box.pending:
            await self._pump()
        remaining = deadline - loop.time()
        if remaining > 0:
            await self._idle(remaining, pump=False)

    async def _idle(self, seconds: float, *, pump: bool = True) -> None:
        """Send what is waiting (then return, the caller re-checks), or sleep ``seconds``
        unless woken (a command, the end of the run)."""
        if pump and self.online and self.box.pending:
            await self._pump()
            return
        self._wake.clear()
        if self.ctx.stop.is_set() or self._locate or self._reboot:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    # --- producing ---------------------------------------------------------------------------

    async def _produce(self, t: int) -> None:
        await self._cross_phases(t)
        for happening in self.vehicle.advance(t):
            self._on_happening(happening)
        if (
            self.release_at is not None
            and t >= self.release_at
            and time.monotonic() >= self.release_wall
        ):
            self._release_backlog()
        record = self._record(self.vehicle.sample())
        self._emit(None, record)
        phase = self.phase
        if self.online and phase.garbage_rate:
            self._noisy_records += 1
            self._garbage_rate = phase.garbage_rate
        if self.online and phase.drop_rate and self.rng.random() < phase.drop_rate:
            self._drops_owed += 1
        self.last_t = t
        self.ctx.report.on_sim_time(t)

    async def _cross_phases(self, t: int) -> None:
        while self.phase_end_ms is not None and t >= self.phase_end_ms:
            boundary = self.phase_end_ms
            index = self.phase_index + 1
            if index >= len(self.ctx.scenario.phases):
                if not self.ctx.scenario.repeat:
                    self.phase_end_ms = None  # past the end: the last phase goes on
                    return
                index = 0
                self.lap += 1
            for happening in self.vehicle.advance(boundary):
                self._on_happening(happening)
            self._enter_phase(index, boundary)
            if self.phase.storm:
                await self._storm((self.lap, index))

    def _enter_phase(self, index: int, at_ms: int) -> None:
        phase = self.ctx.scenario.phases[index]
        was_online = self.online if self.phase_index >= 0 else True
        self.phase_index = index
        self.phase = phase
        self.phase_end_ms = (
            None if phase.duration_s is None else at_ms + math.ceil(phase.duration_s * 1000)
        )
        self.phase_interval_ms = (
            None if phase.interval_s is None else max(1, round(phase.interval_s * 1000))
        )
        self.vehicle.set_motion(phase.motion, at_ms, _drive_options(phase))
        for happening in self.vehicle.advance(at_ms):
            self._on_happening(happening)
        self.gps_ok = phase.gps
        if was_online and not phase.online:
            self.online = False
            self.replay = phase.replay
            if self.box.connected:
                self.box.cut()  # out of coverage: the link dies mid-whatever
            self._unlink()
            self._replay_delay_ms = math.ceil(phase.replay_delay_s * 1000)
        elif not was_online and phase.online:
            self.online = True
            if self.replay is Replay.LATE and self.backlog:
                self.release_at = at_ms + self._replay_delay_ms
                wall_delay = min(self._replay_delay_ms / 1000, LATE_REPLAY_WALL_S)
                self.release_wall = time.monotonic() + wall_delay
        if phase.warnings:
            self.vehicle.warnings |= phase.warnings
            sample = self.vehicle.sample()
            self._emit(EventCode.DASHBOARD_WARNING, self._record(sample), phase.warnings)
        for offset, code in enumerate(phase.events):
            # Distinct times: an event is identified by (box, time, code).
            sample = self.vehicle.sample()
            record = self._record(sample)._replace(time_ms=at_ms + offset)
            self._emit(code, record)

    def _on_happening(self, happening: Happening) -> None:
        kind = happening.kind
        if kind is Action.LOCK:
            self.box.state.doors_locked = True
        elif kind is Action.UNLOCK:
            self.box.state.doors_locked = False
        elif isinstance(kind, EventCode) and happening.sample is not None:
            self._emit(kind, self._record(happening.sample), happening.detail)

    def _record(self, sample: Sample) -> PositionRecord:
        rng = self.rng
        if self.online:
            self.gsm = min(31, max(5, self.gsm + rng.choice((-2, -1, 0, 0, 1, 2))))
        common: dict[str, Any] = {
            "ignition": sample.ignition,
            "odometer_m": sample.odometer_m,
            "ext_power_mv": sample.ext_power_mv,
            "battery_mv": sample.battery_mv,
            "gsm_signal": self.gsm if self.online else CSQ_UNKNOWN,
            "warnings": sample.warnings,
            "badge": sample.badge,
            "buffered": not self.online,
        }
        if self.gps_ok:
            self.last_fix = (sample.lat, sample.lon, sample.altitude_m)
            lat, lon = self._jittered(sample.lat, sample.lon)
            return self.box.record(
                sample.time_ms,
                lat,
                lon,
                speed_kmh=sample.speed_kmh,
                heading_deg=sample.heading_deg,
                altitude_m=sample.altitude_m,
                satellites=sample.satellites,
                hdop=sample.hdop,
                **common,
            )
        # No fix: repeat the last known position with FIX_VALID clear (docs/protocol.md §4.1).
        lat, lon, altitude = self.last_fix or (0.0, 0.0, 0)
        return self.box.record(
            sample.time_ms,
            lat,
            lon,
            altitude_m=altitude,
            satellites=0,
            hdop=NO_FIX_HDOP,
            fix_valid=False,
            **common,
        )

    def _jittered(self, lat: float, lon: float) -> tuple[float, float]:
        """The fix as the receiver reports it: off by up to the phase's gps_jitter, uniformly
        over the disc (so a vehicle parked on a fence's border is seen on both sides)."""
        amplitude = self.phase.gps_jitter_m
        if not amplitude:
            return lat, lon
        noise = self.gps_noise
        radius = amplitude * math.sqrt(noise.random())
        angle = noise.uniform(0.0, 2 * math.pi)
        east, north = radius * math.sin(angle), radius * math.cos(angle)
        point = geo.offset(geo.LatLon(lat, lon), east, north)
        return point.lat, point.lon

    def _emit(self, code: EventCode | None, record: PositionRecord, detail: int = 0) -> None:
        report = self.ctx.report
        if code is None:
            self.last_record = record
            report.on_sent(1)
        else:
            report.on_sent(0, 1)
        if not self.online and self.replay is Replay.LATE:
            self.backlog.append(_Buffered(code, record, detail))
        else:
            self._to_box(code, record, detail)

    def _to_box(self, code: EventCode | None, record: PositionRecord, detail: int = 0) -> None:
        if code is None:
            self.box.enqueue((record,))
        else:
            self.box.enqueue_event(code, record, detail)

    def _release_backlog(self) -> None:
        """The buffered records go out now, after the newer ones already sent: late."""
        for item in self.backlog:
            self._to_box(item.code, item.record, item.detail)
        self.backlog.clear()
        self.release_at = None

    # --- commands ----------------------------------------------------------------------------

    async def _do_locate(self) -> None:
        """A position now, between the regular ones."""
        self.ctx.report.locates += self._locate
        self._locate = 0
        last = self.last_t if self.last_t is not None else self.ctx.clock.start_ms - 1
        t = max(last + 1, min(self.ctx.clock.now_ms(), self.next_t - 1))
        if t >= self.next_t:
            self.next_t = t + 1
        await self._produce(t)
        if self.online:
            await self._pump()

    async def _do_reboot(self) -> None:
        self._reboot = False
        # Give the COMMAND_RESULT a moment to leave, as the firmware waits for its ACK.
        await asyncio.sleep(0.2)
        with contextlib.suppress(BoxError, OSError, TimeoutError):
            async with asyncio.timeout(5.0):
                await self.box.close()
        await asyncio.sleep(REBOOT_S)

    # --- the link ----------------------------------------------------------------------------

    async def _back_off(self) -> None:
        """Wait the current back-off (jittered; cut short when the run stops), then double it."""
        ctx = self.ctx
        jitter = 1 + self.rng.uniform(-RECONNECT_JITTER, RECONNECT_JITTER)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._backoff_s * jitter):
                await ctx.stop.wait()
        self._backoff_s = min(self._backoff_s * 2, ctx.reconnect_max_s)

    def _unlink(self) -> None:
        if self._linked:
            self._linked = False
            self.ctx.report.link_down()

    async def _connect(self, *, gated: bool = True) -> bool:
        """Log in, retrying with back-off; False when the run is stopping. After a lost link
        the first attempt waits too."""
        ctx = self.ctx
        self._unlink()  # whatever link there was is gone or about to be replaced
        if self._lost:
            self._lost = False
            await self._back_off()
        while not ctx.stop.is_set():
            try:
                if gated:
                    async with ctx.connect_gate:
                        await self.box.connect()
                else:
                    await self.box.connect()
                self._backoff_s = ctx.reconnect_delay_s  # a login resets the back-off
                self._linked = True
                ctx.report.link_up()
                return True
            except LoginRefused as exc:
                ctx.report.login_refusal(exc.status)
                if exc.status in FATAL_LOGINS:
                    raise _GiveUp(f"login refused: {exc.status.name.lower()}") from exc
            except (BoxError, OSError, TimeoutError) as exc:
                ctx.report.connect_errors += 1
                log.debug("box %s: connect failed: %r", self.box.imei, exc)
            await self._back_off()
        return False

    async def _storm(self, key: tuple[int, int]) -> None:
        """Every box drops its link at the same moment and reconnects at once. What a box
        holds goes out first, so the storm catches frames in flight: they are resent."""
        ctx = self.ctx
        if self.online and self.box.connected and self.box.pending:
            with contextlib.suppress(BoxError, OSError, TimeoutError):
                await self.box.send_frames(FRAMES_PER_PUMP)
        if await ctx.storms.arrive(key):
            ctx.report.storms += 1
        if self.box.connected:
            self.box.cut()
        spread = self.phase.storm_spread_s
        if spread > 0:
            await asyncio.sleep(self.rng.uniform(0, spread))
        if self.online:
            await self._connect(gated=False)

    async def _send_with_garbage(self) -> None:
        """Send the frames holding records produced in a noisy phase one by one, with the
        corrupted frames owed to those records (``garbage_rate`` per position) in between."""
        record = self.last_record
        rate = self._garbage_rate
        noisy, self._noisy_records = self._noisy_records, 0
        if record is None:
            return
        expected = rate * noisy
        owed = int(expected) + (1 if self.rng.random() < expected - int(expected) else 0)
        frames = max(1, math.ceil(noisy / max(1, self.ctx.max_unsent // FRAMES_PER_PUMP)))
        for i in range(frames):
            sent = await self.box.send_frames(1)
            share = owed // (frames - i) if sent else owed
            for _ in range(min(share, MAX_GARBAGE_RUN)):
                self.box.send_raw(self.garbage.make(record))
                self.ctx.report.garbage += 1
            owed -= share
            if not sent:
                break

    async def _pump(self) -> None:
        """Send the outbox and wait for its ACKs, through drops and reconnections."""
        ctx = self.ctx
        box = self.box
        while self.online and box.pending and not ctx.stop.is_set():
            if not box.connected and not await self._connect():
                return
            try:
                if self._drops_owed:
                    # Lose coverage with frames in flight: they are resent after the login.
                    self._drops_owed -= 1
                    await box.send_frames(self.rng.randint(1, FRAMES_PER_PUMP))
                    box.cut()
                    self._lost = True
                    ctx.report.drops += 1
                    continue
                if self._noisy_records:
                    await self._send_with_garbage()
                async with asyncio.timeout(ctx.flush_timeout_s) as deadline:
                    self._deadline = deadline  # `abort_wait` ends it when the run stops
                    await box.flush(timeout=ctx.flush_timeout_s)
                self._deadline = None
            except (BoxError, OSError, TimeoutError) as exc:
                self._deadline = None
                if ctx.stop.is_set():
                    return  # the run is over: what is left goes in `_deliver_rest`
                log.debug("box %s: %r; reconnecting", box.imei, exc)
                self._lost = True
                if box.connected:
                    box.cut()  # no ACK in time: assume the link is dead, resend after login

    async def _deliver_rest(self) -> None:
        """The run is over: deliver everything still buffered (the box comes back in coverage
        if the scenario ended without it), within ``final_timeout_s``."""
        ctx = self.ctx
        if self.backlog:
            # A late backlog stays late even when the run ends first (bounded: a stopped run
            # does not wait).
            wait_s = self.release_wall - time.monotonic()
            if self.release_at is not None and wait_s > 0 and not ctx.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.stop.wait(), wait_s)
            self._release_backlog()
        self.online = True
        timeout = ctx.stop_timeout_s if ctx.stop.is_set() else ctx.final_timeout_s
        try:
            async with asyncio.timeout(timeout):
                while self.box.pending:
                    if not self.box.connected:
                        # Past the stop: connect even if the run is stopping, briefly.
                        await self._connect_once()
                        continue
                    try:
                        await self.box.flush(timeout=ctx.flush_timeout_s)
                    except (BoxError, OSError, TimeoutError):
                        if self.box.connected:
                            self.box.cut()
        except TimeoutError:
            ctx.report.note("some records were still unacknowledged when the run ended")

    async def _connect_once(self) -> None:
        self._unlink()
        try:
            async with self.ctx.connect_gate:
                await self.box.connect()
            self._linked = True
            self.ctx.report.link_up()
        except LoginRefused as exc:
            self.ctx.report.login_refusal(exc.status)
            if exc.status in FATAL_LOGINS:
                raise _GiveUp(f"login refused: {exc.status.name.lower()}") from exc
            await asyncio.sleep(self._backoff_s)
        except (BoxError, OSError, TimeoutError):
            self.ctx.report.connect_errors += 1
            await asyncio.sleep(self._backoff_s)


DriverFactory = Callable[[int, ProvisionedBox], BoxDriver]
