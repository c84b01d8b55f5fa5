"""Slowloris and file descriptors (issue 11): uvicorn never timed out a half-sent request, and
with the process at 1,024 open files, 1,100 of them made API requests fail and a box's login get
EOF. Now headers must be complete within a deadline, connections are capped per source and in
all (at a quarter of the descriptor limit), and the device listeners keep the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from protocol.gp8 import LoginStatus
from tests.security.serve_process import (
    IO_TIMEOUT_S,
    Provisioned,
    RawBox,
    ServeProcess,
    provision,
    start_serve,
)

HEADER_TIMEOUT_S = 1.0
PER_SOURCE = 10
# The problem type of a request the HTTP parser refuses (api/http_limits.py).
MALFORMED = "urn:gp8:problem:malformed-request"


async def _open(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(IO_TIMEOUT_S):
        return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """True if the server ends the connection within ``timeout_s`` (EOF or reset)."""
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    process = asyncio.run(
        start_serve(
            tmp_path_factory.mktemp("serve"),
            {
                "GP8_API__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                "GP8_API__MAX_CONNECTIONS_PER_SOURCE": str(PER_SOURCE),
            },
        )
    )
    try:
        yield process
    finally:
        process.stop()


async def _slowloris(port: int, source: str, stop: asyncio.Event) -> bool:
    """A request whose headers never end: a header line every 200 ms. True once closed."""
    reader, writer = await _open(port, source)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: gp8\r\n")
        n = 0
        while not stop.is_set():
            n += 1
            try:
                writer.write(b"X-Slow-%d: 1\r\n" % n)
                await writer.drain()
            except ConnectionError:
                return True
            if await _until_closed(reader, 0.2):
                return True
        return False
    finally:
        writer.close()


async def test_half_sent_requests_are_closed_after_the_header_deadline(
    limited: ServeProcess,
) -> None:
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [
        asyncio.create_task(_slowloris(limited.api_port, f"127.0.1.{n // PER_SOURCE + 1}", stop))
        for n in range(40)
    ]
    silent_reader, silent = await _open(limited.api_port, "127.0.2.1")  # sends nothing at all
    try:
        done, _ = await asyncio.wait(tasks, timeout=15 * HEADER_TIMEOUT_S)
        stop.set()
        closed = [t.result() for t in done]
        assert len(closed) == 40 and all(closed)
        assert await _until_closed(silent_reader, 10 * HEADER_TIMEOUT_S)
    finally:
        stop.set()
        silent.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert time.monotonic() - started < 15 * HEADER_TIMEOUT_S
    # A request that is not slow is unaffected, also on a kept-alive connection.
    async with httpx.AsyncClient(base_url=limited.api, timeout=IO_TIMEOUT_S) as http:
        for _ in range(2):
            assert (await http.get("/health")).status_code == 200
        text = (await http.get("/metrics")).text
    assert 'gp8_api_connections_refused_total{reason="header_timeout"} 41.0' in text


async def test_connections_beyond_the_per_source_cap_are_closed_at_once(
    limited: ServeProcess,
) -> None:
    held = [await _open(limited.api_port, "127.0.3.1") for _ in range(PER_SOURCE + 5)]
    try:
        # Refused at accept: closed long before the header deadline could have done it.
        closed = await asyncio.gather(
            *(_until_closed(reader, HEADER_TIMEOUT_S / 2) for reader, _ in held)
        )
        assert sum(closed) == 5
        async with httpx.AsyncClient(
            base_url=limited.api,
            timeout=IO_TIMEOUT_S,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.3.2"),
        ) as other:
            assert (await other.get("/health")).status_code == 200
    finally:
        for _, writer in held:
            writer.close()


async def test_an_over_long_url_gets_a_problem_document(limited: ServeProcess) -> None:
    # h11 refuses a request line and headers beyond its 16 KiB bound before the app sees them:
    # the answer is still one of the API's problem documents, not uvicorn's text/plain line.
    # Just over the bound, and no more: the server has read all of it when it answers.
    answer = await _exchange(limited.api_port, "127.0.4.1", b"GET /v1/vehicles?q=" + b"x" * 17_000)
    problem = _problem(answer)
    assert problem["type"] == MALFORMED and "16 KiB" in str(problem["detail"])


async def test_websocket_upgrades_give_their_source_slot_back(limited: ServeProcess) -> None:
    """A stream connection leaves the h11 protocol on upgrade: it must not keep a slot of its
    source, or a dozen stream clients would lock their address out of the API."""
    url = f"ws://127.0.0.1:{limited.api_port}/v1/stream"
    for _ in range(PER_SOURCE + 2):
        async with connect(
            url,
            additional_headers={"Authorization": "Bearer gp8_wrong"},
            local_addr=("127.0.5.1", 0),
            open_timeout=IO_TIMEOUT_S,
        ) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(IO_TIMEOUT_S):
                    while True:
                        await ws.recv()  # the error message, then the close
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    held = [await _open(limited.api_port, "127.0.5.1") for _ in range(PER_SOURCE)]
    try:
        closed_now = await asyncio.gather(*(_until_closed(r, 0.3) for r, _ in held))
        assert not any(closed_now)
    finally:
        for _, writer in held:
            writer.close()


async def test_an_api_flood_never_takes_the_file_descriptors_of_the_box_listener(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With RLIMIT_NOFILE at 256, 300 API connections (from many sources, under the per-source
    cap) would have taken every descriptor; the API keeps to 64 and a box still logs in."""
    serve = await start_serve(tmp_path_factory.mktemp("serve"), nofile=256)
    held: list[asyncio.StreamWriter] = []
    try:
        box: Provisioned = await provision(serve.api)
        readers = []
        for n in range(300):
            with contextlib.suppress(ConnectionError, TimeoutError):
                reader, writer = await _open(serve.api_port, f"127.0.4.{n // 50 + 1}")
                readers.append(reader)
                held.append(writer)
        closed = await asyncio.gather(*(_until_closed(r, 2.0) for r in readers))
        assert len(readers) - sum(closed) <= 256 // 4  # what the API may keep open
        link = await RawBox.connect(serve.tcp_port)
        try:
            assert await link.login(box.imei, box.secret) is LoginStatus.OK
            await link.position(int(time.time() * 1000))
        finally:
            await link.close()
    finally:
        for writer in held:
            writer.close()
        serve.stop()
    assert "Too many open files" not in serve.log()


