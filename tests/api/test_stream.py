"""GET /v1/stream over a real uvicorn on port 0 (WebSocket and Server-Sent Events), on the real
SQLite engine: live delivery, resume without loss or repeat, filters, expiry, slow consumers,
auth and tenancy, two processes on one database file.

The helpers at the top (a server, a WebSocket client, an SSE reader) are also used by
tests/simulator/test_stream_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.security import KeyThrottle
from api.stream import Limits, StreamHub
from storage import open_store
from storage.models import now_ms
from storage.repository import Store
from tests.api.helpers import (
    OPERATOR_KEY,
    VALID_IMEIS,
    VALID_VINS,
    FleetFixture,
    bearer,
    create_fleet,
    make_event,
    make_position,
)
from tests.polling import eventually
from throttle import FailureLimit, FailureThrottle

TIMEOUT_S = 5.0
FAST = Limits(first_message_timeout_s=0.5, heartbeat_s=0.3, key_check_s=0.3)


# --- a real server ------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on 127.0.0.1, port picked by the OS; yields its host:port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            await task


@dataclass
class Live:
    store: Store
    hub: StreamHub
    address: str
    app: FastAPI

    @property
    def http(self) -> str:
        return f"http://{self.address}"

    def ws(self, query: str = "") -> str:
        return f"ws://{self.address}/v1/stream{query}"


@contextlib.asynccontextmanager
async def live_api(store: Store, **hub_options: Any) -> AsyncIterator[Live]:
    hub_options.setdefault("limits", FAST)
    hub = StreamHub(store.stream, **hub_options)
    app = create_app(store, bootstrap_key=OPERATOR_KEY, rate_limit_per_minute=None, stream_hub=hub)
    async with serving(app) as address:
        try:
            yield Live(store, hub, address, app)
        finally:
            await hub.stop()


@pytest.fixture
async def live(store: Store) -> AsyncIterator[Live]:
    async with live_api(store) as server:
        yield server


@pytest.fixture
async def http(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.http, timeout=TIMEOUT_S) as client:
        yield client


@pytest.fixture
async def alpha(http: httpx.AsyncClient) -> FleetFixture:
    return await create_fleet(http, "alpha", VALID_VINS[0], VALID_IMEIS[0])


@pytest.fixture
async def bravo(http: httpx.AsyncClient) -> FleetFixture:
    return await create_fleet(http, "bravo", VALID_VINS[1], VALID_IMEIS[1])


# --- a WebSocket client -------------------------------------------------------------------------


async def open_ws(
    url: str, *, key: str | None = None, first: dict[str, Any] | None = None, **options: Any
) -> ClientConnection:
    headers = bearer(key) if key is not None else None
    # A short close timeout: a client that leaves with messages unread does not wait for the
    # server's close frame behind them (the websockets client stops reading when its own
    # queue is full), it drops the connection, as a real client going away does.
    options.setdefault("close_timeout", 0.2)
    ws = await connect(url, additional_headers=headers, open_timeout=TIMEOUT_S, **options)
    if first is not None:
        await ws.send(json.dumps(first))
    return ws


async def recv(ws: ClientConnection, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def ready(ws: ClientConnection) -> int:
    """The ready message's cursor."""
    message = await recv(ws)
    assert message["kind"] == "ready", message
    cursor: int = message["cursor"]
    return cursor


async def closing(ws: ClientConnection) -> tuple[list[dict[str, Any]], int, str]:
    """Everything until the server closes: the messages, the close code and reason."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT_S * 2):
        try:
            while True:
                messages.append(json.loads(await ws.recv()))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return messages, closed.rcvd.code, closed.rcvd.reason


async def refused(ws: ClientConnection) -> tuple[dict[str, Any], int, str]:
    """A refusal: the error message, then the close."""
    messages, code, reason = await closing(ws)
    assert messages and messages[-1]["kind"] == "error", messages
    return messages[-1], code, reason


async def take(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(n)]


# --- an SSE client ------------------------------------------------------------------------------


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: dict[str, Any] | None
    comments: list[str]


class SseReader:
    """Frames from an httpx streaming response, one at a time, each read bounded."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout_s: float = TIMEOUT_S) -> SseEvent:
        fields: dict[str, str] = {}
        comments: list[str] = []
        async with asyncio.timeout(timeout_s):
            async for line in self._lines:
                if line == "":
                    if fields or comments:
                        data = fields.get("data")
                        return SseEvent(
                            fields.get("id"),
                            fields.get("event"),
                            json.loads(data) if data is not None else None,
                            comments,
                        )
                    continue
                if line.startswith(":"):
                    comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    async def message(self) -> SseEvent:
        """The next event that is not only a heartbeat or a retry hint."""
        while True:
            event = await self.next()
            if event.event is not None:
                return event


