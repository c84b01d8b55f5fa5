"""The small parts: tracks, the clock, the rate limiter, the storm barrier, the latency
histogram and the corrupted frames."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.gp8 import (
    BadCrc,
    FrameDecoder,
    FrameError,
    Garbage,
    Heartbeat,
    MalformedPayload,
    Position,
    UnknownMessageType,
    encode,
)
from simulator.box import make_record
from simulator.garbage import (
    GARBAGE_SEQ_BASE,
    GarbageMaker,
    bad_crc,
    malformed,
    noise,
    unknown_type,
)
from simulator.pacing import (
    EARLIEST_START_MS,
    RateLimiter,
    StormBarrier,
    local_minutes,
    plan_start,
)
from simulator.report import LatencyHistogram, Report
from simulator.tracks import TrackError, load_track

NOW_MS = 1_795_000_000_000
RECORD = make_record(NOW_MS, 48.85, 2.35, speed_kmh=50)

# --- tracks -----------------------------------------------------------------------------------

GPX = """<?xml version="1.0"?>
<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><trkseg>
    <trkpt lat="48.85" lon="2.35"><ele>35</ele><time>2024-05-01T12:00:00Z</time></trkpt>
    <trkpt lat="48.851" lon="2.351"><time>2024-05-01T12:00:10Z</time></trkpt>
  </trkseg><trkseg>
    <trkpt lat="48.852" lon="2.352"/>
  </trkseg></trk>
