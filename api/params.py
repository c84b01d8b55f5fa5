"""Query parameters shared by several routes (time ranges, pagination), and the app-wide check
that holds every route to the query parameters and media types it declares (`check_request`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.dependencies.models import Dependant
from starlette.requests import HTTPConnection

from api.problems import ApiProblem, invalid
from api.times import MIN_MS, iso_ms, parse_time, understood
from storage.models import now_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# The longest range one request may cover: a month of 1 s fixes is 2.7 M rows, the most an
# export (or a trips computation) should walk through in one go.
MAX_RANGE_MS = 31 * DAY_MS

# Listing page sizes: big enough for a fleet screen, small enough to keep one page cheap.
Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page (1..1000)")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page, unchanged"),
]


class Order(StrEnum):
    """The direction of a time-ordered listing."""

    ASC = "asc"
    DESC = "desc"

    @property
    def newest_first(self) -> bool:
        return self is Order.DESC


# Every time-ordered listing takes ``order`` (default: the listing's own order, oldest first
# but for webhook deliveries). A cursor belongs to the order it was made in: the other order
# refuses it (400 invalid-cursor) rather than seeking the wrong way.
OrderQuery = Annotated[
    Order,
    Query(
        description="asc: oldest first; desc: newest first. Keep it unchanged while following "
        "`next_cursor`"
    ),
]
# Ids are ``<prefix>_<24 hex>``; anything much longer is not an id of ours.
Id = Annotated[str, Path(max_length=64, description="The resource's id")]

_DOC = (
    "RFC 3339 (2024-05-01T12:00:00Z; a date alone or no zone = UTC), or epoch milliseconds "
    "(not seconds)"
)
# Declared as date-time so clients and generators see the main form; epoch ms is accepted too.
_TIME_SCHEMA = {"format": "date-time"}


@dataclass(frozen=True, slots=True)
class TimeRange:
    from_ms: int
    to_ms: int


def time_range(
    default_span_ms: int, max_span_ms: int | None = MAX_RANGE_MS
) -> Callable[[str | None, str | None], Awaitable[TimeRange]]:
    """A dependency reading ``from``/``to``: ``to`` defaults to now, ``from`` to ``to`` minus
    ``default_span_ms``; ``from`` < ``to`` and a span of at most ``max_span_ms`` are required."""

    async def parse(
        from_: Annotated[
            str | None,
            Query(alias="from", max_length=64, description=_DOC, json_schema_extra=_TIME_SCHEMA),
        ] = None,
        to: Annotated[
            str | None,
            Query(max_length=64, description=_DOC, json_schema_extra=_TIME_SCHEMA),
        ] = None,
    ) -> TimeRange:
        try:
            to_ms = parse_time(to) if to is not None else now_ms()
        except ValueError as exc:
            raise invalid(("query", "to"), str(exc), to) from None
        try:
            from_ms = (
                parse_time(from_) if from_ is not None else max(MIN_MS, to_ms - default_span_ms)
            )
        except ValueError as exc:
            raise invalid(("query", "from"), str(exc), from_) from None
        # Say what each bound was taken as: a number read as milliseconds, a defaulted bound.
        to_said = (
            f"to={understood(to, to_ms)}"
            if to is not None
            else f"to (not given, so now: {iso_ms(to_ms)})"
        )
        from_said = (
            f"from={understood(from_, from_ms)}"
            if from_ is not None
            else f"from (defaulted to {default_span_ms // HOUR_MS} h before to: {iso_ms(from_ms)})"
        )
        if from_ms >= to_ms:
            raise invalid(("query", "from"), f"{from_said} must be before {to_said}", from_)
        if max_span_ms is not None and to_ms - from_ms > max_span_ms:
            days = max_span_ms // DAY_MS
            raise invalid(
                ("query", "from"),
                f"the range from..to is at most {days} days: {from_said} .. {to_said}",
                from_,
            )
        return TimeRange(from_ms, to_ms)

    return parse


# --- unknown query parameters ------------------------------------------------------------------

# Each route's accepted query parameter names, computed once per route's Dependant (which is
# unhashable). The entry keeps the Dependant itself: an id is only unique while its object
# lives, and a test suite builds and drops many apps.
_KNOWN_QUERY: dict[int, tuple[Dependant, frozenset[str]]] = {}


def _query_names(dependant: Dependant) -> frozenset[str]:
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        names.update(field.alias for field in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)


async def check_request(connection: HTTPConnection) -> None:
    """An app-wide dependency holding every route to what it declares.

    A query parameter the route does not declare is a 400 naming it: ignoring it would answer
    a typo (``vehicleid=``) with an unfiltered listing. An Accept header the route cannot
    satisfy is a 406 listing what it serves, rather than JSON anyway (a ``format`` parameter,
    where a route has one, overrides Accept and is checked by the route).
    """
    route: Any = connection.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if connection.scope["type"] != "http" or not isinstance(dependant, Dependant):
        return
    # A route left out of the OpenAPI document (the live stream) reads its own query and
    # headers: it declares nothing to hold it to.
    if not getattr(route, "include_in_schema", True):
        return
    entry = _KNOWN_QUERY.get(id(dependant))
    if entry is None or entry[0] is not dependant:
        entry = _KNOWN_QUERY[id(dependant)] = (dependant, _query_names(dependant))
    known = entry[1]
    unknown = sorted({name for name in connection.query_params if name not in known})
    if unknown:
        raise unknown_parameters(unknown, known)
    accept = connection.headers.get("accept")
    if accept and "format" not in connection.query_params:
        served = _served_media_types(route)
        if served and not accepts_any(accept, served):
            raise not_acceptable(served)


def _served_media_types(route: Any) -> list[str]:
    """What a route's success answers can be: its response class's type and the media types
    its OpenAPI ``responses`` declare for 200. Empty (no check) for answers without a body."""
    if getattr(route, "status_code", None) == 204:
        return []
    served: list[str] = []
    response_class = getattr(route, "response_class", None)
    # FastAPI wraps a route's default class (JSONResponse) in a DefaultPlaceholder.
    response_class = getattr(response_class, "value", response_class)
    media_type = getattr(response_class, "media_type", None)
    if isinstance(media_type, str):
        served.append(media_type)
    responses = getattr(route, "responses", None) or {}
    for key in (200, "200"):
        served += [m for m in (responses.get(key) or {}).get("content", {}) if m not in served]
    return served


def accepts_any(accept: str, served: list[str]) -> bool:
    """Whether an Accept header (RFC 9110 §12.5.1, q=0 meaning "not this") admits one of
    ``served``."""
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        media = media.lower()
        if any(p.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        kind, _, sub = media.partition("/")
        for candidate in served:
            c_kind, _, c_sub = candidate.partition("/")
            if media in ("*/*", "*", candidate) or (sub == "*" and kind == c_kind):
                return True
            # application/problem+json and the like are JSON: a JSON client reads them.
            if media == "application/json" and c_sub.endswith("+json") and c_kind == kind:
                return True
    return False


def not_acceptable(served: list[str]) -> ApiProblem:
    return ApiProblem(
        406,
        f"this resource is served as {', '.join(served)}; the Accept header admits none",
        type_="urn:gp8:problem:not-acceptable",
        available=served,
    )


def unknown_parameters(unknown: list[str], known: frozenset[str]) -> ApiProblem:
    accepted = ", ".join(sorted(known)) if known else "none"
    names = ", ".join(repr(name) for name in unknown)
    noun = "parameter" if len(unknown) == 1 else "parameters"
    return ApiProblem(
        400,
        f"unknown query {noun} {names}; this route accepts: {accepted}",
        type_="urn:gp8:problem:unknown-parameter",
        errors=[
            {"loc": ["query", name], "msg": "unknown query parameter", "type": "unknown_parameter"}
            for name in unknown
        ],
    )
