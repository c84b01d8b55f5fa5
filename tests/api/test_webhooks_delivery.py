"""Webhook delivery end to end: a real local HTTP receiver verifies every request with the
`standardwebhooks` package; failures are retried on the schedule (an injected clock walks
through it without waiting); deliveries survive a restart of the service and the store on the
same SQLite file, and each webhook-id is answered 2xx exactly once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from standardwebhooks import Webhook, WebhookVerificationError

from api.app import create_app
from api.services.resources import render
from api.webhooks import MAX_ATTEMPTS, RETRY_DELAYS_S, WebhookService, retry_delay_ms
from api.webhooks.schedule import JITTER, MAX_DELAY_S, parse_retry_after
from storage import open_store
from storage.models import (
    Alert,
    AlertKind,
    DeliveryStatus,
    StreamKind,
    new_id,
    now_ms,
)
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, VALID_IMEIS, VALID_VINS, FleetFixture, create_fleet

DEADLINE_S = 10.0
DAY_MS = 24 * 3600 * 1000


# --- a real receiver on 127.0.0.1, port 0 --------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    verified: Any = None  # the parsed payload when the signature checked out

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies). ``answers`` are the
    statuses of the next requests, then 200; ``hold`` cleared makes it answer nothing until
    set again (requests are recorded as they arrive). A request whose signature does not
    verify is answered 401."""

    secret: str | None = None
    answers: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    verify_time: bool = True  # check webhook-timestamp against the real clock
    _server: asyncio.Server | None = None

    def __post_init__(self) -> None:
        self.hold.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self.hold.set()
        await asyncio.wait_for(self._server.wait_closed(), DEADLINE_S)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.answers.pop(0) if self.answers else 200
                verified = self._verify(body, headers)
                if verified is None and 200 <= status < 300:
                    status = 401
                self.requests.append(Received(headers, body, status, verified))
                await self.hold.wait()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        finally:
            writer.close()

    def _verify(self, body: bytes, headers: dict[str, str]) -> Any:
        if self.secret is None:
            return None
        if not self.verify_time:  # the fake clock is far from the real one: signature only
            signed = Webhook(self.secret).sign(
                headers["webhook-id"],
                _utc(int(headers["webhook-timestamp"])),
                body.decode(),
            )
            ok = signed.split(",", 1)[1] in headers["webhook-signature"]
            return orjson.loads(body) if ok else None
        try:
            return Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return None


def _utc(seconds: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, tz=UTC)