</gpx>"""


def test_gpx_tracks(tmp_path: Path) -> None:
    path = tmp_path / "ride.gpx"
    path.write_text(GPX)
    points = load_track(path)
    assert [(p.lat, p.lon) for p in points] == [(48.85, 2.35), (48.851, 2.351), (48.852, 2.352)]
    assert points[1].time_ms is not None and points[0].time_ms is not None
    assert points[1].time_ms - points[0].time_ms == 10_000
    assert points[2].time_ms is None


def test_geojson_tracks(tmp_path: Path) -> None:
    line = {"type": "LineString", "coordinates": [[2.35, 48.85], [2.351, 48.851, 30]]}
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [2.35, 48.85]},
                "properties": {"time": "2024-05-01T12:00:00Z"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [2.36, 48.86]},
                "properties": {"time": 1714564810000},
            },
        ],
    }
    for name, doc in (("line.geojson", line), ("points.json", collection)):
        (tmp_path / name).write_text(json.dumps(doc))
    assert [(p.lat, p.lon) for p in load_track(tmp_path / "line.geojson")] == [
        (48.85, 2.35),
        (48.851, 2.351),
    ]
    points = load_track(tmp_path / "points.json")
    assert [p.time_ms for p in points] == [1714564800000, 1714564810000]


@pytest.mark.parametrize(
    "content",
    [
        "<gpx><trk><trkseg><trkpt lat='1' lon='1'/></trkseg></trk></gpx>",
        "<gpx><broken",
        '{"type": "LineString", "coordinates": [[200, 1], [1, 1]]}',
        '{"type": "LineString", "coordinates": "nope"}',
        "[1, 2, 3]",
        "{",
    ],
)
def test_bad_tracks(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(TrackError):
        load_track(path)


# --- the clock --------------------------------------------------------------------------------


@given(
    span=st.floats(min_value=0, max_value=7 * 86400),
    local=st.integers(0, 1439),
    lon=st.floats(min_value=-180, max_value=180),
)
def test_the_run_ends_by_now_and_starts_at_the_local_time_asked(
    span: float, local: int, lon: float
) -> None:
    start = plan_start(NOW_MS, span, start_local_min=local, lon=lon)
    assert start + span * 1000 <= NOW_MS + 1
    # The latest such start: a day earlier would also fit, but is not the latest.
    assert NOW_MS - (start + span * 1000) < 86_400_000 + 1
    minutes = local_minutes(start, lon)
    assert min(abs(minutes - local), 1440 - abs(minutes - local)) < 0.01


def test_the_clock_never_starts_before_the_fittings_or_2015() -> None:
    assert plan_start(NOW_MS, 3600) == NOW_MS - 3_600_000
    assert plan_start(NOW_MS, 3600, floor_ms=NOW_MS - 60_000) == NOW_MS - 60_000
    assert plan_start(NOW_MS, 100 * 365 * 86400) == EARLIEST_START_MS


def test_the_rate_limiter_spaces_slots_evenly() -> None:
    now = [100.0]
    limiter = RateLimiter(50, burst_s=0.0, clock=lambda: now[0])
    delays = [limiter.reserve() for _ in range(100)]
    assert delays[0] == 0
    assert delays[-1] == pytest.approx(99 / 50)
    now[0] += 10.0  # idle for long: no credit beyond the burst
    assert limiter.reserve() == 0
    assert limiter.reserve() == pytest.approx(1 / 50)


async def test_a_storm_waits_for_every_box_then_releases_them_together() -> None:
    barrier = StormBarrier(3)
    released: list[int] = []

    async def box(n: int, delay: float) -> bool:
        await asyncio.sleep(delay)
        first = await barrier.arrive("storm-1")
        released.append(n)
        return first

    tasks = [asyncio.create_task(box(n, n * 0.02)) for n in range(3)]
    await asyncio.sleep(0.03)
    assert released == []  # two of three arrived: nobody goes yet
    firsts = await asyncio.gather(*tasks)
    assert sorted(released) == [0, 1, 2] and firsts == [True, False, False]


async def test_a_box_that_ends_does_not_hold_a_storm() -> None:
    barrier = StormBarrier(2)
    waiting = asyncio.create_task(barrier.arrive("k"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    barrier.leave()
    assert await asyncio.wait_for(waiting, 1) is True


async def test_a_stuck_box_only_delays_a_storm() -> None:
    barrier = StormBarrier(2, wait_s=0.05)
    assert await asyncio.wait_for(barrier.arrive("k"), 1) is True


# --- latency ----------------------------------------------------------------------------------


@given(st.lists(st.floats(min_value=1e-4, max_value=30), min_size=1, max_size=500))
def test_latency_percentiles_are_within_two_percent(values: list[float]) -> None:
    histogram = LatencyHistogram()
    for v in values:
        histogram.record(v)
    ordered = sorted(values)
    for q in (50, 95, 99, 100):
        exact = ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
        estimate = histogram.percentile(q)
        assert estimate is not None
        assert exact * 0.999 <= estimate <= exact * 1.021


def test_an_empty_report_has_no_latency() -> None:
    snap = Report(devices=0).snapshot()
    assert snap["ack_latency_ms"]["p50"] is None and snap["positions_per_s"] == 0


# --- corrupted frames -------------------------------------------------------------------------


def _decode(data: bytes) -> list[object]:
    decoder = FrameDecoder()
    decoder.feed(data)
    return list(decoder)


def test_each_kind_of_garbage_is_rejected_as_intended() -> None:
    rng = random.Random(1)
    assert all(isinstance(e, Garbage) for e in _decode(noise(rng)))
    seq = GARBAGE_SEQ_BASE + 1
    out = _decode(bad_crc(rng, seq, RECORD))
    assert out and all(isinstance(e, FrameError) for e in out)
    assert any(isinstance(e, BadCrc) and e.seq == seq for e in out)
    (unknown,) = _decode(unknown_type(seq))
    assert isinstance(unknown, UnknownMessageType) and unknown.seq == seq
    (bad,) = _decode(malformed(seq, RECORD))
    assert isinstance(bad, MalformedPayload) and bad.seq == seq


@given(st.integers(0, 2**32), st.lists(st.booleans(), min_size=1, max_size=40))
def test_valid_frames_survive_any_garbage_between_them(seed: int, layout: list[bool]) -> None:
    maker = GarbageMaker(random.Random(seed))
    stream = b""
    expected = []
    for i, valid in enumerate(layout):
        if valid:
            message = Position(i + 1, (RECORD._replace(time_ms=NOW_MS + i),))
            expected.append(message)
            stream += encode(message)
        else:
            stream += maker.make(RECORD)
    stream += encode(Heartbeat(999))
    decoded = [m for m in _decode(stream) if not isinstance(m, FrameError)]
    assert decoded == [*expected, Heartbeat(999)]


async def test_live_progress_renders_the_figures() -> None:
    import io

    from simulator.report import live_progress

    report = Report(devices=3, scenario="normal")
    report.on_sent(10)
    report.on_ack(10, False, 0.02)
    stream = io.StringIO()
    with live_progress(report, stream, enabled=True, force_terminal=True):
        await asyncio.sleep(0.6)
    assert "sent 10" in stream.getvalue() and "acked 10" in stream.getvalue()
