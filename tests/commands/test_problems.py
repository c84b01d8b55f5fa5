"""The API's one handler for the command service's refusals: each class answers its RFC 9457
problem (status, type, title, detail, extra members, headers), found along the class hierarchy,
so the routes hold no translation code. A tiny app per test, no service behind it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.problems import install_handlers
from commands.errors import (
    CommandError,
    CommandRefused,
    EngineStartCapReached,
    IdempotencyMismatch,
    ImmobilizationSuspended,
    InvalidCommand,
    NoBoxFitted,
    NotAllowed,
    VehicleFrozen,
    WrongState,
)


class NewRefusal(CommandRefused):
    """A rule added later, with no row of its own."""


class NewInvalid(InvalidCommand):
    """A validation added later."""


P = "urn:gp8:problem:"
# (error raised, status, type, extra members, headers)
CASES: list[tuple[CommandError, int, str, dict[str, Any], dict[str, str]]] = [
    (NotAllowed("no"), 403, P + "forbidden", {}, {}),
    (InvalidCommand("bad"), 422, P + "validation", {}, {}),
    (IdempotencyMismatch("other"), 422, P + "idempotency-key-reused", {}, {}),
    (VehicleFrozen("frozen", ["alr_1"]), 409, P + "duplicate-box", {"alert_ids": ["alr_1"]}, {}),
    (ImmobilizationSuspended("off"), 409, P + "immobilization-suspended", {}, {}),
    (NoBoxFitted("none"), 409, P + "no-box-fitted", {}, {}),
    (WrongState("late"), 409, P + "command-state", {}, {}),
    (EngineStartCapReached("cap", 61), 429, P + "engine-start-cap", {}, {"retry-after": "61"}),
    (NewRefusal("new"), 409, P + "command-refused", {}, {}),
    (NewInvalid("new"), 422, P + "validation", {}, {}),
    (CommandError("bare"), 409, P + "command-refused", {}, {}),
]


@pytest.mark.parametrize(("error", "status", "type_", "extra", "headers"), CASES)
async def test_a_refusal_answers_its_problem(
    error: CommandError, status: int, type_: str, extra: dict[str, Any], headers: dict[str, str]
) -> None:
    app = FastAPI()
    install_handlers(app)

    @app.post("/v1/refuse")
    async def refuse() -> None:
        raise error

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post("/v1/refuse")
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": type_,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": str(error),
        "instance": "/v1/refuse",
        **extra,
    }
    for name, value in headers.items():
        assert r.headers[name] == value