@contextlib.asynccontextmanager
async def sse(
    live: Live, key: str, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    all_headers = {"Accept": "text/event-stream", **bearer(key), **(headers or {})}
    async with (
        httpx.AsyncClient(base_url=live.http, timeout=TIMEOUT_S) as client,
        client.stream("GET", f"/v1/stream{query}", headers=all_headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseReader(response)


# --- data ---------------------------------------------------------------------------------------


async def store_positions(store: Store, fleet: FleetFixture, times: list[int]) -> None:
    positions = [make_position(fleet.id, fleet.device_id, fleet.vehicle_id, t) for t in times]
    await store.telemetry.store(positions, [])


async def log_cursors(store: Store, fleet_id: str) -> list[int]:
    """Every cursor of the fleet's log, read from storage: what a stream must deliver. (Cursors
    increase but are not dense: storage/stream.py numbers blocks.)"""
    page = await store.stream.after(fleet_id, 0, limit=5000)
    return [entry.cursor for entry in page.entries]


async def all_entries(store: Store, fleet_id: str) -> list[Any]:
    entries: list[Any] = []
    cursor = 0
    while True:
        page = await store.stream.after(fleet_id, cursor, limit=5000)
        if page.cursor == cursor:
            return entries
        entries += page.entries
        cursor = page.cursor


def times(n: int, start: int | None = None) -> list[int]:
    base = (start or now_ms()) - 3_600_000
    return [base + i * 1000 for i in range(n)]


async def rest_positions(
    http: httpx.AsyncClient, fleet: FleetFixture, from_ms: int
) -> list[dict[str, Any]]:
    r = await http.get(
        f"/v1/vehicles/{fleet.vehicle_id}/positions",
        params={"from": from_ms, "to": now_ms(), "limit": 1000},
        headers=fleet.h("viewer"),
    )
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


# --- live delivery and the message format -------------------------------------------------------


async def test_stream_positions_as_they_are_stored(
    live: Live, http: httpx.AsyncClient, alpha: FleetFixture
) -> None:
    await store_positions(live.store, alpha, times(2, now_ms() - 60_000))  # before: not sent
    ws = await open_ws(live.ws(), key=alpha.keys["viewer"])
    start = await ready(ws)
    assert start == await live.store.stream.head(alpha.id) > 0
    stored = times(3)
    await store_positions(live.store, alpha, stored)
    got = await take(ws, 3)
    assert [m["kind"] for m in got] == ["position"] * 3
    assert [m["cursor"] for m in got] == (await log_cursors(live.store, alpha.id))[2:]
    assert {m["vehicle_id"] for m in got} == {alpha.vehicle_id}
    assert set(got[0]) == {"kind", "cursor", "vehicle_id", "data"}
    # data is what the REST API returns for that position
    assert [m["data"] for m in got] == await rest_positions(http, alpha, stored[0])
    await ws.close()


async def test_stream_events_alerts_and_commands_kinds(live: Live, alpha: FleetFixture) -> None:
    ws = await open_ws(live.ws(), key=alpha.keys["viewer"])
    await ready(ws)
    position = make_position(alpha.id, alpha.device_id, alpha.vehicle_id, now_ms() - 1000)
    await live.store.telemetry.store([position], [make_event(position, "sos")])
    got = await take(ws, 2)
    assert [m["kind"] for m in got] == ["position", "event"]
    assert got[1]["data"]["type"] == "sos" and got[1]["vehicle_id"] == alpha.vehicle_id
    await ws.close()


async def test_stream_key_and_options_in_the_first_message(live: Live, alpha: FleetFixture) -> None:
    first = {"key": alpha.keys["viewer"], "kinds": ["event"], "vehicle_id": alpha.vehicle_id}
    ws = await open_ws(live.ws(), first=first)
    message = await recv(ws)
    assert message == {
        "kind": "ready",
        "cursor": 0,
        "vehicle_id": alpha.vehicle_id,
        "data": {"kinds": ["event"]},
    }
    position = make_position(alpha.id, alpha.device_id, alpha.vehicle_id, now_ms() - 1000)
    await live.store.telemetry.store([position], [make_event(position, "towing")])
    got = await recv(ws)
    event_cursor = (await log_cursors(live.store, alpha.id))[1]
    assert (got["kind"], got["cursor"], got["data"]["type"]) == ("event", event_cursor, "towing")
    await ws.close()


# --- resume ---------------------------------------------------------------------------------------


async def test_stream_resume_replays_what_was_missed_then_goes_on(
    live: Live, alpha: FleetFixture
) -> None:
    ws = await open_ws(live.ws(), key=alpha.keys["viewer"])
    await ready(ws)
    await store_positions(live.store, alpha, times(5))
    seen = await take(ws, 3)  # the client leaves with two still unread
    await ws.close()
    last = seen[-1]["cursor"]
    await store_positions(live.store, alpha, times(4, now_ms() + 10_000))  # while away
    ws = await open_ws(live.ws(f"?after={last}"), key=alpha.keys["viewer"])
    assert await ready(ws) == last
    replayed = await take(ws, 6)
    await store_positions(live.store, alpha, times(2, now_ms() + 20_000))  # live again
    replayed += await take(ws, 2)
    every = await log_cursors(live.store, alpha.id)
    assert len(every) == 11
    assert [m["cursor"] for m in seen + replayed] == every
    await ws.close()
    # The same resume from the first message.
    ws = await open_ws(live.ws(), first={"key": alpha.keys["viewer"], "after": every[8]})
    assert await ready(ws) == every[8]
    assert [m["cursor"] for m in await take(ws, 2)] == every[9:]
    await ws.close()


async def test_stream_reconnecting_under_load_misses_nothing_and_repeats_nothing(
    live: Live, alpha: FleetFixture
) -> None:
    """A writer stores all along while a client leaves and resumes several times (each
    resume crossing the replay-to-live handoff): every cursor comes exactly once."""
    total = 400
    stored = times(total)

    async def writer() -> None:
        for i in range(0, total, 5):
            await store_positions(live.store, alpha, stored[i : i + 5])
            await asyncio.sleep(0.005)

    writing = asyncio.create_task(writer())
    received: list[int] = []
    cursor = 0
    async with asyncio.timeout(30):
        while len(received) < total:
            ws = await open_ws(live.ws(f"?after={cursor}"), key=alpha.keys["viewer"])
            assert await ready(ws) == cursor
            for _ in range(37):  # then leave, mid-stream
                message = await recv(ws)
                received.append(message["cursor"])
                cursor = message["cursor"]
                if len(received) == total:
                    break
            await ws.close()
    await writing
    assert received == await log_cursors(live.store, alpha.id)
    assert len(received) == total


# --- filters --------------------------------------------------------------------------------------


async def test_stream_filters_by_vehicle_and_kind(
    live: Live, http: httpx.AsyncClient, alpha: FleetFixture
) -> None:
    r = await http.post("/v1/vehicles", json={"vin": VALID_VINS[2]}, headers=alpha.h())
    assert r.status_code == 201, r.text
    other = r.json()["id"]
    only_other = await open_ws(live.ws(f"?vehicle_id={other}"), key=alpha.keys["viewer"])
    only_events = await open_ws(live.ws("?kinds=event,alert"), key=alpha.keys["viewer"])
    both = await open_ws(
        live.ws(f"?vehicle_id={alpha.vehicle_id}&kinds=event"), key=alpha.keys["viewer"]
    )
    for ws in (only_other, only_events, both):
        await ready(ws)
    t = now_ms() - 10_000
    mine = make_position(alpha.id, alpha.device_id, alpha.vehicle_id, t)
    theirs = make_position(alpha.id, "dev_other", other, t)
    await live.store.telemetry.store([mine, theirs], [make_event(mine, "sos")])
    await live.store.telemetry.store(
        [theirs._replace(time_ms=t + 1)], [make_event(theirs._replace(time_ms=t + 1), "tamper")]
    )
    # Nothing more for the narrow ones: a marker on alpha's vehicle ends the check.
    await live.store.telemetry.store([], [make_event(mine._replace(time_ms=t + 2), "crash")])
    # The log: mine, theirs, sos (mine); theirs, tamper (theirs); crash (mine).
    c = await log_cursors(live.store, alpha.id)
    got = [(m["cursor"], m["kind"]) for m in await take(only_other, 3)]
    assert got == [(c[1], "position"), (c[3], "position"), (c[4], "event")]
    assert [(m["cursor"], m["data"]["type"]) for m in await take(only_events, 3)] == [
        (c[2], "sos"),
        (c[4], "tamper"),
        (c[5], "crash"),
    ]
    assert [(m["cursor"], m["data"]["type"]) for m in await take(both, 2)] == [
        (c[2], "sos"),
        (c[5], "crash"),
    ]
    for ws in (only_other, only_events, both):
        await ws.close()


async def test_stream_refuses_bad_options(live: Live, alpha: FleetFixture) -> None:
    key = alpha.keys["viewer"]
    for query in ("?kinds=position,gossip", "?after=-1", "?after=x", "?cursor=3", "?kinds="):
        error, code, reason = await refused(await open_ws(live.ws(query), key=key))
        assert (error["error"], code) == ("bad_request", 4400), query
        assert reason
    error, code, _ = await refused(await open_ws(live.ws(), first={"key": key, "after": "1"}))
    assert (error["error"], code) == ("bad_request", 4400)
    ws = await open_ws(live.ws("?after=1"), first={"key": key, "after": 2})
    assert "both" in (await refused(ws))[0]["detail"]
    # A cursor the stream never issued: refused rather than waited for.
    error, code, _ = await refused(await open_ws(live.ws("?after=99"), key=key))
    assert (error["error"], code) == ("bad_request", 4400)


async def test_stream_with_a_header_key_takes_no_messages(live: Live, alpha: FleetFixture) -> None:
    ws = await open_ws(live.ws(), key=alpha.keys["viewer"])
    await ready(ws)
    await ws.send(json.dumps({"after": 0}))
    error, code, _ = await refused(ws)
    assert (error["error"], code) == ("bad_request", 4400)
    assert "query string" in error["detail"]


# --- expiry ---------------------------------------------------------------------------------------


async def test_stream_says_when_the_cursor_expired(live: Live, alpha: FleetFixture) -> None:
    await store_positions(live.store, alpha, times(3))
    c = await log_cursors(live.store, alpha.id)
    assert await live.store.stream.prune(now_ms() + 1) == 3
    ws = await open_ws(live.ws(f"?after={c[0]}"), key=alpha.keys["viewer"])
    error, code, reason = await refused(ws)
    assert error["kind"] == "error" and error["error"] == "cursor_expired"
    assert error["horizon"] == c[2]
    assert code == 4410 and f"horizon {c[2]}" in reason
    # At the horizon itself, nothing was lost: accepted.
    ws = await open_ws(live.ws(f"?after={c[2]}"), key=alpha.keys["viewer"])
    assert await ready(ws) == c[2]
    await ws.close()


# --- slow consumers -------------------------------------------------------------------------------


def _small_socket(address: str) -> socket.socket:
    """A client socket with a tiny receive buffer: a client that stops reading soon stops the
    server's writes to it."""
    host, port = address.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


async def test_stream_drops_a_slow_consumer_while_ingestion_goes_on(store: Store) -> None:
    """A client that stops reading fills its mailbox and is dropped (4429, told where to
    resume); a client that reads, and the writes themselves, go on untouched."""
    async with live_api(store, queue_limit=2000, limits=Limits(send_timeout_s=60)) as live:
        async with httpx.AsyncClient(base_url=live.http, timeout=TIMEOUT_S) as http:
            fleet = await create_fleet(http, "alpha", VALID_VINS[0], VALID_IMEIS[0])
        key = fleet.keys["viewer"]
        slow = await connect(
            live.ws(),
            sock=_small_socket(live.address),
            additional_headers=bearer(key),
            open_timeout=TIMEOUT_S,
            max_queue=1,
            # Uncompressed: a few MB of buffers fill with a few thousand messages, not 100,000.
            compression=None,
        )
        await ready(slow)
        fast = await open_ws(live.ws(), key=key)
        await ready(fast)
        fast_got: list[int] = []

        async def read_fast() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    fast_got.append((await recv(fast, 60))["cursor"])

        reading = asyncio.create_task(read_fast())
        stored = 0
        slowest_store_s = 0.0
        base = now_ms() - 86_400_000

        async def store_batch(n: int) -> None:
            nonlocal stored, slowest_store_s
            began = time.monotonic()
            await store_positions(store, fleet, [base + (stored + i) * 1000 for i in range(n)])
            slowest_store_s = max(slowest_store_s, time.monotonic() - began)
            stored += n
            # Paced by the reading client, so that only the other one falls behind.
            await eventually(lambda: len(fast_got) >= stored, 30)

        async with asyncio.timeout(90):
            while live.hub.dropped == 0:
                await store_batch(200)
                assert stored <= 100_000, "the slow consumer was never dropped"
            await store_batch(10)  # ingestion goes on after the drop
        reading.cancel()
        cursors = [e.cursor for e in await all_entries(store, fleet.id)]
        assert len(cursors) == stored
        assert fast_got == cursors
        # Not a speed goal (those live in bench/): a write that waited for the stalled client
        # would wait for its 60 s send timeout; anything far below that shows it did not.
        assert slowest_store_s < 20.0
        # The slow client, reading again, finds what was sent to it, then the reason.
        messages, code, reason = await closing(slow)
        assert code == 4429
        error = messages[-1]
        assert error["error"] == "slow_consumer"
        sent = [m["cursor"] for m in messages[:-1] if m["kind"] == "position"]
        assert sent == cursors[: len(sent)]
        last = sent[-1] if sent else 0
        assert error["cursor"] == last and f"resume with after={last}" in reason
        # ... and resumes from there with nothing missed.
        again = await open_ws(live.ws(f"?after={last}"), key=key)
        assert await ready(again) == last
        rest = [(await recv(again))["cursor"] for _ in range(stored - len(sent))]
        assert rest == cursors[len(sent) :]
        await again.close()
        await fast.close()


# --- auth and tenancy -----------------------------------------------------------------------------


async def test_stream_refuses_without_a_valid_key(
    live: Live, http: httpx.AsyncClient, alpha: FleetFixture
) -> None:
    cases: list[tuple[ClientConnection, str, int]] = [
        (await open_ws(live.ws(), first={}), "unauthorized", 4401),
        (await open_ws(live.ws(), first={"key": "gp8_nope"}), "unauthorized", 4401),
        (await open_ws(live.ws(), first={"key": OPERATOR_KEY}), "forbidden", 4403),
        (await open_ws(live.ws()), "timeout", 4408),  # says nothing at all
    ]
    basic = await connect(
        live.ws(), additional_headers={"Authorization": "Basic eDp5"}, open_timeout=TIMEOUT_S
    )
    cases.append((basic, "unauthorized", 4401))
    for ws, error, code in cases:
        message, got_code, reason = await refused(ws)
        assert (message["error"], got_code) == (error, code), message
        assert reason


async def test_stream_throttles_invalid_keys_per_address_as_the_rest_api(live: Live) -> None:
    # A brute force through the WebSocket is counted with the REST API's (api/security.py).
    throttle = KeyThrottle(FailureThrottle(FailureLimit(3, 60.0, 300.0)))
    live.app.state.key_throttle = throttle
    for _ in range(3):
        error, code, _ = await refused(await open_ws(live.ws(), first={"key": "gp8_guess"}))
        assert (error["error"], code) == ("unauthorized", 4401)
    error, code, _ = await refused(await open_ws(live.ws(), first={"key": "gp8_guess"}))
    assert error["error"] == "rate_limited"
    assert throttle.counts == {"failed": 3, "locked_out": 1, "throttled": 1}


async def test_stream_refuses_a_key_in_the_url(live: Live, alpha: FleetFixture) -> None:
    key = alpha.keys["viewer"]
    for query in (f"?key={key}", f"?token={key}", f"?access_token={key}"):
        # Refused even next to a valid header: the secret has leaked into logs already.
        for ws in (await open_ws(live.ws(query), key=key), await open_ws(live.ws(query))):
            error, code, reason = await refused(ws)
            assert (error["error"], code) == ("bad_request", 4400)
            assert "never put a key in the URL" in reason


async def test_stream_refuses_a_revoked_key_and_ends_on_revocation(
    live: Live, http: httpx.AsyncClient, alpha: FleetFixture
) -> None:
    key, key_id = alpha.keys["viewer"], alpha.key_ids["viewer"]
    ws = await open_ws(live.ws(), key=key)
    await ready(ws)
    r = await http.delete(f"/v1/fleets/{alpha.id}/keys/{key_id}", headers=alpha.h())
    assert r.status_code == 204, r.text
    # Connected: ended at the next check (FAST: every 0.3 s).
    error, code, _ = await refused(ws)
    assert (error["error"], code) == ("unauthorized", 4401)
    # Connecting: refused, by header and by first message.
    for again in (await open_ws(live.ws(), key=key), await open_ws(live.ws(), first={"key": key})):
        error, code, _ = await refused(again)
        assert (error["error"], code) == ("unauthorized", 4401)


async def test_stream_another_fleet_sees_nothing(
    live: Live, alpha: FleetFixture, bravo: FleetFixture
) -> None:
    ws = await open_ws(live.ws(), key=bravo.keys["admin"])
    await ready(ws)
    await store_positions(live.store, alpha, times(5))
    await store_positions(live.store, bravo, times(1))  # the marker
    got = await recv(ws)
    assert (got["cursor"], got["vehicle_id"]) == (
        await live.store.stream.head(bravo.id),
        bravo.vehicle_id,
    )
    # Alpha's cursors do not exist for bravo: resuming from one is refused, not replayed.
    alpha_head = await live.store.stream.head(alpha.id)
    assert alpha_head > got["cursor"]
    ws = await open_ws(live.ws(f"?after={alpha_head}"), key=bravo.keys["admin"])
    error, code, _ = await refused(ws)
    assert (error["error"], code) == ("bad_request", 4400)
    # Another fleet's vehicle is refused exactly like one that does not exist.
    answers = []
    for vehicle in (alpha.vehicle_id, "veh_000000000000000000000000"):
        ws = await open_ws(live.ws(f"?vehicle_id={vehicle}"), key=bravo.keys["admin"])
        answers.append(await refused(ws))
    assert answers[0] == answers[1]
    assert (answers[0][0]["error"], answers[0][1]) == ("not_found", 4404)
    await ws.close()


async def test_stream_opening_is_in_the_access_log(
    live: Live, http: httpx.AsyncClient, alpha: FleetFixture
) -> None:
    ws = await open_ws(live.ws(f"?vehicle_id={alpha.vehicle_id}"), key=alpha.keys["viewer"])
    await ready(ws)
    await ws.close()
    r = await http.get("/v1/access-log", params={"limit": 100}, headers=alpha.h())
    assert r.status_code == 200, r.text
    entries = [e for e in r.json()["data"] if e["resource"] == "stream"]
    assert entries and entries[0]["key_id"] == alpha.key_ids["viewer"]
    assert entries[0]["resource_id"] == alpha.vehicle_id


# --- several processes ----------------------------------------------------------------------------


async def test_stream_what_one_process_stores_reaches_clients_of_another(
    store: Store, data_dir: Path
) -> None:
    other = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)  # the same file
    await other.start()
    try:
        async with live_api(store) as first, live_api(other) as second:
            async with httpx.AsyncClient(base_url=first.http, timeout=TIMEOUT_S) as http:
                fleet = await create_fleet(http, "alpha", VALID_VINS[0], VALID_IMEIS[0])
            on_second = await open_ws(second.ws(), key=fleet.keys["viewer"])
            on_first = await open_ws(first.ws(), key=fleet.keys["viewer"])
            await ready(on_second)
            await ready(on_first)
            await store_positions(store, fleet, times(2))  # stored by the first process
            await store_positions(other, fleet, times(1, now_ms() + 5000))  # by the second
            every = await log_cursors(store, fleet.id)
            assert len(every) == 3
            for ws in (on_second, on_first):
                assert [m["cursor"] for m in await take(ws, 3)] == every
                await ws.close()
    finally:
        await other.close()


# --- shutdown -------------------------------------------------------------------------------------


async def test_stream_clients_are_told_to_resume_when_the_server_stops(
    live: Live, alpha: FleetFixture
) -> None:
    ws = await open_ws(live.ws(), key=alpha.keys["viewer"])
    await ready(ws)
    await store_positions(live.store, alpha, times(2))
    last = (await take(ws, 2))[-1]["cursor"]
    await live.hub.stop()
    error, code, reason = await refused(ws)
    assert (error["error"], code, error["cursor"]) == ("shutting_down", 1001, last)
    assert f"resume with after={last}" in reason


# --- Server-Sent Events ---------------------------------------------------------------------------


async def test_sse_same_messages_and_resume_with_last_event_id(
    live: Live, alpha: FleetFixture
) -> None:
    key = alpha.keys["viewer"]
    ws = await open_ws(live.ws(), key=key)
    await ready(ws)
    async with sse(live, key) as events:
        first = await events.message()
        assert (first.event, first.id) == ("ready", "0")
        assert first.data is not None and first.data["kind"] == "ready"
        await store_positions(live.store, alpha, times(3))
        got = [await events.message() for _ in range(2)]
    over_ws = await take(ws, 3)
    c = [str(m["cursor"]) for m in over_ws]
    assert [(e.id, e.event) for e in got] == [(c[0], "position"), (c[1], "position")]
    assert [e.data for e in got] == over_ws[:2]  # the same messages as the WebSocket's
    # Resumed as an EventSource does: the same URL, Last-Event-ID set; it wins over ?after=.
    await store_positions(live.store, alpha, times(1, now_ms() + 5000))
    c.append(str((await take(ws, 1))[0]["cursor"]))
    async with sse(live, key, "?after=0", headers={"Last-Event-ID": c[1]}) as events:
        assert (await events.message()).id == c[1]  # ready
        assert [(await events.message()).id for _ in range(2)] == c[2:]
    await ws.close()


async def test_sse_filters_and_heartbeats(live: Live, alpha: FleetFixture) -> None:
    async with sse(live, alpha.keys["viewer"], "?kinds=event") as events:
        await events.message()  # ready
        await store_positions(live.store, alpha, times(2))
        heartbeat = await events.next()  # FAST: a comment line every 0.3 s when quiet
        assert heartbeat.event is None and heartbeat.comments == ["keep-alive"]
        position = make_position(alpha.id, alpha.device_id, alpha.vehicle_id, now_ms())
        await live.store.telemetry.store([], [make_event(position, "sos")])
        event = await events.message()
        c = await log_cursors(live.store, alpha.id)
        assert (event.event, event.id) == ("event", str(c[2]))


async def test_sse_refusals_are_problems(
    live: Live, http: httpx.AsyncClient, alpha: FleetFixture
) -> None:
    key = alpha.keys["viewer"]
    stream = {"Accept": "text/event-stream"}
    r = await http.get("/v1/stream", headers=bearer(key))
    assert r.status_code == 406
    r = await http.get("/v1/stream", headers=stream)
    assert r.status_code == 401
    r = await http.get(f"/v1/stream?key={key}", headers=stream)
    assert r.status_code == 400 and "never put a key in the URL" in r.json()["detail"]
    r = await http.get(f"/v1/stream?token={key}", headers={**stream, **bearer(key)})
    assert r.status_code == 400
    r = await http.get("/v1/stream?vehicle_id=veh_x", headers={**stream, **bearer(key)})
    assert r.status_code == 404
    r = await http.get("/v1/stream", headers={**stream, **bearer(OPERATOR_KEY)})
    assert r.status_code == 403
    await store_positions(live.store, alpha, times(2))
    c = await log_cursors(live.store, alpha.id)
    await live.store.stream.prune(now_ms() + 1)
    expired = {**stream, **bearer(key), "Last-Event-ID": str(c[0])}
    r = await http.get("/v1/stream", headers=expired)
    assert r.status_code == 410
    problem = r.json()
    assert problem["type"] == "urn:gp8:problem:cursor-expired" and problem["horizon"] == c[1]
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_sse_client_leaving_releases_its_subscription(
    live: Live, alpha: FleetFixture
) -> None:
    async with sse(live, alpha.keys["viewer"]) as events:
        await events.message()
        assert live.hub.health()["clients"] == 1
    await eventually(lambda: live.hub.health()["clients"] == 0)
