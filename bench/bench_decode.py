"""Decode throughput of the GP8 codec, in position records per second on one core.

Run: ``.venv/bin/python bench/bench_decode.py [--records-per-frame 50] [--frames 4000]``

It builds a stream of POSITION frames, then feeds it to a FrameDecoder in 4 KiB chunks, the way
a socket read loop would, draining complete frames after every chunk. Encoding happens before
the clock starts; the best of several runs is reported, which is the least disturbed by
whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Runnable as a plain script from a checkout, without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.gp8 import FrameDecoder, Position, PositionRecord, RecordFlags, encode

# The budget for the gateway's decode path on one core: decoding must stay a small share of the
# per-record cost, so that storage, not parsing, limits ingestion.
TARGET_RECORDS_PER_S = 300_000
CHUNK = 4096  # a typical socket read size


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


def decode_all(stream: bytes, chunk: int) -> int:
    """Records decoded from ``stream`` fed ``chunk`` bytes at a time."""
    decoder = FrameDecoder()
    view = memoryview(stream)
    records = 0
    for offset in range(0, len(stream), chunk):
        decoder.feed(view[offset : offset + chunk])
        while (message := decoder.next_frame()) is not None:
            if isinstance(message, Position):
                records += len(message.records)
    if decoder.buffered:
        raise RuntimeError(f"{decoder.buffered} bytes left undecoded")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records-per-frame", type=int, default=50)
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    stream = make_stream(args.frames, args.records_per_frame)
    expected = args.frames * args.records_per_frame
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        decoded = decode_all(stream, args.chunk)
        best = min(best, time.perf_counter() - start)
        if decoded != expected:
            raise RuntimeError(f"decoded {decoded} records, expected {expected}")
    rate = expected / best
    print(
        f"stream: {args.frames:,} POSITION frames x {args.records_per_frame} records, "
        f"{len(stream):,} bytes, fed in {args.chunk:,}-byte chunks; best of {args.repeat}"
    )
    print(f"decode: {rate:,.0f} records/s (target {TARGET_RECORDS_PER_S:,})")
    print(f"        {len(stream) / best / 1e6:,.1f} MB/s, {best * 1e3:,.1f} ms per run")
    return 0 if rate >= TARGET_RECORDS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
