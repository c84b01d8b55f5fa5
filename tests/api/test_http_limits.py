"""api/http_limits.py on a real uvicorn (port 0) with a tiny app: what needs an answer that takes
its time, and the counts, without a whole `gp8 serve` (tests/security/test_api_limits.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn

from api.http_limits import MALFORMED_RESPONSE, HttpLimits, limited_http

HEADER_TIMEOUT_S = 0.3
SLOW_S = 3.5 * HEADER_TIMEOUT_S  # between two deadlines' ends, away from either
IO_TIMEOUT_S = 10.0


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /slow answers after SLOW_S without reading on (as a slow query); others at once."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(SLOW_S)
    body = scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, Counter[str]]]:
    counts: Counter[str] = Counter()
    protocol = limited_http(HttpLimits(header_timeout_s=HEADER_TIMEOUT_S), counts)
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=0, http=protocol, lifespan="off", log_level="error"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(IO_TIMEOUT_S):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1], counts
    finally:
        server.should_exit = True
        async with asyncio.timeout(IO_TIMEOUT_S):
            await task


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(IO_TIMEOUT_S):
        return await asyncio.open_connection("127.0.0.1", port)


async def test_a_head_pipelined_behind_a_slow_answer_has_time_until_it_is_read(
    served: tuple[int, Counter[str]],
) -> None:
    """uvicorn reads no more while pipelined requests wait: the rest of a head sent at once
    stays unread for SLOW_S, over three deadlines, and that is not the client's delay."""
    port, counts = served
    reader, writer = await _open(port)
    try:
        writer.write(
            b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHo"
        )
        await writer.drain()
        # Not a wait for something: the rest must come in a read of its own, once paused.
        await asyncio.sleep(0.05)
        writer.write(b"st: t\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(IO_TIMEOUT_S):
            answer = await reader.read()
    finally:
        writer.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"] * 3, answer
    assert answer.endswith(b"/c") and counts["header_timeout"] == 0


async def test_what_is_refused_is_counted(served: tuple[int, Counter[str]]) -> None:
    port, counts = served
    silent_reader, silent = await _open(port)
    reader, writer = await _open(port)
    try:
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # TLS to a plain port
        async with asyncio.timeout(IO_TIMEOUT_S):
            assert await reader.read() == MALFORMED_RESPONSE
            assert await silent_reader.read() == b""  # closed at the header deadline
    finally:
        writer.close()
        silent.close()
    assert counts == {"malformed": 1, "header_timeout": 1}
