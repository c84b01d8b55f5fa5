"""Teltonika decoding: gp8's codec against the PyPI decoder ``codecs-protocol``, same packets.

Run: ``.venv/bin/python bench/bench_teltonika.py [--packets 2000] [--records 10]``
(`make bench` installs ``codecs-protocol``, the `bench` extra: a benchmark-only dependency, never a
runtime one; without it only gp8's figure is printed.)

Both decode the same Codec 8 and Codec 8 Extended packets: Teltonika's published examples and
packets made by gp8's encoder with realistic records (a fix anywhere on Earth, south and west
included, 10 to 12 IO elements, 8-byte values), all alike in half of the packets and varying in
the other half (an event's element, an iButton or not). Each side starts from what a socket
gives, bytes: codecs-protocol's API takes hex text, so its ``bytes.hex()`` is part of its time; it
is async, so its packets are awaited one after the other in one event loop. gp8 checks the CRC of
every packet; codecs-protocol checks none. Best of several runs, in CPU time (see `best_of`);
records/s for each and the ratio (goal: gp8 at least 5 times the fastest other decoder).

The timed runs consume each packet as it is decoded and drop it, as the gateway does once a
packet's records are stored: what is measured is decoding. Keeping all 20,000 records of a run
alive instead adds, on both sides, the garbage collector walking the growing heap (a full
collection visits every live record) and fresh memory for it; that figure is printed too, for
reference. The collector is run before each timed run so that one side's garbage is not charged
to the other.

Then every decoded field is compared, record by record, and each disagreement is listed once per
kind with a packet showing it and the side Teltonika's specification supports.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.summary import report
from protocol.teltonika import AvlPacket, AvlRecord, Codec, FrameDecoder, encode
from protocol.teltonika.codec import _parse_avl
from protocol.teltonika.frames import IoPairs

GOAL_RATIO = 5.0
CHUNK = 4096

# Teltonika's published examples ("Teltonika Data Sending Protocols"): Codec 8 (3), 8 Extended.
PUBLISHED = [
    "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F"
    "01F10000601A014E0000000000000000010000C7CF",
    "000000000000002808010000016B40D9AD80010000000000000000000000000000000103021503010101425E10"
    "0000010000F22A",
    "000000000000004308020000016B40D57B480100000000000000000000000000000001010101000000000000016B"
    "40D5C198010000000000000000000000000000000101010101000000020000252C",
    "000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011"
    "001D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994",
]


def _record(rng: random.Random, t: int, wide: bool, varied: bool) -> AvlRecord:
    """A record as an FMB box sends one. ``varied``: its elements change from record to record, as
    a box's do when some are sent only on a change (a record of an event carries the event's
    element; no iButton, no element 78): its packets mix record shapes."""
    ids = 0xFFFF if wide else 0xFF
    event_id = rng.choice((0, 239, 240, 252))
    io1: IoPairs = ((239, 1), (240, rng.randint(0, 1)), (21, rng.randint(0, 5)), (69, 1))
    io8: IoPairs = ((78, rng.getrandbits(64)), (rng.randint(100, ids), rng.getrandbits(64)))
    if varied:
        io1 += ((252, 1),) if event_id == 252 else ()
        io8 = io8 if rng.random() < 0.5 else io8[1:]
    return AvlRecord(
        time_ms=t + rng.randrange(1000),  # milliseconds are part of the timestamp
        priority=rng.choice((0, 1, 2)),
        lon_e7=rng.randint(-1_800_000_000, 1_800_000_000),
        lat_e7=rng.randint(-900_000_000, 900_000_000),
        altitude_m=rng.randint(-400, 4_000),
        angle_deg=rng.randint(0, 359),
        satellites=rng.randint(0, 20),
        speed_kmh=rng.randint(0, 180),
        event_id=event_id,
        io1=io1,
        io2=((66, rng.randint(11_000, 14_500)), (67, 4_100), (182, rng.randint(5, 30))),
        io4=((16, rng.randint(0, 2**32 - 1)), (241, 24_602)),
        io8=io8,
    )


def make_packets(count: int, per_packet: int, seed: int = 8) -> list[bytes]:
    rng = random.Random(seed)
    packets = [bytes.fromhex(h) for h in PUBLISHED]
    t = 1_736_929_800_000
    for n in range(count):
        # Codec 8 and 8 Extended, each with records all alike and with records that vary.
        codec = Codec.CODEC_8E if n % 2 else Codec.CODEC_8
        wide, varied = codec is Codec.CODEC_8E, n % 4 >= 2
        records = tuple(_record(rng, t + i * 10_000, wide, varied) for i in range(per_packet))
        t += per_packet * 10_000
        packets.append(encode(AvlPacket(codec, records)))
    return packets


# --- gp8 -----------------------------------------------------------------------------------------


def gp8_decode(stream: bytes, keep: Callable[[AvlPacket], object]) -> None:
    """Decode ``stream`` as a socket gives it, CHUNK bytes a read, giving ``keep`` each packet."""
    decoder = FrameDecoder(expect_imei=False)
    view = memoryview(stream)
    for i in range(0, len(stream), CHUNK):
        decoder.feed(view[i : i + CHUNK])
        while (frame := decoder.next_frame()) is not None:
            assert isinstance(frame, AvlPacket)
            keep(frame)


# --- codecs-protocol -----------------------------------------------------------------------------


PeerDecode = Callable[[list[bytes], Callable[[dict[str, Any]], object]], None]


def peer_decoder() -> PeerDecode | None:
    """codecs-protocol's decoding of ``packets``, giving ``keep`` each decoded packet."""
    try:
        from codecs_protocol import Codec8, Codec8E  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None

    async def decode_all(packets: list[bytes], keep: Callable[[dict[str, Any]], object]) -> None:
        for data in packets:
            cls = Codec8E if data[8] == 0x8E else Codec8
            decoded, _ack = await cls(data.hex()).decode_data()
            keep(decoded)

    def run(packets: list[bytes], keep: Callable[[dict[str, Any]], object]) -> None:
        asyncio.run(decode_all(packets, keep))

    return run


