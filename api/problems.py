"""RFC 9457 problem details: the one shape of every error the API returns.

Handlers here are the boundary where HTTP, validation, storage and command-service exceptions
become responses; nothing else in `api/` builds an error body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commands.errors import (
    CommandError,
    EngineStartCapReached,
    IdempotencyMismatch,
    ImmobilizationSuspended,
    InvalidCommand,
    NoBoxFitted,
    NotAllowed,
    VehicleFrozen,
    WrongState,
)
from storage.errors import Conflict, InvalidCursor, NotFound, StorageError, StorageUnavailable

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# How long a client should wait before retrying when the database is unreachable: long enough
# for a replica set election (typically < 12 s) not to be hammered, short enough for a demo.
STORAGE_RETRY_AFTER_S = 5


class ValidationIssue(BaseModel):
    """One reason a request was rejected, located in the request."""

    loc: list[str | int] = Field(description='Where: ["body", "vin"], ["query", "from"], ...')
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="URI identifying the problem type")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path")
    errors: list[ValidationIssue] | None = Field(
        default=None, description="Validation problems, one per invalid input"
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class ApiProblem(HTTPException):
    """An HTTPException with an RFC 9457 ``type`` and extra members."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        type_: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.type = type_
        self.extra = extra


def problem_response(
    request: Request | None,
    status: int,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": _title(status),
        "status": status,
        "detail": detail,
        "instance": request.url.path if request is not None else None,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _http_exception(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != _title(exc.status_code) else None
    if isinstance(exc, ApiProblem):
        return problem_response(
            request, exc.status_code, detail, type_=exc.type, headers=exc.headers, **exc.extra
        )
    return problem_response(request, exc.status_code, detail, headers=exc.headers)


def _issue(error: Mapping[str, Any]) -> dict[str, Any]:
    msg = str(error.get("msg", "invalid"))
    # Pydantic prefixes messages of our own validators; the client only needs the reason.
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error.get("type") == "json_invalid":
        ctx = error.get("ctx") or {}
        msg = f"malformed JSON: {ctx.get('error', 'cannot be decoded')}"
    loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
    return {"loc": loc, "msg": msg, "type": str(error.get("type", "value_error"))}


def describe(issues: Sequence[Mapping[str, Any]]) -> str:
    """A one-line summary of validation issues for ``detail``."""
    parts = []
    for issue in issues[:5]:
        where = ".".join(str(p) for p in issue["loc"])
        parts.append(f"{where}: {issue['msg']}" if where else issue["msg"])
    more = f" (and {len(issues) - 5} more)" if len(issues) > 5 else ""
    return "; ".join(parts) + more


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    issues = [_issue(error) for error in raw]
    if any(error.get("type") == "json_invalid" for error in raw):
        # Not JSON at all is a malformed request, not a semantically invalid one.
        status = 400
        type_ = "urn:gp8:problem:malformed-json"
    elif any(
        tuple(error.get("loc", ())) == ("body",) and isinstance(error.get("input"), bytes)
        for error in raw
    ):
        # FastAPI hands the raw bytes over when the Content-Type is not JSON.
        return problem_response(
            request,
            415,
            "the request body must be JSON with Content-Type: application/json",
            type_="urn:gp8:problem:unsupported-media-type",
        )
    else:
        status = 422
        type_ = "urn:gp8:problem:validation"
    return problem_response(request, status, describe(issues), type_=type_, errors=issues)


async def _not_found(request: Request, exc: Exception) -> ProblemResponse:
    return problem_response(request, 404, str(exc) or "not found")


async def _conflict(request: Request, exc: Exception) -> ProblemResponse:
    detail = str(exc) or "conflicts with an existing record"
    return problem_response(request, 409, detail, type_="urn:gp8:problem:conflict")


async def _invalid_cursor(request: Request, exc: Exception) -> ProblemResponse:
    return problem_response(
        request,
        400,
        "invalid cursor: pass the next_cursor of a previous page unchanged",
        type_="urn:gp8:problem:invalid-cursor",
    )


async def _unavailable(request: Request, exc: Exception) -> ProblemResponse:
    logger.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request,
        503,
        "storage is unavailable; retry later",
        type_="urn:gp8:problem:storage-unavailable",
        headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
    )


async def _storage_error(request: Request, exc: Exception) -> ProblemResponse:
    logger.error("storage error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, "internal storage error")


@dataclass(frozen=True, slots=True)
class _CommandProblem:
    status: int
    type_: str
    # Members and headers some refusals add to the problem.
    extra: Callable[[Any], dict[str, Any]] = lambda exc: {}
    headers: Callable[[Any], dict[str, str]] = lambda exc: {}


_PROBLEM = "urn:gp8:problem:"
# The command service's refusals (commands/errors.py), looked up along the exception's class
# hierarchy like Starlette's own handlers: a new refusal under a kind answers as its kind.
_COMMAND_PROBLEMS: dict[type[CommandError], _CommandProblem] = {
    NotAllowed: _CommandProblem(403, _PROBLEM + "forbidden"),
    InvalidCommand: _CommandProblem(422, _PROBLEM + "validation"),
    IdempotencyMismatch: _CommandProblem(422, _PROBLEM + "idempotency-key-reused"),
    VehicleFrozen: _CommandProblem(
        409, _PROBLEM + "duplicate-box", extra=lambda exc: {"alert_ids": exc.alert_ids}
    ),
    ImmobilizationSuspended: _CommandProblem(409, _PROBLEM + "immobilization-suspended"),
    NoBoxFitted: _CommandProblem(409, _PROBLEM + "no-box-fitted"),
    WrongState: _CommandProblem(409, _PROBLEM + "command-state"),
    # The client may ask again once the oldest counted command leaves the hour.
    EngineStartCapReached: _CommandProblem(
        429,
        _PROBLEM + "engine-start-cap",
        headers=lambda exc: {"Retry-After": str(exc.retry_after_s)},
    ),
    CommandError: _CommandProblem(409, _PROBLEM + "command-refused"),  # any other refusal
}


async def _command_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, CommandError)
    problem = next(_COMMAND_PROBLEMS[cls] for cls in type(exc).__mro__ if cls in _COMMAND_PROBLEMS)
    return problem_response(
        request,
        problem.status,
        str(exc),
        type_=problem.type_,
        headers=problem.headers(exc) or None,
        **problem.extra(exc),
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(InvalidCursor, _invalid_cursor)
    app.add_exception_handler(StorageUnavailable, _unavailable)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(CommandError, _command_error)


class InternalErrorMiddleware:
    """Turn an unexpected exception into a logged 500 problem instead of a bare text page.

    Sits inside Starlette's ServerErrorMiddleware so the traceback is logged once, here. When
    the response has already started (a streamed export) nothing can be sent: the exception
    propagates and the server closes the connection, which the client sees as a cut body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            if started:
                raise
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            response = ProblemResponse(
                {
                    "type": "about:blank",
                    "title": "Internal Server Error",
                    "status": 500,
                    "detail": "unexpected error; it has been logged",
                    "instance": scope.get("path"),
                },
                status_code=500,
            )
            await response(scope, receive, send)


class BodyLimitMiddleware:
    """Answer 413 to a request body larger than ``max_bytes`` without reading it all."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._too_large(scope, receive, send)
                    return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading, so the problem
                    # handler answers it like any other.
                    raise ApiProblem(413, self._detail(), type_="urn:gp8:problem:body-too-large")
            return message

        await self.app(scope, receive_limited, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = ProblemResponse(
            {
                "type": "urn:gp8:problem:body-too-large",
                "title": "Content Too Large",
                "status": 413,
                "detail": self._detail(),
                "instance": scope.get("path"),
            },
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


# --- OpenAPI ----------------------------------------------------------------------------------

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Bearer challenge (RFC 6750)",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before the key may call again",
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "string"},
        }
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json bodies for these statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": _title(status),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        out[status] = entry
    return out


def invalid(loc: tuple[str | int, ...], msg: str, value: object = None) -> RequestValidationError:
    """A validation error found by hand (after pydantic), answered like pydantic's own."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])