class FakeClock:
    """commands.clock.Clock, moved by the test; starts at the real time so signatures verify."""

    def __init__(self) -> None:
        self.ms = now_ms()

    def now_ms(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.ms / 1000

    def advance_to(self, ms: int) -> None:
        self.ms = max(self.ms, ms)


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Poll ``condition`` until it holds, failing after DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def app(store: Store) -> FastAPI:
    # Receivers here listen on 127.0.0.1: private targets allowed, as GP8_WEBHOOKS__ALLOW_PRIVATE.
    return create_app(
        store, bootstrap_key=OPERATOR_KEY, rate_limit_per_minute=None, webhook_allow_private=True
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def service(store: Store, clock: FakeClock) -> AsyncIterator[WebhookService]:
    s = WebhookService(
        store, clock=clock, allow_private=True, request_timeout_s=5.0, rng=random.Random(8)
    )
    yield s
    await s.stop(grace_s=0.5)


async def add_webhook(
    client: httpx.AsyncClient, fleet: FleetFixture, receiver: Receiver, **body: object
) -> dict[str, Any]:
    r = await client.post(
        "/v1/webhooks", json={"url": receiver.url, **body}, headers=fleet.h("admin")
    )
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    receiver.secret = created["secret"]
    return created


def alert(fleet: FleetFixture, detail: str = "second login") -> Alert:
    return Alert(
        id=new_id("alr"),
        fleet_id=fleet.id,
        kind=AlertKind.DUPLICATE_BOX,
        raised_ms=now_ms(),
        device_id=fleet.device_id,
        vehicle_id=fleet.vehicle_id,
        detail=detail,
    )


async def deliveries(
    client: httpx.AsyncClient, fleet: FleetFixture, hook: dict[str, Any]
) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=fleet.h("viewer"))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["data"]
    return found


async def one_pass(service: WebhookService) -> None:
    await service.run_pass()
    await service.wait_idle(DEADLINE_S)


# --- tests ---------------------------------------------------------------------------------


async def test_alert_reaches_receiver_signed_and_verified(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    fleet_b: FleetFixture,
    receiver: Receiver,
) -> None:
    """End to end, with the service running in the background: an alert raised in storage
    reaches fleet A's receiver, verified; fleet B's webhook gets none of it, and B's keys see
    none of A's webhook."""
    hook = await add_webhook(client, fleet_a, receiver)
    other = Receiver()
    await other.start()
    try:
        await add_webhook(client, fleet_b, other)
        service = WebhookService(store, allow_private=True, poll_interval_s=0.05)
        await service.start()
        try:
            raised = await store.alerts.raise_alert(alert(fleet_a))
            await until(lambda: len(receiver.requests) == 1, "the alert's delivery")
            (got,) = receiver.requests
            assert got.status == 200 and got.verified is not None  # signature and timestamp ok
            assert got.verified == {
                "type": "alert",
                "timestamp": got.verified["timestamp"],
                "data": render(StreamKind.ALERT, raised),
            }
            assert got.verified["data"]["id"] == raised.id
            assert got.headers["content-type"] == "application/json"
            assert got.headers["webhook-signature"].startswith("v1,")

            async def recorded() -> bool:
                return (await deliveries(client, fleet_a, hook))[0]["status"] == "delivered"

            await until(recorded, "the delivery recorded as delivered")
            (listed,) = await deliveries(client, fleet_a, hook)
            assert listed["id"] == got.webhook_id
            assert (listed["attempts"], listed["last_status_code"]) == (1, 200)
            assert listed["next_attempt_at"] is None and listed["delivered_at"] is not None
        finally:
            await service.stop()
        assert other.requests == []
    finally:
        await other.stop()
    for path in (f"/v1/webhooks/{hook['id']}", f"/v1/webhooks/{hook['id']}/deliveries"):
        r = await client.get(path, headers=fleet_b.h("admin"))
        assert r.status_code == 404, path
        assert got.webhook_id not in r.text


async def test_failed_delivery_is_retried_then_delivered(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    service: WebhookService,
    clock: FakeClock,
) -> None:
    hook = await add_webhook(client, fleet_a, receiver)
    receiver.answers = [500]
    await store.alerts.raise_alert(alert(fleet_a))
    await one_pass(service)
    assert [r.status for r in receiver.requests] == [500]
    (first,) = await deliveries(client, fleet_a, hook)
    assert (first["status"], first["attempts"], first["last_status_code"]) == ("pending", 1, 500)
    assert first["last_error"] == "HTTP 500"
    # Not before its time: about 5 s later (±10%).
    await one_pass(service)
    assert len(receiver.requests) == 1
    stored = (await store.webhooks.deliveries(fleet_a.id, hook["id"])).items[0]
    assert stored.next_attempt_ms is not None and stored.last_attempt_ms is not None
    delay = stored.next_attempt_ms - stored.last_attempt_ms
    assert 4_500 <= delay <= 5_500
    clock.advance_to(stored.next_attempt_ms)
    await one_pass(service)
    assert [r.status for r in receiver.requests] == [500, 200]
    assert receiver.requests[0].webhook_id == receiver.requests[1].webhook_id  # same id
    assert receiver.requests[0].body == receiver.requests[1].body  # same payload
    assert receiver.requests[1].verified is not None
    (done,) = await deliveries(client, fleet_a, hook)
    assert (done["status"], done["attempts"], done["last_status_code"]) == ("delivered", 2, 200)
    assert done["last_error"] is None


async def test_deliveries_survive_restart_exactly_once(
    data_dir: Path, fleet_a: FleetFixture, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """The service and the store stop between a failed attempt and its retry; a new store on
    the same SQLite file and a new service finish the delivery: one 2xx per webhook-id."""
    hook = await add_webhook(client, fleet_a, receiver)
    clock = FakeClock()
    receiver.answers = [503]
    first_store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await first_store.start()
    first = WebhookService(first_store, clock=clock, allow_private=True, rng=random.Random(1))
    await first_store.alerts.raise_alert(alert(fleet_a, "one"))
    await first_store.alerts.raise_alert(alert(fleet_a, "two"))
    await one_pass(first)
    assert sorted(r.status for r in receiver.requests) == [200, 503]
    await first.stop()
    await first_store.close()

    second_store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await second_store.start()
    second = WebhookService(second_store, clock=clock, allow_private=True, rng=random.Random(2))
    try:
        clock.advance_to(clock.ms + 60_000)
        for _ in range(3):  # more passes find nothing more to send
            await one_pass(second)
            clock.advance_to(clock.ms + DAY_MS)
        by_id: dict[str, list[int]] = {}
        for r in receiver.requests:
            by_id.setdefault(r.webhook_id, []).append(r.status)
        assert sorted(by_id.values()) == [[200], [503, 200]]
        assert all(r.verified is not None for r in receiver.requests if r.status == 200)
        found = (await second_store.webhooks.deliveries(fleet_a.id, hook["id"])).items
        assert sorted(d.attempts for d in found) == [1, 2]
        assert {d.status for d in found} == {DeliveryStatus.DELIVERED}
        assert {d.id for d in found} == set(by_id)  # no delivery queued twice
    finally:
        await second.stop()
        await second_store.close()


async def test_attempt_cut_by_stop_is_retried_with_same_id(
    data_dir: Path, fleet_a: FleetFixture, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """gp8 stops while a receiver holds the request: the delivery stays claimed, comes due
    again once its lease runs out, and is sent again with the same webhook-id."""
    hook = await add_webhook(client, fleet_a, receiver)
    clock = FakeClock()
    first_store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await first_store.start()
    first = WebhookService(first_store, clock=clock, allow_private=True, request_timeout_s=5.0)
    receiver.hold.clear()
    await first_store.alerts.raise_alert(alert(fleet_a))
    await first.run_pass()
    await until(lambda: first.in_flight == 1, "the request in flight")
    await first.stop(grace_s=0.05)
    await first_store.close()
    receiver.hold.set()

    second_store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await second_store.start()
    second = WebhookService(second_store, clock=clock, allow_private=True, request_timeout_s=5.0)
    try:
        await one_pass(second)
        assert len(receiver.requests) == 1  # still leased: not sent again yet
        clock.advance_to(clock.ms + 5_000 + 30_000)
        await one_pass(second)
        # The cut attempt may have reached the receiver: sent again, under the same id, so
        # the receiver can tell it is the same delivery.
        cut, retried = receiver.requests
        assert cut.webhook_id == retried.webhook_id and cut.body == retried.body
        assert retried.verified is not None
        (stored,) = (await second_store.webhooks.deliveries(fleet_a.id, hook["id"])).items
        assert stored.id == retried.webhook_id
        # The cut attempt never reported: one recorded attempt, delivered.
        assert (stored.status, stored.attempts) == (DeliveryStatus.DELIVERED, 1)
        await one_pass(second)
        assert len(receiver.requests) == 2
    finally:
        await second.stop()
        await second_store.close()


async def test_retries_span_24_hours_then_fail(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    service: WebhookService,
    clock: FakeClock,
) -> None:
    hook = await add_webhook(client, fleet_a, receiver)
    receiver.answers = [500] * 100
    await store.alerts.raise_alert(alert(fleet_a))
    started = clock.ms
    delays: list[int] = []
    for _ in range(MAX_ATTEMPTS + 2):
        await one_pass(service)
        (d,) = (await store.webhooks.deliveries(fleet_a.id, hook["id"])).items
        if d.next_attempt_ms is None:
            break
        assert d.last_attempt_ms is not None
        delays.append(d.next_attempt_ms - d.last_attempt_ms)
        clock.advance_to(d.next_attempt_ms)
    assert d.status is DeliveryStatus.FAILED
    assert d.attempts == MAX_ATTEMPTS == len(receiver.requests)
    assert d.last_attempt_ms is not None and d.last_attempt_ms - started >= DAY_MS
    # Exponential, jittered, capped.
    for delay, nominal in zip(delays, RETRY_DELAYS_S, strict=True):
        assert nominal * 1000 * (1 - JITTER) <= delay <= nominal * 1000 * (1 + JITTER)
    assert len(set(delays)) == len(delays)
    (listed,) = await deliveries(client, fleet_a, hook)
    assert (listed["status"], listed["next_attempt_at"]) == ("failed", None)


def test_retry_schedule_covers_24_hours_at_its_shortest() -> None:
    shortest = sum(RETRY_DELAYS_S) * (1 - JITTER)
    assert shortest >= 24 * 3600
    assert list(RETRY_DELAYS_S) == sorted(RETRY_DELAYS_S)
    assert max(RETRY_DELAYS_S) == MAX_DELAY_S == 8 * 3600
    rng = random.Random(3)
    assert retry_delay_ms(0, rng) is None and retry_delay_ms(MAX_ATTEMPTS, rng) is None
    # A receiver's Retry-After asking for longer is honoured, up to the cap.
    assert retry_delay_ms(1, rng, retry_after_s=120) == 120_000
    assert retry_delay_ms(1, rng, retry_after_s=10**6) == MAX_DELAY_S * 1000
    assert parse_retry_after("120", 0) == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30_000) == 30.0
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None


async def test_payload_is_frozen_when_queued(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    service: WebhookService,
    clock: FakeClock,
) -> None:
    """An alert raised then cleared: two deliveries, each with the alert as it was then, even
    when the first is only delivered after the clearing."""
    await add_webhook(client, fleet_a, receiver)
    receiver.answers = [500]
    raised = await store.alerts.raise_alert(alert(fleet_a))
    await one_pass(service)
    await store.alerts.clear(fleet_a.id, raised.id, by="key:x", at_ms=now_ms())
    clock.advance_to(clock.ms + 60_000)
    await one_pass(service)
    sent = [r.verified for r in receiver.requests if r.status == 200]
    assert sorted(p["data"]["open"] for p in sent) == [False, True]
    by_open = {p["data"]["open"]: p for p in sent}
    assert by_open[True]["data"]["cleared_at"] is None
    assert by_open[False]["data"]["cleared_at"] is not None


async def test_kinds_filter_and_disabled_webhook(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    service: WebhookService,
) -> None:
    commands_only = Receiver()
    await commands_only.start()
    try:
        await add_webhook(client, fleet_a, commands_only, kinds=["command"])
        hook = await add_webhook(client, fleet_a, receiver)
        url = f"/v1/webhooks/{hook['id']}"
        r = await client.patch(url, json={"enabled": False}, headers=fleet_a.h("admin"))
        assert r.status_code == 200
        await store.alerts.raise_alert(alert(fleet_a, "while off"))
        await one_pass(service)
        assert receiver.requests == [] and commands_only.requests == []
        # Enabled again: from now on, not what was stored while it was off.
        r = await client.patch(url, json={"enabled": True}, headers=fleet_a.h("admin"))
        await one_pass(service)
        assert receiver.requests == []
        await store.alerts.raise_alert(alert(fleet_a, "after"))
        await one_pass(service)
        assert [r.verified["data"]["detail"] for r in receiver.requests] == ["after"]
        assert commands_only.requests == []
    finally:
        await commands_only.stop()


async def test_410_gone_disables_the_webhook(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    service: WebhookService,
) -> None:
    hook = await add_webhook(client, fleet_a, receiver)
    receiver.answers = [410]
    await store.alerts.raise_alert(alert(fleet_a))
    await one_pass(service)
    (d,) = await deliveries(client, fleet_a, hook)
    assert (d["status"], d["last_status_code"]) == ("failed", 410)
    r = await client.get(f"/v1/webhooks/{hook['id']}", headers=fleet_a.h("viewer"))
    status = r.json()["status"]
    assert (r.json()["enabled"], status["state"]) == (False, "disabled")
    assert "410" in status["disabled_reason"]
    await store.alerts.raise_alert(alert(fleet_a))
    await one_pass(service)
    assert len(receiver.requests) == 1


async def test_slow_receiver_does_not_hold_up_other_webhooks(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    slow = Receiver()
    await slow.start()
    service = WebhookService(
        store, clock=clock, allow_private=True, per_endpoint_in_flight=2, request_timeout_s=5.0
    )
    try:
        await add_webhook(client, fleet_a, slow)
        await add_webhook(client, fleet_a, receiver)
        slow.hold.clear()
        for i in range(5):
            await store.alerts.raise_alert(alert(fleet_a, f"n{i}"))

        async def fast_done() -> bool:
            await service.run_pass()  # two at a time for each, as its slots free up
            return len(receiver.delivered()) == 5

        await until(fast_done, "the fast receiver's deliveries")
        await until(lambda: service.in_flight == 2, "the fast receiver's attempts recorded")
        assert len(slow.requests) == 2  # the slow one's two slots, no more
        slow.hold.set()
        for _ in range(3):
            await one_pass(service)
        assert len(slow.delivered()) == 5
    finally:
        slow.hold.set()
        await service.stop(grace_s=0.5)
        await slow.stop()


async def test_private_address_refused_at_delivery(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    """A public-looking name that resolves to a private address (DNS rebinding, an internal
    record) is refused before any connection, and retried later like any failure."""
    r = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/in"},
        headers=fleet_a.h("admin"),
    )
    hook = r.json()
    looked_up: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        looked_up.append(f"{host}:{port}")
        return ["93.184.215.14", "10.0.0.7"]

    service = WebhookService(store, clock=clock, allow_private=False, resolver=resolver)
    try:
        await store.alerts.raise_alert(alert(fleet_a))
        await one_pass(service)
    finally:
        await service.stop()
    assert looked_up == ["hooks.example.com:443"]
    (d,) = await deliveries(client, fleet_a, hook)
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("pending", 1, None)
    assert "10.0.0.7" in d["last_error"] and "private" in d["last_error"]


async def test_numeric_host_forms_resolve_and_are_refused(
    client: httpx.AsyncClient, store: Store, fleet_a: FleetFixture, clock: FakeClock
) -> None:
    # "0x7f.1" passes as a host name but the system resolver reads it as 127.0.0.1.
    r = await client.post(
        "/v1/webhooks", json={"url": "http://0x7f.1:9/x"}, headers=fleet_a.h("admin")
    )
    hook = r.json()
    service = WebhookService(store, clock=clock, allow_private=False, request_timeout_s=2.0)
    try:
        await store.alerts.raise_alert(alert(fleet_a))
        await one_pass(service)
    finally:
        await service.stop()
    (d,) = await deliveries(client, fleet_a, hook)
    assert d["last_error"].startswith("refused:"), d["last_error"]


async def test_expired_stream_cursor_is_a_data_gap(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    service: WebhookService,
) -> None:
    """The service was away longer than the stream's retention: the webhook says what it
    missed and goes on with what comes next."""
    hook = await add_webhook(client, fleet_a, receiver)
    await store.alerts.raise_alert(alert(fleet_a, "lost"))
    await store.stream.prune(now_ms() + 1)  # the retention window passed
    await one_pass(service)
    assert receiver.requests == []
    r = await client.get(f"/v1/webhooks/{hook['id']}", headers=fleet_a.h("viewer"))
    gap = r.json()["status"]["data_gap"]
    assert gap is not None and gap["after_cursor"] == hook["status"]["cursor"]
    assert gap["resumed_cursor"] > gap["after_cursor"]
    assert service.counters.data_gaps == 1
    await store.alerts.raise_alert(alert(fleet_a, "after the gap"))
    await one_pass(service)
    assert [r.verified["data"]["detail"] for r in receiver.requests] == ["after the gap"]


async def test_two_services_share_the_work_without_repeats(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    """Two gp8 processes run the service over one database: every delivery is sent once."""
    await add_webhook(client, fleet_a, receiver)
    services = [WebhookService(store, clock=clock, allow_private=True) for _ in range(2)]
    try:
        for i in range(6):
            await store.alerts.raise_alert(alert(fleet_a, f"a{i}"))
        await asyncio.gather(*(s.run_pass() for s in services))
        await asyncio.gather(*(s.wait_idle() for s in services))
        await asyncio.gather(*(one_pass(s) for s in services))
    finally:
        for s in services:
            await s.stop()
    ids = [r.webhook_id for r in receiver.requests]
    assert len(ids) == 6 == len(set(ids))
    details = sorted(r.verified["data"]["detail"] for r in receiver.requests)
    assert details == [f"a{i}" for i in range(6)]


async def test_deleted_webhook_gets_nothing_more(
    client: httpx.AsyncClient,
    store: Store,
    fleet_a: FleetFixture,
    receiver: Receiver,
    service: WebhookService,
) -> None:
    hook = await add_webhook(client, fleet_a, receiver)
    receiver.answers = [500]
    await store.alerts.raise_alert(alert(fleet_a))
    await one_pass(service)
    r = await client.delete(f"/v1/webhooks/{hook['id']}", headers=fleet_a.h("admin"))
    assert r.status_code == 204
    await store.alerts.raise_alert(alert(fleet_a))
    await one_pass(service)
    assert len(receiver.requests) == 1
    assert await store.webhooks.due(hook["id"], 2**62) == []


async def test_retry_and_delivery_on_the_mongo_engine(receiver: Receiver) -> None:
    """The same path on the MongoDB engine (the in-memory fake): queued, failed, retried,
    delivered once."""
    from pymongo_async_mock import AsyncMongoMockClient

    from api.webhooks.endpoints import create_webhook
    from storage.mongo import MongoStore

    mongo = MongoStore(AsyncMongoMockClient(), "gp8_webhooks_test")
    await mongo.start()
    clock = FakeClock()
    service = WebhookService(mongo, clock=clock, allow_private=True, rng=random.Random(5))
    try:
        fleet = await mongo.fleets.create("mongo fleet")
        hook = await create_webhook(
            mongo, fleet.id, url=receiver.url, kinds=[StreamKind.ALERT], now_ms=clock.ms
        )
        receiver.secret = hook.secret
        receiver.answers = [502]
        raised = await mongo.alerts.raise_alert(
            Alert(id=new_id("alr"), fleet_id=fleet.id, kind=AlertKind.TOWING, raised_ms=now_ms())
        )
        await one_pass(service)
        clock.advance_to(clock.ms + 60_000)
        await one_pass(service)
        await one_pass(service)
        assert [r.status for r in receiver.requests] == [502, 200]
        assert receiver.requests[1].verified["data"]["id"] == raised.id
        (d,) = (await mongo.webhooks.deliveries(fleet.id, hook.id)).items
        assert (d.status, d.attempts, d.id) == (
            DeliveryStatus.DELIVERED,
            2,
            receiver.requests[1].webhook_id,
        )
    finally:
        await service.stop()
        await mongo.close()


@pytest.mark.slow
async def test_gp8_serve_delivers_and_survives_its_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A real `gp8 serve` (API and delivery service): a webhook created over HTTP, an alert
    whose first attempt fails, gp8 stopped and started again on the same SQLite file: the
    retry is made by the new process, and delivered once."""
    from gp8.serve import start_services, stop_services
    from gp8.settings import Settings

    settings = Settings(
        data_dir=tmp_path,
        log_level="warning",
        bootstrap_key=OPERATOR_KEY,
        tcp={"host": "127.0.0.1", "port": 0},
        api={"host": "127.0.0.1", "port": 0},
        webhooks={"allow_private": True, "poll_interval_s": 0.05, "request_timeout_s": 5},
    )
    run = await start_services(settings)
    try:
        base = f"http://127.0.0.1:{run.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=DEADLINE_S) as http:
            fleet = await create_fleet(http, "serve", VALID_VINS[3], VALID_IMEIS[3])
            hook = await add_webhook(http, fleet, receiver)
            receiver.answers = [500]
            await run.store.alerts.raise_alert(alert(fleet, "while restarting"))
            await until(lambda: len(receiver.requests) == 1, "the first attempt")
            await until(lambda: run.webhooks.counters.failed_attempts == 1, "the failure recorded")
    finally:
        await stop_services(run)

    run = await start_services(settings)
    try:
        base = f"http://127.0.0.1:{run.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=DEADLINE_S) as http:
            # The retry is due about 5 s after the first attempt.
            await until(lambda: len(receiver.requests) == 2, "the retry after the restart")
            first, retry = receiver.requests
            assert (first.status, retry.status) == (500, 200)
            assert first.webhook_id == retry.webhook_id and retry.verified is not None
            assert retry.verified["data"]["detail"] == "while restarting"

            async def recorded() -> bool:
                return (await deliveries(http, fleet, hook))[0]["status"] == "delivered"

            await until(recorded, "the delivery recorded")
            r = await http.get("/health")
            assert r.json()["webhooks"]["status"] == "ok"
    finally:
        await stop_services(run)
    assert len(receiver.requests) == 2