# --- timing and comparison -----------------------------------------------------------------------


def best_of(runs: int, works: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Each work's best CPU time in seconds over ``runs`` rounds.

    CPU time (of this process: both decoders run in it, in one thread), because on a shared
    machine the wall clock also counts the time other processes had the core, which changes
    from run to run. The works take turns in each round, so what load remains (caches, memory
    bandwidth) weighs on all of them alike.
    """
    best = dict.fromkeys(works, float("inf"))
    for _ in range(runs):
        for name, work in works.items():
            gc.collect()  # the previous run's garbage is not this one's
            started = time.process_time()
            work()
            best[name] = min(best[name], time.process_time() - started)
    return best


def _peer_io(record: dict[str, Any]) -> dict[int, int]:
    io = record["io_data"]
    out: dict[int, int] = {}
    for group in ("one_byte_io", "two_byte_io", "four_byte_io", "eight_byte_io"):
        out.update((e["id"], e["value"]) for e in io[group])
    return out


# Which side Teltonika's specification supports, by field.
VERDICT = {
    "timestamp": "gp8: the timestamp is milliseconds since the epoch (8 bytes); codecs-protocol "
    "drops the milliseconds (a seconds string)",
    "longitude": 'gp8: coordinates are signed (two\'s complement, "check the very first bit"); '
    "codecs-protocol reads them unsigned, so west and south come out near +429.5 degrees",
    "latitude": "gp8: as longitude",
    "altitude": "gp8: gp8 reads it signed (below sea level happens); the specification gives no "
    "sign but 2 bytes, and 65,000 m is no altitude",
    "io": "see the ids: the specification sizes each value by its group (1, 2, 4, 8 bytes)",
}


def compare(ours: list[AvlPacket], theirs: list[dict[str, Any]], packets: list[bytes]) -> None:
    seen: dict[str, tuple[str, str]] = {}
    count = 0
    for packet, peer, raw in zip(ours, theirs, packets, strict=True):
        if len(peer["records"]) != len(packet.records):
            seen.setdefault("records", (raw.hex()[:80], "record count differs"))
            continue
        for r, p in zip(packet.records, peer["records"], strict=True):
            count += 1
            ts = time.strftime("%d.%m.%Y %H:%M:%S", time.gmtime(r.time_ms // 1000))
            mine: dict[str, Any] = {
                "timestamp": r.time_ms,
                "priority": r.priority,
                "longitude": r.lon_e7 / 1e7,
                "latitude": r.lat_e7 / 1e7,
                "altitude": r.altitude_m,
                "angle": r.angle_deg,
                "satellites": r.satellites,
                "speed": r.speed_kmh,
                "event_id": r.event_id,
                "io": {k: v for k, v in r.io.items() if isinstance(v, int)},
            }
            peers: dict[str, Any] = {**p, "event_id": p["io_data"]["event_id"], "io": _peer_io(p)}
            for name, value in mine.items():
                other = peers[name]
                same = (
                    (ts == other and r.time_ms % 1000 == 0)
                    if name == "timestamp"
                    else value == other
                )
                if not same and name not in seen:
                    seen[name] = (
                        raw.hex()[:80],
                        f"gp8 {value!r:.60} vs codecs-protocol {other!r:.60}",
                    )
    print(f"compared {count} records field by field")
    if not seen:
        print("no disagreement")
    for name, (frame, detail) in seen.items():
        print(f"- {name}: {detail}\n    packet {frame}...\n    {VERDICT.get(name, 'check')}")


def _drop(_packet: object) -> None:
    """What the gateway does with a decoded packet once its records are stored: let it go."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=2000)
    parser.add_argument("--records", type=int, default=10, help="records per packet")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    packets = make_packets(args.packets, args.records)
    stream = b"".join(packets)
    datas = [p[8:-4] for p in packets]
    total = sum(len(p.records) for p in map(_parse_avl, datas))
    print(f"packets: {len(packets)}, records: {total}, bytes: {len(stream):,}")
    works: dict[str, Callable[[], object]] = {
        "gp8": lambda: gp8_decode(stream, _drop),
        # Where gp8's time goes: the same packets parsed without the CRC check and the framing.
        "parse": lambda: deque(map(_parse_avl, datas), maxlen=0),
    }
    peer = peer_decoder()
    if peer is not None:
        works["peer"] = lambda: peer(packets, _drop)
    best = best_of(args.runs, works)
    gp8_rate = total / best["gp8"]
    print(f"gp8             {gp8_rate:>12,.0f} records/s")
    print(
        f"gp8, no CRC     {total / best['parse']:>12,.0f} records/s (parsing alone, for reference)"
    )
    if peer is None:
        print(
            "codecs-protocol not installed (.venv/bin/pip install codecs-protocol): no comparison"
        )
        return
    peer_rate = total / best["peer"]
    ratio = gp8_rate / peer_rate
    print(f"codecs-protocol {peer_rate:>12,.0f} records/s")
    verdict = "met" if ratio >= GOAL_RATIO else "MISSED"
    print(f"ratio           {ratio:>12.1f}x (goal >= {GOAL_RATIO:.0f}x: {verdict})")
    report(
        "teltonika", "Teltonika decode (gp8)", gp8_rate, "records/s", op=">=",
        goal=GOAL_RATIO * peer_rate, floor=peer_rate, floor_name="codecs-protocol",
    )  # fmt: skip

    # Every record of a run kept until its end, for reference (each run's list is dropped after
    # it, so neither side's records weigh on the other's run).
    kept = best_of(
        args.runs,
        {
            "gp8": lambda: gp8_decode(stream, list[AvlPacket]().append),
            "peer": lambda: peer(packets, list[dict[str, Any]]().append),
        },
    )
    print(
        f"all kept        gp8 {total / kept['gp8']:,.0f}, codecs-protocol"
        f" {total / kept['peer']:,.0f} records/s: {kept['peer'] / kept['gp8']:.1f}x (for"
        " reference: the collector's walks of the kept records weigh on both)"
    )

    ours: list[AvlPacket] = []
    theirs: list[dict[str, Any]] = []
    gp8_decode(stream, ours.append)
    peer(packets, theirs.append)
    compare(ours, theirs, packets)


if __name__ == "__main__":
    main()
