"""Alert rules, badge policies, guard states and theft cases as JSON-ready dicts, and back.

Both engines store these whole (SQLite as a JSON column next to the columns its queries use,
MongoDB as the document itself): they are small, read whole, and their parameters grow with
new rule types, which then need no new column. Enums travel by value, tuples as lists, a
schedule as an object; a field missing from an older record reads as its default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from enum import Enum
from functools import cache
from typing import Any, TypeVar

from storage import stream
from storage.models import (
    AlertRule,
    GeofenceSchedule,
    GuardState,
    LegalHold,
    StreamKind,
    TheftCase,
    TrackingPolicy,
)

T = TypeVar("T")
Doc = dict[str, Any]

# Theft cases travel on the live stream (GET /v1/stream's "theft_case"): both engines import
# this module, so the kind is known wherever a store is.
stream.register(StreamKind.THEFT_CASE, TheftCase)


def to_doc(item: object) -> Doc:
    """A dataclass of this module's kinds as a JSON-ready dict."""
    out: Doc = {}
    for f in dataclasses.fields(item):  # type: ignore[arg-type]
        out[f.name] = _plain(getattr(item, f.name))
    return out


def from_doc(cls: type[T], doc: Doc) -> T:
    """``cls`` from a dict made by `to_doc` (extra keys ignored, missing ones defaulted)."""
    values: Doc = {}
    for name, convert in _converters(typing.cast(type, cls)).items():
        if name in doc and doc[name] is not None:
            values[name] = convert(doc[name])
        elif name in doc:
            values[name] = None
    return cls(**values)


def to_rule(doc: Doc) -> AlertRule:
    return from_doc(AlertRule, doc)


def to_policy(doc: Doc) -> TrackingPolicy:
    return from_doc(TrackingPolicy, doc)


def to_guard(doc: Doc) -> GuardState:
    return from_doc(GuardState, doc)


def to_case(doc: Doc) -> TheftCase:
    return from_doc(TheftCase, doc)


def to_hold(doc: Doc) -> LegalHold:
    return from_doc(LegalHold, doc)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, GeofenceSchedule):
        return {
            "timezone": value.timezone,
            "days": list(value.days),
            "start": value.start,
            "end": value.end,
        }
    return value


def _schedule(value: Any) -> GeofenceSchedule:
    return GeofenceSchedule(
        timezone=value["timezone"],
        days=tuple(value["days"]),
        start=value["start"],
        end=value["end"],
    )


def _same(value: Any) -> Any:
    return value


@cache
def _converters(cls: type) -> dict[str, Callable[[Any], Any]]:
    """How each field of ``cls`` is read back: enums, tuples, schedules; the rest as is."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        convert: Callable[[Any], Any] = _same
        for candidate in (hint, *typing.get_args(hint)):
            if isinstance(candidate, type) and issubclass(candidate, Enum):
                convert = candidate
            elif candidate is GeofenceSchedule:
                convert = _schedule
            elif typing.get_origin(candidate) is tuple:
                convert = tuple
        out[f.name] = convert
    return out


def incident_key(
    fleet_id: str, vehicle_id: str | None, device_id: str | None, kind: str, ref: str | None
) -> str:
    """What makes two triggers one incident: the fleet, the subject (the vehicle, else the
    box), the alert kind and its ref. Stored while the incident's alert is open (``open_key``),
    unique, so two writers racing on one incident make one alert."""
    subject = f"v:{vehicle_id}" if vehicle_id is not None else f"d:{device_id}"
    return f"{fleet_id}:{subject}:{kind}:{ref or ''}"