# --- httptools: what h11 did by itself, and what its parser does differently -------------------


async def _exchange(port: int, source: str, request: bytes) -> bytes:
    """``request`` in one write; all the server answers until it closes the connection."""
    reader, writer = await _open(port, source)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(IO_TIMEOUT_S):
            return await reader.read()
    finally:
        writer.close()


def _problem(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    problem: dict[str, object] = json.loads(body)
    return problem


async def _each_malformed(port: int, source: str, *requests: bytes) -> None:
    """Each of ``requests``, on a connection of its own, gets the malformed-request problem."""
    for request in requests:
        assert _problem(await _exchange(port, source, request))["type"] == MALFORMED, request


async def test_an_over_long_head_sent_whole_gets_a_problem_document(limited: ServeProcess) -> None:
    # Complete in one read, which h11's buffer bound let through: llhttp parses it all, so its
    # size is checked once the headers end.
    def get(pad: int) -> bytes:
        return b"GET /health HTTP/1.1\r\nHost: gp8\r\nX-Pad: %s\r\nConnection: close\r\n\r\n" % (
            b"x" * pad
        )

    problem = _problem(await _exchange(limited.api_port, "127.0.6.1", get(17_000)))
    assert problem["type"] == MALFORMED
    # Under the bound: answered as usual.
    answer = await _exchange(limited.api_port, "127.0.6.1", get(15_000))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_bytes_that_are_no_http_get_a_problem_document(limited: ServeProcess) -> None:
    # TLS spoken to the plain port (a ClientHello's first bytes), a header line without a colon.
    await _each_malformed(
        limited.api_port,
        "127.0.6.2",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /health HTTP/1.1\r\nHost gp8\r\n\r\n",
    )


async def test_an_http_1_1_request_needs_exactly_one_host(limited: ServeProcess) -> None:
    # RFC 9112 §3.2: a 400 without Host or with two; HTTP/1.0 has no Host to require.
    await _each_malformed(
        limited.api_port,
        "127.0.6.5",
        b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: gp8\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    answer = await _exchange(limited.api_port, "127.0.6.5", b"GET /health HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_pipelined_requests_are_answered_in_order_then_closed(limited: ServeProcess) -> None:
    requests = (
        b"GET /health HTTP/1.1\r\nHost: gp8\r\n\r\n"
        b"GET /v1/nothing-here HTTP/1.1\r\nHost: gp8\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: gp8\r\nConnection: close\r\n\r\n"
    )
    answer = await _exchange(limited.api_port, "127.0.6.3", requests)  # ends: Connection: close
    # Each status line right after the previous body (no separator of its own).
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"404", b"200"]
    assert answer.lower().count(b"connection: close") == 1


async def test_blank_lines_between_requests_do_not_escape_the_deadline(
    limited: ServeProcess,
) -> None:
    """Any byte cancels uvicorn's keep-alive timer, and llhttp ignores CRLFs before a request:
    without the deadline, a CRLF every 200 ms after one request would hold the connection."""
    reader, writer = await _open(limited.api_port, "127.0.6.4")
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: gp8\r\n\r\n")
        async with asyncio.timeout(IO_TIMEOUT_S):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < 10 * HEADER_TIMEOUT_S:
            try:
                writer.write(b"\r\n")
                await writer.drain()
            except ConnectionError:
                break
            closed = await _until_closed(reader, 0.2)
        assert time.monotonic() - started < 5 * HEADER_TIMEOUT_S  # not the 10 s cut-off
    finally:
        writer.close()


async def test_live_streams_outlive_the_header_deadline(limited: ServeProcess) -> None:
    """After its upgrade a WebSocket, and a Server-Sent Events response after its request,
    have no request head left to wait for: the header deadline must not close them."""
    box = await provision(limited.api)
    url = f"ws://127.0.0.1:{limited.api_port}/v1/stream"
    headers = {"Authorization": f"Bearer {box.admin_key}"}
    async with (
        connect(url, additional_headers=headers, open_timeout=IO_TIMEOUT_S) as ws,
        httpx.AsyncClient(base_url=limited.api, timeout=IO_TIMEOUT_S) as http,
        http.stream("GET", "/v1/stream", headers={**headers, "Accept": "text/event-stream"}) as sse,
    ):
        async with asyncio.timeout(IO_TIMEOUT_S):
            assert json.loads(await ws.recv())["kind"] == "ready"
        assert sse.status_code == 200
        # Nothing may close either during three deadlines; then a position reaches both.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3 * HEADER_TIMEOUT_S):
                await ws.wait_closed()
        link = await RawBox.connect(limited.tcp_port)
        try:
            assert await link.login(box.imei, box.secret) is LoginStatus.OK
            await link.position(int(time.time() * 1000))
        finally:
            await link.close()
        async with asyncio.timeout(IO_TIMEOUT_S):
            while json.loads(await ws.recv())["kind"] != "position":
                pass
            lines = sse.aiter_lines()
            while await anext(lines) != "event: position":
                pass
