"""Quadratic decoding on a trickle (issue 11): a frame header claiming 16,380 bytes, filled with
fake minimal headers, fed one byte at a time, made the GP8 decoder rescan its buffer on every
read (~9 s of CPU where fed at once it costs 1 ms). Decoding cost is now linear however the
bytes are cut, and a connection that never completes a frame is closed after a bounded time.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from protocol.gp8 import FrameDecoder
from protocol.teltonika import FrameDecoder as TeltonikaDecoder
from protocol.teltonika import Imei
from protocol.teltonika import encode as teltonika_encode
from tests.security.serve_process import IO_TIMEOUT_S, ServeProcess, start_serve

FRAME_TOTAL = 16_380  # the attack's outer frame, header and CRC included (MAX_FRAME_SIZE 16,384)
_GP8_HEADER = struct.Struct(">2sHBBI")  # magic, length, version, type, seq


def gp8_adversarial(total: int = FRAME_TOTAL) -> bytes:
    """A header announcing ``total`` bytes, then fake minimal headers (each a 12-byte frame
    with a wrong CRC): every one of them is a candidate a rescanning decoder checks again."""
    head = _GP8_HEADER.pack(b"G8", total - 4, 1, 2, 0)
    fake = _GP8_HEADER.pack(b"G8", 8, 1, 4, 0) + b"\0\0"
    return head + (fake * (total // len(fake) + 1))[: total - len(head)]


def gp8_plain(total: int = FRAME_TOTAL) -> bytes:
    """The same header and size with nothing inside that looks like a frame: the peer."""
    return _GP8_HEADER.pack(b"G8", total - 4, 1, 2, 0) + bytes(total - _GP8_HEADER.size)


def teltonika_adversarial(data_length: int = 16 * 1024 - 12) -> bytes:
    """An IMEI, then the largest packet (with a wrong CRC): what a trickle makes it hold."""
    imei = teltonika_encode(Imei("356307042441013"))
    data = bytes([8, 1]) * (data_length // 2)
    return imei + struct.pack(">II", 0, data_length) + data + b"\xff" * 4


def _cpu_per_feed(feed: Callable[[], None], repeats: int) -> float:
    started = time.process_time()
    for _ in range(repeats):
        feed()
    return (time.process_time() - started) / repeats


def _feed_gp8(data: bytes, chunk: int) -> Callable[[], None]:
    def run() -> None:
        decoder = FrameDecoder()
        for at in range(0, len(data), chunk):
            decoder.feed(data[at : at + chunk])
            for _ in decoder:
                pass

    return run


def _feed_teltonika(data: bytes, chunk: int) -> Callable[[], None]:
    def run() -> None:
        decoder = TeltonikaDecoder()
        for at in range(0, len(data), chunk):
            decoder.feed(data[at : at + chunk])
            for _ in decoder:
                pass

    return run


# Byte by byte pays a Python call per byte where the whole feed pays one: ~5x on this input
# after the fix, ~1,500x before it. The bound leaves room for a loaded machine.
MAX_TRICKLE_RATIO = 25


def test_decoding_a_gp8_trickle_costs_a_constant_times_the_whole_feed() -> None:
    data = gp8_adversarial()
    whole = _cpu_per_feed(_feed_gp8(data, len(data)), 30)
    trickle = _cpu_per_feed(_feed_gp8(data, 1), 2)
    assert trickle <= MAX_TRICKLE_RATIO * whole, (trickle, whole)


# Twice the bytes, trickled: twice the work when linear, four times when quadratic.
MAX_DOUBLING_RATIO = 3.0


@pytest.mark.parametrize(
    ("half", "full", "feeder"),
    [
        (gp8_adversarial(FRAME_TOTAL // 2), gp8_adversarial(), _feed_gp8),
        (teltonika_adversarial(8 * 1024 - 12), teltonika_adversarial(), _feed_teltonika),
    ],
    ids=["gp8", "teltonika"],
)
def test_trickled_decoding_work_grows_linearly_with_the_bytes(
    half: bytes, full: bytes, feeder: Callable[[bytes, int], Callable[[], None]]
) -> None:
    """The Teltonika decoder's whole feed of a bad packet costs next to nothing (one CRC in C),
    so its trickle is compared with a trickle of half the size instead."""
    small = _cpu_per_feed(feeder(half, 1), 3)
    large = _cpu_per_feed(feeder(full, 1), 3)
    assert large <= MAX_DOUBLING_RATIO * small, (large, small)


def test_the_adversarial_input_is_the_issues() -> None:
    """What the ratio test feeds: one frame of 16,380 bytes, full of CRC-checked candidates."""
    data = gp8_adversarial()
    assert len(data) == FRAME_TOTAL
    assert data.count(b"G8") > 1_300
    decoder = FrameDecoder()
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None and decoder.buffered == FRAME_TOTAL - 1


# --- against a real gp8 serve -------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _trickle(port: int, data: bytes, chunk: int, pause_s: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(reader.read(64), IO_TIMEOUT_S)  # the CHALLENGE
        for at in range(0, len(data), chunk):
            writer.write(data[at : at + chunk])
            await writer.drain()
            await asyncio.sleep(pause_s)
    finally:
        writer.close()


async def _server_cpu_of_trickles(serve: ServeProcess, data: bytes, connections: int) -> float:
    before = _cpu_seconds(serve.process.pid)
    # Stop short of the last bytes: the frame stays incomplete, as in the attack.
    cut = data[:-64]
    await asyncio.gather(*(_trickle(serve.tcp_port, cut, 16, 0.001) for _ in range(connections)))
    return _cpu_seconds(serve.process.pid) - before


# The two trickles differ only in the fake headers: same bytes, same reads, same frame held.
# Measured: before the fix the hostile one cost 3.5-4.7x the plain one, now 1.0-1.1x (the
# server's per-read work, the same for both, dominates once decoding is linear).
MAX_SERVE_RATIO = 2.0


async def test_serve_spends_no_more_on_a_hostile_trickle_than_on_a_plain_one(
    tmp_path: Path,
) -> None:
    serve = await start_serve(tmp_path)
    try:
        plain = await _server_cpu_of_trickles(serve, gp8_plain(), 4)
        hostile = await _server_cpu_of_trickles(serve, gp8_adversarial(), 4)
    finally:
        serve.stop()
    # A floor of a few clock ticks, so that two tiny numbers are not compared.
    assert hostile <= MAX_SERVE_RATIO * max(plain, 0.05), (hostile, plain)


async def _closed_within(
    port: int, first: bytes, trickle: bytes, timeout_s: float, pause_s: float = 0.05
) -> float:
    """Send ``first``, then one byte of ``trickle`` every ``pause_s``; seconds until the server
    closes the connection (TimeoutError if it does not within ``timeout_s``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(first)
            for byte in trickle:
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                except ConnectionError:
                    break
                if reader.at_eof():
                    break
                # Read whatever the server sent (CHALLENGE, IMEI reply): EOF means closed.
                try:
                    await asyncio.wait_for(reader.read(4096), pause_s)
                except TimeoutError:
                    continue
                if reader.at_eof():
                    break
            else:
                raise AssertionError("the whole trickle went through without a close")
    finally:
        writer.close()
    return time.monotonic() - started


async def _metric(api: str, name: str, reason: str) -> float:
    async with httpx.AsyncClient(base_url=api, timeout=IO_TIMEOUT_S) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_serve_closes_a_connection_that_never_completes_a_frame(tmp_path: Path) -> None:
    """Both box listeners (GP8 and Teltonika share the TCP link): with a 1 s frame deadline and
    a 30 s login timeout, a trickle is closed by the deadline, and counted."""
    serve = await start_serve(
        tmp_path,
        {"GP8_TCP__FRAME_TIMEOUT_S": "1", "GP8_TCP__LOGIN_TIMEOUT_S": "30"},
        teltonika=True,
    )
    try:
        gp8 = gp8_adversarial()
        took = await _closed_within(serve.tcp_port, gp8[:16], gp8[16:], 20.0)
        assert took < 10.0  # the login timeout (30 s) did not do it
        assert serve.teltonika_port is not None
        # Before the IMEI is complete (an unprovisioned one would be refused at once): its
        # 15 digits at one per 200 ms outlast the deadline.
        teltonika = teltonika_adversarial()
        took = await _closed_within(serve.teltonika_port, teltonika[:2], teltonika[2:], 20.0, 0.2)
        assert took < 10.0
        assert await _metric(serve.api, "gp8_gateway_closes_total", "frame_timeout") >= 2
    finally:
        serve.stop()
