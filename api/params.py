"""Query parameters shared by several routes: time ranges and pagination."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Query

from api.problems import invalid
from api.times import MIN_MS, parse_time
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
# Ids are ``<prefix>_<24 hex>``; anything much longer is not an id of ours.
Id = Annotated[str, Path(max_length=64, description="The resource's id")]

_DOC = "ISO-8601 (2024-05-01T12:00:00Z; no zone = UTC), or epoch milliseconds"
# Declared as date-time so clients and generators see the main form; epoch ms is accepted too.
_TIME_SCHEMA = {"format": "date-time"}


@dataclass(frozen=True, slots=True)
class TimeRange:
    from_ms: int
    to_ms: int


def time_range(
    default_span_ms: int, max_span_ms: int | None = MAX_RANGE_MS
) -> Callable[[str | None, str | None], TimeRange]:
    """A dependency reading ``from``/``to``: ``to`` defaults to now, ``from`` to ``to`` minus
    ``default_span_ms``; ``from`` < ``to`` and a span of at most ``max_span_ms`` are required."""

    def parse(
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
            raise invalid(("query", "to"), str(exc)) from None
        try:
            from_ms = (
                parse_time(from_) if from_ is not None else max(MIN_MS, to_ms - default_span_ms)
            )
        except ValueError as exc:
            raise invalid(("query", "from"), str(exc)) from None
        if from_ms >= to_ms:
            raise invalid(("query", "from"), "from must be before to")
        if max_span_ms is not None and to_ms - from_ms > max_span_ms:
            days = max_span_ms // DAY_MS
            raise invalid(("query", "from"), f"the range from..to is at most {days} days")
        return TimeRange(from_ms, to_ms)

    return parse
