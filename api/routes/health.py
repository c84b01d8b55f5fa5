"""Liveness (GET /health: the process answers, and what each component reports) and readiness
(GET /ready: every component traffic depends on works now). A load balancer or an orchestrator
sends traffic only to a ready process and restarts only a dead one: a broker outage makes gp8
unready, never dead (the bridge reconnects by itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

from fastapi import APIRouter, Request

from api.deps import StoreDep
from api.problems import ApiProblem, problem_responses
from api.schemas.health import HealthPublic, ReadyPublic
from storage.errors import StorageError
from storage.repository import Store

router = APIRouter(tags=["health"])

# One readiness check: None when the component is ready, else why not (one short line).
ReadyCheck = Callable[[], Awaitable[str | None]]
# A probe slower than this counts as failing: readiness answers quickly or not at all.
READY_TIMEOUT_S = 2.0


class Link(Protocol):
    """What readiness needs of a connection gp8 keeps up (the MQTT bridge's broker link)."""

    @property
    def connected(self) -> bool: ...


def link_check(link: Link, what: str) -> ReadyCheck:
    """Ready while ``link`` is connected; ``what`` names it in the reason."""

    async def check() -> str | None:
        return None if link.connected else f"{what} not connected"

    return check


async def storage_writable(store: Store) -> str | None:
    """Storage takes writes now: one write transaction that changes nothing.

    Pruning the live-stream log of entries older than the epoch matches no entry, but takes
    the write path all the same (SQLite's write lock and writer, a MongoDB primary), so a
    read-only file, a full writer queue or a lost primary show here, not only at the next
    flush of box records.
    """
    try:
        await store.stream.prune(0)
    except StorageError as exc:
        return f"not writable: {exc}"
    return None


@router.get("/health", response_model=HealthPublic, responses=problem_responses(503, 500))
async def get_health(request: Request, store: StoreDep) -> dict[str, Any]:
    """The service's state and each component's; 503 when storage is down. No key needed."""
    extra = cast(Callable[[], Awaitable[dict[str, Any]]] | None, request.app.state.health)
    components = await extra() if extra is not None else {}
    return {"status": "ok", "storage": await store.health(), **components}


@router.get(
    "/ready",
    response_model=ReadyPublic,
    response_model_exclude_none=True,  # a component that is ok has no reason
    responses=problem_responses(503, 500),
)
async def get_ready(request: Request, store: StoreDep) -> dict[str, Any]:
    """Whether to send traffic here: storage writable, the broker connected when MQTT is
    configured; 503 naming the failing components otherwise. No key needed."""
    checks: dict[str, ReadyCheck] = {"storage": lambda: storage_writable(store)}
    checks.update(cast(Mapping[str, ReadyCheck], request.app.state.readiness))
    reasons = await asyncio.gather(*(_bounded(check) for check in checks.values()))
    components = {
        name: {"status": "ok"} if reason is None else {"status": "failing", "reason": reason}
        for name, reason in zip(checks, reasons, strict=True)
    }
    failing = [name for name, reason in zip(checks, reasons, strict=True) if reason is not None]
    if failing:
        raise ApiProblem(
            503,
            f"not ready: {', '.join(failing)}",
            type_="urn:gp8:problem:not-ready",
            components=components,
        )
    return {"status": "ready", "components": components}


async def _bounded(check: ReadyCheck) -> str | None:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            return await check()
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_S:g} s"
