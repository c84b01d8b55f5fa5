"""The benches' HTTP client (bench/http_client.py) against a real socket: what it sends, and
answers read back to back on one kept-alive connection."""

from __future__ import annotations

import asyncio

from bench.http_client import connections, get_head, post_head


async def test_post_sends_head_and_body_and_reads_answers_on_one_connection() -> None:
    received: list[bytes] = []
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        for status, body in ((201, b'{"id":"a"}'), (409, b"")):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            received.append(head + await reader.readexactly(length))
            writer.write(
                b"HTTP/1.1 %d X\r\ncontent-length: %d\r\nserver: t\r\n\r\n%s"
                % (status, len(body), body)
            )
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    head = post_head(base_url, "/v1/things", "k1")
    async with server, connections(base_url, 1, timeout_s=5) as (own,):
        assert await own.post(head, b'{"n":1}') == (201, b'{"id":"a"}')
        assert await own.post(head, b"{}") == (409, b"")
    assert accepted == 1
    assert (
        received[0]
        == (
            f"POST /v1/things HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer k1\r\n"
            'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"n":1}'
        ).encode()
    )
    assert received[1].endswith(b"Content-Length: 2\r\n\r\n{}")


async def test_get_sends_the_head_alone_and_reads_a_large_body() -> None:
    received: list[bytes] = []
    body = bytes(range(256)) * 8192  # 2 MiB: read across many socket reads

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    async with server, connections(base_url, 1, timeout_s=5) as (own,):
        assert await own.get(get_head(base_url, "/v1/x?from=1&to=2", "k2")) == (200, body)
        assert await own.get(get_head(base_url, "/v1/y", "k2")) == (404, b"")
    assert (
        received[0]
        == (
            f"GET /v1/x?from=1&to=2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Authorization: Bearer k2\r\n\r\n"
        ).encode()
    )
    assert received[1].startswith(b"GET /v1/y HTTP/1.1\r\n")
