"""RFC 9457 problem details: the one shape of every error the API returns.

Handlers here are the boundary where HTTP, validation, storage and command-service exceptions
become responses; nothing else in `api/` builds an error body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
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


# FastAPI's answer to a body json.loads could not read for another reason than a syntax error
# (nesting beyond the recursion limit, an integer of more than 4,300 digits): the same
# malformed-JSON problem as a syntax error.
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


async def _http_exception(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != _title(exc.status_code) else None
    if isinstance(exc, ApiProblem):
        return problem_response(
            request, exc.status_code, detail, type_=exc.type, headers=exc.headers, **exc.extra
        )
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        return _unreadable_json(request, exc.__cause__)
    if exc.status_code == 404 and detail is None:
        detail = f"no resource at {request.url.path}"
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        return problem_response(
            request,
            405,
            f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
            headers={**(exc.headers or {}), "Allow": ", ".join(allowed)},
        )
    return problem_response(request, exc.status_code, detail, headers=exc.headers)


def _unreadable_json(request: Request, cause: BaseException | None) -> ProblemResponse:
    if isinstance(cause, RecursionError):
        reason = "nested too deeply"
    elif isinstance(cause, ValueError):
        reason = str(cause).split(";")[0]  # "Exceeds the limit (4300 digits) for integer ..."
    else:
        reason = "cannot be decoded"
    msg = f"malformed JSON: {reason}"
    issues = [{"loc": ["body"], "msg": msg, "type": "json_invalid"}]
    return problem_response(
        request, 400, f"body: {msg}", type_="urn:gp8:problem:malformed-json", errors=issues
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only those of
    the first route whose path matched (GET and POST of one path are two routes here), so the
    answer is read from the OpenAPI document's paths, compiled once per app."""
    app = request.app
    table: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(
        app.state, "allowed_methods", None
    )
    if table is None:
        table = [
            (compile_path(path)[0], frozenset(m.upper() for m in operations))
            for path, operations in app.openapi().get("paths", {}).items()
        ]
        app.state.allowed_methods = table
    methods: set[str] = set()
    for pattern, path_methods in table:
        if pattern.match(request.url.path):
            methods.update(path_methods)
    return sorted(methods)


# What the tag of a discriminated union is called in a message ("unknown command type 'x'").
_TAG_NOUNS = {"type": "command type"}


def _issue(error: Mapping[str, Any], body: Any = None) -> dict[str, Any]:
    msg = str(error.get("msg", "invalid"))
    # Pydantic prefixes messages of our own validators; the client only needs the reason.
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    loc: list[str | int] = [
        part if isinstance(part, int) else str(part) for part in error.get("loc", ())
    ]
    ctx = error.get("ctx") or {}
    kind = str(error.get("type", "value_error"))
    if kind == "json_invalid":
        # FastAPI puts the character offset in the location, where it reads like a field.
        offset = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        where = f" at character {offset}" if offset is not None else ""
        msg = f"malformed JSON{where}: {ctx.get('error', 'cannot be decoded')}"
        loc = loc[:1]
    elif kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "type")).strip("'")
        noun = _TAG_NOUNS.get(field, field)
        msg = f"unknown {noun} {ctx.get('tag')!r}; known: {ctx.get('expected_tags')}"
        loc = [*loc, field]
    elif kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "type")).strip("'")
        msg = f"{field} is required"
        loc = [*loc, field]
    else:
        loc = _without_union_tags(loc, body)
    return {"loc": loc, "msg": msg, "type": kind}


