"""Types shared by the resource schemas: timestamps, free texts, identifiers."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from api.validation import imei_error, text_error, vin_error

# Every time the API writes: ISO-8601 UTC with milliseconds (api.times.iso_ms).
Timestamp = Annotated[
    str,
    Field(
        json_schema_extra={"format": "date-time"},
        examples=["2024-05-01T12:00:00.000Z"],
    ),
]


def _time_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string with its zone (2024-05-01T12:00:00Z)")
    return value


# Every time the API reads in a body: an RFC 3339 string with its zone. A number
# (``{"before": 0}``) is refused rather than taken as seconds since 1970.
TimeIn = Annotated[AwareDatetime, BeforeValidator(_time_text)]

# Limits of free texts: what fits a plate field, a list column, a dashboard tile.
PLATE_MAX = 16
LABEL_MAX = 64
NAME_MAX = 100


def _printable(value: str) -> str:
    error = text_error(value)
    if error:
        raise ValueError(error)
    return value


def _text(max_length: int, min_length: int = 0) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)


Plate = Annotated[str, _text(PLATE_MAX), AfterValidator(_printable)]
Label = Annotated[str, _text(LABEL_MAX), AfterValidator(_printable)]
Name = Annotated[str, _text(NAME_MAX, 1), AfterValidator(_printable)]
KeyName = Annotated[str, _text(LABEL_MAX), AfterValidator(_printable)]


def _normalize_vin(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _check_vin(value: str) -> str:
    error = vin_error(value)
    if error:
        raise ValueError(error)
    return value


def _check_imei(value: str) -> str:
    error = imei_error(value)
    if error:
        raise ValueError(error)
    return value


Vin = Annotated[
    str,
    BeforeValidator(_normalize_vin),
    AfterValidator(_check_vin),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 17,
            "maxLength": 17,
            "pattern": "^[A-HJ-NPR-Za-hj-npr-z0-9]{17}$",
            "description": "ISO 3779 VIN; the check digit is verified for North American VINs",
            "examples": ["1M8GDM9AXKP042788"],
        }
    ),
]

Imei = Annotated[
    str,
    BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v),
    AfterValidator(_check_imei),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{15}$",
            "description": "15-digit IMEI with its Luhn check digit",
            "examples": ["490154203237518"],
        }
    ),
]
