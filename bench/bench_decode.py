"""Decode throughput of the GP8 codec on one core, beside a floor measured in the same run.

Run: ``.venv/bin/python bench/bench_decode.py [--frames 4000] [--small-frames 100000]``

Two streams of POSITION frames, each fed to a FrameDecoder in 4 KiB chunks the way a socket
read loop would, draining complete frames after every chunk:

* 50-record frames, in records/s (goal: 2,000,000). Floor: ``RECORD.iter_unpack`` over the
  same records' bytes laid end to end — the struct unpacking alone, with no framing, no CRC, no
  checks and no record objects.
* 1-record frames, in frames/s (goal: 500,000). Floor: the same stream walked frame by frame
  by its length field with one header and one record unpack per frame — the least a Python
  loop over frames does, with no CRC, no checks and no objects.

Encoding happens before the clock starts. Each figure and its floor are timed alternately and
the best of several runs of each is kept, which is the least disturbed by whatever else the
machine is doing; the ratio is what to compare between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runnable as a plain script from a checkout, without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.summary import report
from protocol.gp8 import FrameDecoder, Position, PositionRecord, RecordFlags, encode
from protocol.gp8.codec import HEADER_SIZE, RECORD

BENCH = "decode"
GOAL_RECORDS_PER_S = 2_000_000  # 50-record frames, one core
GOAL_FRAMES_PER_S = 500_000  # 1-record frames, one core
CHUNK = 4096  # a typical socket read size
_HEADER_LENGTH = struct.Struct(">H")  # the length field, after the 2-byte marker


def make_stream(frames: int, per_frame: int) -> bytes:
    base = PositionRecord(
        time_ms=1_736_929_800_000,
        lat_e7=488_583_701,
        lon_e7=22_944_813,
        altitude_m=35,
        speed_dkmh=523,
        heading_ddeg=2715,
        satellites=9,
        hdop_d=11,
        flags=RecordFlags.FIX_VALID | RecordFlags.IGNITION | RecordFlags.EXTERNAL_POWER,
        odometer_m=123_456_789,
        ext_power_mv=12_600,
        battery_mv=4_100,
        gsm_signal=21,
        warnings=0,
        badge=0,
    )
    out = bytearray()
    for f in range(frames):
        records = tuple(
            base._replace(time_ms=base.time_ms + (f * per_frame + i) * 1000, odometer_m=f + i)
            for i in range(per_frame)
        )
        out += encode(Position(f, records))
    return bytes(out)


def decode_all(stream: bytes, chunk: int) -> tuple[int, int]:
    """(frames, records) decoded from ``stream`` fed ``chunk`` bytes at a time.

    Every record is looked at (its time read), so a decoder that deferred the work would pay
    it here.
    """
    decoder = FrameDecoder()
    view = memoryview(stream)
    frames = records = 0
    for offset in range(0, len(stream), chunk):
        decoder.feed(view[offset : offset + chunk])
        while (message := decoder.next_frame()) is not None:
            if isinstance(message, Position):
                frames += 1
                for record in message.records:
                    records += record.time_ms > 0
    if decoder.buffered:
        raise RuntimeError(f"{decoder.buffered} bytes left undecoded")
    return frames, records


def _records_area(stream: bytes) -> bytes:
    """The records of every frame of ``stream``, end to end (header, count and CRC cut)."""
    out = bytearray()
    pos = 0
    while pos < len(stream):
        total = 4 + int.from_bytes(stream[pos + 2 : pos + 4], "big")
        out += stream[pos + HEADER_SIZE + 1 : pos + total - 2]
        pos += total
    return bytes(out)


def unpack_floor(records_area: bytes) -> int:
    """Records unpacked from the bare record bytes: struct alone."""
    records = 0
    for fields in RECORD.iter_unpack(records_area):
        records += fields[0] > 0
    return records


def walk_floor(stream: bytes) -> int:
    """Frames walked by their length field, one header and one record unpack each."""
    header, record = _HEADER_LENGTH, RECORD
    pos = frames = 0
    end = len(stream)
    while pos < end:
        (length,) = header.unpack_from(stream, pos + 2)
        frames += record.unpack_from(stream, pos + HEADER_SIZE + 1)[0] > 0
        pos += 4 + length
    return frames


def best_of(repeat: int, *runs: Callable[[], int]) -> list[float]:
    """The best time of each run, timed in turn ``repeat`` times."""
    best = [float("inf")] * len(runs)
    for _ in range(repeat):
        for i, run in enumerate(runs):
            began = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - began)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000, help="50-record frames")
    parser.add_argument("--small-frames", type=int, default=100_000, help="1-record frames")
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    big = make_stream(args.frames, 50)
    area = _records_area(big)
    small = make_stream(args.small_frames, 1)
    expected_big, expected_small = (args.frames, args.frames * 50), (args.small_frames,) * 2
    if decode_all(big, args.chunk) != expected_big or unpack_floor(area) != expected_big[1]:
        raise RuntimeError("the 50-record stream did not decode whole")
    if decode_all(small, args.chunk) != expected_small or walk_floor(small) != expected_small[0]:
        raise RuntimeError("the 1-record stream did not decode whole")

    big_s, area_s = best_of(
        args.repeat, lambda: decode_all(big, args.chunk)[1], lambda: unpack_floor(area)
    )
    small_s, walk_s = best_of(
        args.repeat, lambda: decode_all(small, args.chunk)[0], lambda: walk_floor(small)
    )
    records_per_s, floor_records = expected_big[1] / big_s, expected_big[1] / area_s
    frames_per_s, floor_frames = args.small_frames / small_s, args.small_frames / walk_s
    print(
        f"fed in {args.chunk:,}-byte chunks, best of {args.repeat}:\n"
        f"  {args.frames:,} frames x 50 records ({len(big):,} bytes): "
        f"{records_per_s:,.0f} records/s, {len(big) / big_s / 1e6:,.1f} MB/s; "
        f"floor (iter_unpack of the bare records) {floor_records:,.0f} records/s, "
        f"ratio {records_per_s / floor_records:.2f}; goal {GOAL_RECORDS_PER_S:,}\n"
        f"  {args.small_frames:,} frames x 1 record ({len(small):,} bytes): "
        f"{frames_per_s:,.0f} frames/s; floor (frames walked by length, one unpack each) "
        f"{floor_frames:,.0f} frames/s, ratio {frames_per_s / floor_frames:.2f}; "
        f"goal {GOAL_FRAMES_PER_S:,}"
    )
    report(
        BENCH,
        "records/s, 50-record frames, one core",
        records_per_s,
        "records/s",
        op=">=",
        goal=GOAL_RECORDS_PER_S,
        floor=floor_records,
        floor_name="struct.iter_unpack of the bare record bytes",
    )
    report(
        BENCH,
        "frames/s, 1-record frames, one core",
        frames_per_s,
        "frames/s",
        op=">=",
        goal=GOAL_FRAMES_PER_S,
        floor=floor_frames,
        floor_name="frames walked by length, one unpack each",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