def _without_union_tags(loc: list[str | int], body: Any) -> list[str | int]:
    """``loc`` without the tags pydantic inserts for discriminated unions (``body.lock.ttl_s``
    is ``body.ttl_s`` of a ``{"type": "lock"}`` body): the client should see only the fields
    it sent. Found by walking the body: a part that is no key of an object but one of its
    string values is a tag."""
    if not loc or loc[0] != "body":
        return loc
    kept: list[str | int] = [loc[0]]
    current = body
    for part in loc[1:]:
        if isinstance(current, dict) and isinstance(part, str) and part not in current:
            if part in {v for v in current.values() if isinstance(v, str)}:
                continue
            current = None
        elif isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            current = None
        kept.append(part)
    return kept


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
    issues = [_issue(error, exc.body) for error in raw]
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
    elif raw and all(
        tuple(error.get("loc", ())) == ("query", "format")
        and error.get("type") in ("enum", "literal_error")
        for error in raw
    ):
        # A format the route cannot produce is the query form of an unmet Accept header.
        expected = str((raw[0].get("ctx") or {}).get("expected", ""))
        return problem_response(
            request,
            406,
            f"format={raw[0].get('input')!r} cannot be produced here; formats: {expected}",
            type_="urn:gp8:problem:not-acceptable",
            errors=issues,
        )
    else:
        status = 422
        type_ = "urn:gp8:problem:validation"
    return problem_response(request, status, describe(issues), type_=type_, errors=issues)


async def _not_found(request: Request, exc: Exception) -> ProblemResponse:
    return problem_response(request, 404, str(exc) or "not found")


# What a unique constraint protects, in the API's words, by its fields (fleet_id, which scopes
# most of them, left out). Both engines report the same field names (storage.errors.Conflict).
_CONFLICTS: dict[tuple[str, ...], str] = {
    ("vin",): "the fleet already has a vehicle with this VIN",
    ("imei",): "a box with this IMEI is already provisioned (IMEIs are unique across fleets)",
    ("key_hash",): "an API key with this secret already exists",
    ("id",): "a record with this id already exists",
    ("idempotency_key",): "a command with this Idempotency-Key already exists",
    # One open theft case per vehicle: sqlite's partial index is on vehicle_id, Mongo's sparse
    # one on open_vehicle.
    ("vehicle_id",): "the vehicle already has an open theft case",
    ("open_vehicle",): "the vehicle already has an open theft case",
}


def conflict_detail(exc: Conflict) -> str:
    """The client's words for a conflict: the engine's constraint names never leave the API."""
    if not exc.fields:
        return str(exc) or "conflicts with an existing record"
    fields = tuple(field for field in exc.fields if field != "fleet_id")
    return _CONFLICTS.get(fields, "conflicts with an existing record")


async def _conflict(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, Conflict)
    return problem_response(request, 409, conflict_detail(exc), type_="urn:gp8:problem:conflict")


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


def _command_problem(exc: CommandError) -> _CommandProblem:
    return next(_COMMAND_PROBLEMS[cls] for cls in type(exc).__mro__ if cls in _COMMAND_PROBLEMS)


def refusal_members(exc: CommandError | NotFound) -> dict[str, Any]:
    """The problem members of one refusal inside an answer that carries several (a bulk
    order's vehicles): what the single request would have answered as its problem."""
    if isinstance(exc, NotFound):
        return {"type": "about:blank", "title": _title(404), "status": 404, "detail": str(exc)}
    problem = _command_problem(exc)
    members = {"type": problem.type_, "title": _title(problem.status), "status": problem.status}
    return {**members, "detail": str(exc), **problem.extra(exc)}


async def _command_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, CommandError)
    problem = _command_problem(exc)
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


# Problems any route can answer whatever it declares itself (api/params.py, check_request): an
# unknown query parameter, an Accept header the route cannot satisfy.
COMMON_PROBLEMS = (400, 406)


def complete_responses(openapi: dict[str, Any]) -> None:
    """Make every operation of an OpenAPI document say what it answers: `COMMON_PROBLEMS`
    added where missing, and each success status declared by hand (a replay's 200, an
    approval's 202) given the body of the route's main success status, which is what such
    routes return (FastAPI documents the response model on ``status_code`` only)."""
    common = problem_responses(*COMMON_PROBLEMS)
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, entry in common.items():
                responses.setdefault(str(status), entry)
            success = [
                entry
                for status, entry in responses.items()
                if str(status).startswith("2") and str(status) != "204"
            ]
            content = next((e["content"] for e in success if e.get("content")), None)
            for entry in success:
                if content is not None and not entry.get("content"):
                    entry["content"] = content
