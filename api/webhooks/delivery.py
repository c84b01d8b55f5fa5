"""The webhook delivery service (docs/alerts.md, "Webhooks").

Each pass: for every enabled webhook, read its fleet's stream (`store.stream`) after the
webhook's cursor, turn each entry of a subscribed kind into a delivery whose payload is frozen
now, and store those deliveries together with the new cursor (`WebhookRepo.enqueue`); then
claim the deliveries that are due and POST each, signed per Standard Webhooks, recording the
outcome: 2xx delivered, anything else retried on the schedule of `schedule.py`, then failed.

State lives in the database, not in this process: the cursor moves only with the deliveries it
covers, a delivery is claimed for one attempt with a lease (`claim`), and every attempt is
recorded (`record`). So a restart neither loses nor repeats a delivery, and several gp8
processes may run the service side by side: each due delivery is taken by one of them. Only an
attempt whose process died before recording it is made again once its lease runs out, with
the same ``webhook-id``, which receivers use to drop duplicates.

Isolation: the service only reads the stream and writes its own tables, so ingestion never
waits for it; at most ``max_in_flight`` requests run at once and ``per_endpoint_in_flight``
per webhook, each bounded by ``request_timeout_s``, so a slow or dead receiver holds only its
own slots. A stream cursor older than the stream's retention (the service was stopped for
longer than that) is recorded on the webhook as a data gap and the webhook resumes from the
oldest entry still kept; the service never stops over one webhook's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from api.services.resources import render
from api.stream.hub import EntryFilter
from api.times import iso_ms
from api.webhooks.schedule import parse_retry_after, retry_delay_ms
from api.webhooks.signing import signature_headers
from api.webhooks.targets import Resolver, TargetRefused, resolve_target, system_resolver
from commands.clock import SYSTEM_CLOCK, Clock
from storage.errors import CursorExpired
from storage.models import (
    DeliveryStatus,
    StreamEntry,
    WebhookDelivery,
    WebhookEndpoint,
    new_id,
)
from storage.repository import Store

log = logging.getLogger(__name__)

USER_AGENT = "gp8-webhooks/1"
# Stream entries read per request, and requests per webhook per pass: a webhook with a long
# backlog catches up over several passes instead of holding the others up.
FOLLOW_PAGE = 500
FOLLOW_PAGES_PER_PASS = 20
# A claimed delivery is due again this long after its request's time limit, should the attempt
# never be recorded (its process died).
LEASE_MARGIN_MS = 30_000
# Finished deliveries are listed for this long, then dropped; pruned once an hour.
DELIVERY_RETENTION_MS = 7 * 24 * 3600 * 1000
PRUNE_EVERY_MS = 3600 * 1000
# What is kept of an error message.
MAX_ERROR_CHARS = 300
# A pass costs two queries per webhook: at most one every this long.
MIN_PASS_GAP_S = 0.05
# How long stop() lets requests in flight finish before cancelling them.
STOP_GRACE_S = 5.0


def payload_of(entry: StreamEntry) -> str:
    """The body sent for ``entry``: ``{"type", "timestamp", "data"}``, ``data`` as the REST API
    shows the resource, ``timestamp`` when it was stored."""
    body = {
        "type": entry.kind.value,
        "timestamp": iso_ms(entry.created_ms),
        "data": render(entry.kind, entry.item),
    }
    return orjson.dumps(body).decode()


@dataclass
class WebhookCounters:
    queued: int = 0  # deliveries created from the stream
    delivered: int = 0
    failed_attempts: int = 0  # attempts answered other than 2xx, or not answered
    given_up: int = 0  # deliveries marked failed
    data_gaps: int = 0
    errors: int = 0  # passes over one webhook that failed (storage down, a bug)


@dataclass(frozen=True, slots=True)
class _Outcome:
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookService:
    """Delivers every fleet's webhooks; `start` runs passes in the background until `stop`.

    Tests drive it with `run_pass` and `wait_idle`, and an injected ``clock`` to move through
    the retry schedule without waiting.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = SYSTEM_CLOCK,
        allow_private: bool = False,
        poll_interval_s: float = 0.5,
        request_timeout_s: float = 15.0,
        max_in_flight: int = 32,
        per_endpoint_in_flight: int = 4,
        resolver: Resolver = system_resolver,
        rng: random.Random | None = None,
        privacy: EntryFilter | None = None,
    ) -> None:
        """``privacy`` drops what a webhook must not carry (positions and events in privacy
        mode: api/services/privacy.py EntryPrivacy), as the live stream does."""
        if max_in_flight < 1 or per_endpoint_in_flight < 1:
            raise ValueError("in-flight limits must be at least 1")
        self._store = store
        self._clock = clock
        self._allow_private = allow_private
        self._poll_interval_s = poll_interval_s
        self._timeout_s = request_timeout_s
        self._max_in_flight = max_in_flight
        self._per_endpoint = per_endpoint_in_flight
        self._resolver = resolver
        self._rng = rng or random.Random()
        self._privacy = privacy
        self._lease_ms = round(request_timeout_s * 1000) + LEASE_MARGIN_MS
        self._in_flight: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        # One client per webhook: its connections go to that webhook's checked address only.
        self._clients: dict[str, tuple[str, httpx.AsyncClient]] = {}
        self._retired: list[tuple[str, httpx.AsyncClient]] = []  # closed once idle
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._rotation = 0
        self._next_prune_ms = 0
        self.counters = WebhookCounters()

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._in_flight.values())

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gp8-webhooks")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop passing; give requests in flight ``grace_s`` to finish, then cancel them (their
        deliveries are tried again once their lease runs out)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        tasks = [t for group in self._in_flight.values() for t in group]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for client in [c for _, c in self._clients.values()] + [c for _, c in self._retired]:
            await client.aclose()
        self._clients.clear()
        self._retired.clear()

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Wait until no attempt is in flight (for tests and a graceful stop)."""
        async with asyncio.timeout(timeout_s):
            while tasks := [t for group in self._in_flight.values() for t in group]:
                await asyncio.wait(tasks)

    def health(self) -> dict[str, Any]:
        running = self._task is not None and not self._task.done()
        return {
            "status": "ok" if running else "stopped",
            "in_flight": self.in_flight,
            **dataclasses.asdict(self.counters),
        }

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_pass()
            except Exception:  # the service must outlive any one failure (storage down, ...)
                self.counters.errors += 1
                log.exception("webhook delivery pass failed")
            # Woken early when an attempt ends: its webhook may have more due deliveries; but
            # never more often than every MIN_PASS_GAP_S, however many attempts end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await self._wake.wait()
                    await asyncio.sleep(min(MIN_PASS_GAP_S, self._poll_interval_s))

    async def run_pass(self) -> None:
        """Queue what the streams hold for every enabled webhook, then start the attempts
        that are due (without waiting for them: see `wait_idle`)."""
        endpoints = await self._store.webhooks.active()
        await self._retire_clients(endpoints)
        for endpoint in endpoints:
            try:
                await self._follow(endpoint)
            except Exception:
                self.counters.errors += 1
                log.exception("webhook %s: reading the stream failed", endpoint.id)
        # A different webhook first at each pass, so none has the global slots to itself.
        if endpoints:
            self._rotation = (self._rotation + 1) % len(endpoints)
            endpoints = endpoints[self._rotation :] + endpoints[: self._rotation]
        for endpoint in endpoints:
            try:
                await self._dispatch(endpoint)
            except Exception:
                self.counters.errors += 1
                log.exception("webhook %s: starting its attempts failed", endpoint.id)
        await self._prune()

    # --- the stream -> deliveries ---------------------------------------------------------

    async def _follow(self, endpoint: WebhookEndpoint) -> None:
        cursor = endpoint.cursor
        for _ in range(FOLLOW_PAGES_PER_PASS):
            try:
                page = await self._store.stream.after(
                    endpoint.fleet_id, cursor, kinds=endpoint.kinds, limit=FOLLOW_PAGE
                )
            except CursorExpired as exc:
                if not await self._store.webhooks.skip_gap(
                    endpoint.id, after=cursor, cursor=exc.horizon, at_ms=self._clock.now_ms()
                ):
                    return  # another process moved the cursor meanwhile
                self.counters.data_gaps += 1
                log.warning(
                    "webhook %s: stream entries after cursor %d were pruned before they could"
                    " be queued; going on from %d (a data gap, shown on the webhook)",
                    endpoint.id,
                    cursor,
                    exc.horizon,
                )
                cursor = exc.horizon
                continue
            if page.cursor == cursor:
                return  # caught up
            now = self._clock.now_ms()
            entries = page.entries
            if self._privacy is not None:
                entries = await self._privacy(endpoint.fleet_id, list(entries))
            deliveries = [d for d in (self._delivery(endpoint, e, now) for e in entries) if d]
            if not await self._store.webhooks.enqueue(
                endpoint.id, after=cursor, cursor=page.cursor, deliveries=deliveries
            ):
                return  # moved, disabled or deleted meanwhile: the next pass reads it again
            self.counters.queued += len(deliveries)
            cursor = page.cursor

    def _delivery(
        self, endpoint: WebhookEndpoint, entry: StreamEntry, now_ms: int
    ) -> WebhookDelivery | None:
        try:
            payload = payload_of(entry)
        except Exception:  # a kind with no REST representation: a bug, not a reason to stall
            self.counters.errors += 1
            log.exception("webhook %s: cannot render stream entry %d", endpoint.id, entry.cursor)
            return None
        return WebhookDelivery(
            id=new_id("msg"),
            fleet_id=endpoint.fleet_id,
            webhook_id=endpoint.id,
            cursor=entry.cursor,
            kind=entry.kind,
            payload=payload,
            created_ms=now_ms,
            updated_ms=now_ms,
            next_attempt_ms=now_ms,
        )

    # --- attempts ---------------------------------------------------------------------------

    async def _dispatch(self, endpoint: WebhookEndpoint) -> None:
        free = min(
            self._per_endpoint - len(self._in_flight.get(endpoint.id, ())),
            self._max_in_flight - self.in_flight,
        )
        if free <= 0:
            return
        now = self._clock.now_ms()
        for delivery in await self._store.webhooks.due(endpoint.id, now, limit=free):
            assert delivery.next_attempt_ms is not None  # due() returns pending deliveries
            if not await self._store.webhooks.claim(
                delivery.id, due_ms=delivery.next_attempt_ms, until_ms=now + self._lease_ms
            ):
                continue  # another process took it
            task = asyncio.create_task(self._attempt(endpoint, delivery))
            self._in_flight[endpoint.id].add(task)
            task.add_done_callback(functools.partial(self._finished, endpoint.id))

    def _finished(self, webhook_id: str, task: asyncio.Task[None]) -> None:
        group = self._in_flight.get(webhook_id)
        if group is not None:
            group.discard(task)
            if not group:
                del self._in_flight[webhook_id]
        self._wake.set()

    async def _attempt(self, endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> None:
        try:
            at_ms = self._clock.now_ms()
            outcome = await self._send(endpoint, delivery, at_ms)
            await self._record(endpoint, delivery, at_ms, outcome)
        except Exception:
            # Left claimed: due again when its lease runs out.
            self.counters.errors += 1
            log.exception("webhook %s: delivery %s failed unexpectedly", endpoint.id, delivery.id)

    async def _record(
        self, endpoint: WebhookEndpoint, delivery: WebhookDelivery, at_ms: int, outcome: _Outcome
    ) -> None:
        now = self._clock.now_ms()
        next_ms: int | None = None
        if outcome.ok:
            status = DeliveryStatus.DELIVERED
            self.counters.delivered += 1
        else:
            self.counters.failed_attempts += 1
            delay = retry_delay_ms(
                delivery.attempts + 1, self._rng, retry_after_s=outcome.retry_after_s
            )
            # 410 Gone: the receiver asks for no more (Standard Webhooks); the webhook is
            # disabled below, and this delivery is not tried again.
            if outcome.status_code == 410 or delay is None:
                status = DeliveryStatus.FAILED
                self.counters.given_up += 1
            else:
                status = DeliveryStatus.PENDING
                next_ms = now + delay
        await self._store.webhooks.record(
            delivery.id,
            at_ms=at_ms,
            status=status,
            next_attempt_ms=next_ms,
            status_code=outcome.status_code,
            error=outcome.error,
        )
        if outcome.status_code == 410:
            await self._store.webhooks.update(
                endpoint.fleet_id,
                endpoint.id,
                at_ms=now,
                enabled=False,
                disabled_reason=f"the receiver answered 410 Gone at {iso_ms(now)}",
            )
            log.warning("webhook %s disabled: its receiver answered 410 Gone", endpoint.id)

    async def _send(
        self, endpoint: WebhookEndpoint, delivery: WebhookDelivery, at_ms: int
    ) -> _Outcome:
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signature_headers(endpoint.secret, delivery.id, at_ms, delivery.payload),
        }
        try:
            # One bound for the whole attempt: name resolution, connection, request, answer.
            async with asyncio.timeout(self._timeout_s):
                target = await resolve_target(
                    endpoint.url,
                    allow_private=self._allow_private,
                    resolver=self._resolver,
                    timeout_s=self._timeout_s,
                )
                client = self._client(endpoint)
                request = client.build_request(
                    "POST",
                    target.url,
                    content=delivery.payload.encode(),
                    headers={**headers, "host": target.host},
                    extensions=target.extensions,
                )
                # stream=True and no read: a receiver's answer body is never downloaded.
                response = await client.send(request, stream=True)
                await response.aclose()
        except TargetRefused as exc:
            return _Outcome(error=_short(f"refused: {exc}"))
        except TimeoutError:
            return _Outcome(error=f"no answer within {self._timeout_s:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(error=_short(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)))
        except OSError as exc:
            return _Outcome(error=_short(f"{type(exc).__name__}: {exc}"))
        code = response.status_code
        if 200 <= code < 300:
            return _Outcome(status_code=code)
        error = f"HTTP {code}"
        if 300 <= code < 400:
            error += " (redirects are not followed: give the webhook its final URL)"
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock.now_ms())
        return _Outcome(status_code=code, error=error, retry_after_s=retry_after)

    def _client(self, endpoint: WebhookEndpoint) -> httpx.AsyncClient:
        known = self._clients.get(endpoint.id)
        if known is not None and known[0] == endpoint.url:
            return known[1]
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout_s),
            follow_redirects=False,
            # No proxy from the environment: the address check above must be the last word.
            trust_env=False,
            limits=httpx.Limits(
                max_connections=self._per_endpoint, max_keepalive_connections=self._per_endpoint
            ),
        )
        if known is not None:  # its URL changed: the old client goes once its requests end
            self._retired.append((endpoint.id, known[1]))
        self._clients[endpoint.id] = (endpoint.url, client)
        return client

    async def _retire_clients(self, endpoints: list[WebhookEndpoint]) -> None:
        """Close the clients of webhooks gone or disabled, once no request of theirs runs."""
        live = {e.id for e in endpoints}
        for webhook_id in [w for w in self._clients if w not in live]:
            self._retired.append((webhook_id, self._clients.pop(webhook_id)[1]))
        idle = [(w, c) for w, c in self._retired if w not in self._in_flight]
        self._retired = [(w, c) for w, c in self._retired if w in self._in_flight]
        for _, client in idle:
            await client.aclose()

    async def _prune(self) -> None:
        now = self._clock.now_ms()
        if now < self._next_prune_ms:
            return
        self._next_prune_ms = now + PRUNE_EVERY_MS
        dropped = await self._store.webhooks.prune(now - DELIVERY_RETENTION_MS)
        if dropped:
            log.info("dropped %d finished webhook deliveries older than 7 days", dropped)


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
