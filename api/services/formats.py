"""Rendering positions: the JSON object of one fix, and the export formats.

Exports (GeoJSON, CSV, GPX) are produced as byte chunks from an async iterator of position
pages, so a month of history streams out without being held in memory.

The fields served are storage.fields.PUBLIC_POSITION_FIELDS: the CSV header and the GeoJSON
properties are derived from them; position_dict and the GPX point are written out for speed
and checked against them by tests/storage/test_fields.py.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from enum import StrEnum
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import orjson

from api.times import iso_ms
from protocol.gp8.frames import WarningLight
from storage.fields import PUBLIC_POSITION_FIELDS
from storage.models import Event, Position

_WARNINGS = tuple((int(light), (light.name or "").lower()) for light in WarningLight)


class Format(StrEnum):
    JSON = "json"
    GEOJSON = "geojson"
    CSV = "csv"
    GPX = "gpx"


MEDIA_TYPES = {
    Format.JSON: "application/json",
    Format.GEOJSON: "application/geo+json",
    Format.CSV: "text/csv",
    Format.GPX: "application/gpx+xml",
}
_BY_MEDIA_TYPE = {media: fmt for fmt, media in MEDIA_TYPES.items()}


class GeoJsonGeometry(StrEnum):
    POINTS = "points"
    LINESTRING = "linestring"


def negotiate(accept: str | None) -> Format | None:
    """The format an Accept header asks for, JSON for none or ``*/*``; None if none is served.

    Honours q-values; among equal q the first listed wins.
    """
    if not accept or not accept.strip():
        return Format.JSON
    choices: list[tuple[float, int, Format]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media in _BY_MEDIA_TYPE:
            choices.append((q, -index, _BY_MEDIA_TYPE[media]))
        elif media in ("*/*", "application/*"):
            choices.append((q, -index, Format.JSON))
        elif media == "text/*":
            choices.append((q, -index, Format.CSV))
    if not choices:
        return None
    return max(choices)[2]


def warning_names(mask: int) -> list[str]:
    if not mask:
        return []
    return [name for bit, name in _WARNINGS if mask & bit]


def event_dict(e: Event) -> dict[str, Any]:
    """The API's JSON object for one event (schema: api.schemas.events.EventPublic)."""
    from api.services.event_details import decode_detail  # it builds on warning_names here

    return {
        "time": iso_ms(e.time_ms),
        "type": e.code,
        "detail": e.detail,
        "detail_decoded": decode_detail(e.code, e.detail),
        "vehicle_id": e.vehicle_id,
        "device_id": e.device_id,
        "received_at": iso_ms(e.received_ms),
        "position": position_dict(e.position),
    }


def position_dict(p: Position) -> dict[str, Any]:
    """The API's JSON object for one fix (schema: api.schemas.positions.PositionPublic)."""
    return render_positions((p,))[0]


@functools.lru_cache(maxsize=4096)
def _minute_prefix(minute: int) -> str:
    """``iso_ms`` of a minute's start without its seconds: ``2024-05-01T12:00:``."""
    return iso_ms(minute * 60_000)[:-7]


@functools.cache
def _second_milli() -> list[str]:
    """``iso_ms``'s last seven characters (``SS.mmmZ``) for each millisecond of a minute, built
    on first use (60,000 short strings, ~4 MB: the processes that never render never pay)."""
    return [iso_ms(ms)[-7:] for ms in range(60_000)]


def render_positions(positions: Iterable[Position]) -> list[dict[str, Any]]:
    """The API's JSON object of each fix (schema: api.schemas.positions.PositionPublic).

    One pass of written-out work per fix: a history page renders thousands (2,880 for a day
    at 30 s), where a call per fix, a loop over the field table or formatting both times whole
    would each cost about as much again. A time is its minute's prefix (cached: a minute holds
    several fixes, and the received time is mostly the fix's) and a looked-up tail. Keys,
    order and each value's rendering (storage.fields.Kind) are checked against the table by
    tests/storage/test_fields.py.
    """
    tail = _second_milli()
    prefix = _minute_prefix
    out: list[dict[str, Any]] = []
    append = out.append
    for (
        _fleet_id,
        device_id,
        _vehicle_id,
        time_ms,
        received_ms,
        lat,
        lon,
        altitude_m,
        speed_kmh,
        heading_deg,
        satellites,
        hdop,
        fix_valid,
        ignition,
        doors_locked,
        engine_start_inhibited,
        external_power,
        odometer_m,
        external_power_mv,
        battery_mv,
        gsm_signal,
        warnings,
        driver_badge,
        buffered,
        raw_io,
    ) in positions:
        time_minute, time_rest = divmod(time_ms, 60_000)
        received_minute, received_rest = divmod(received_ms, 60_000)
        append(
            {
                "time": prefix(time_minute) + tail[time_rest],
                "lat": lat,
                "lon": lon,
                "altitude_m": altitude_m,
                "speed_kmh": speed_kmh,
                "heading_deg": heading_deg,
                "satellites": satellites,
                "hdop": hdop,
                "fix_valid": fix_valid,
                "ignition": ignition,
                "doors_locked": doors_locked,
                "engine_start_inhibited": engine_start_inhibited,
                "external_power": external_power,
                "odometer_m": odometer_m,
                "external_power_mv": external_power_mv,
                "battery_mv": battery_mv,
                "gsm_signal": gsm_signal,
                "warnings": warning_names(warnings) if warnings else [],
                "driver_badge": None if driver_badge is None else str(driver_badge),
                "received_at": prefix(received_minute) + tail[received_rest],
                "device_id": device_id,
                "buffered": buffered,
                "io": raw_io,
            }
        )
    return out


# Fixes rendered between two turns given back to the event loop: about a millisecond of work,
# so a box's ACK, on the same loop as the API in `gp8 serve`, waits for that, not for whole
# histories of every request in flight (issue 11; bench/bench_api_isolation.py).
RENDER_CHUNK = 256


async def positions_json(positions: Sequence[Position]) -> orjson.Fragment:
    """The JSON array of `render_positions`, to place in a document given to `dumps`.

    Rendered and serialised RENDER_CHUNK fixes at a time, yielding to the event loop between
    chunks; each chunk's objects are freed once serialised, so a page never holds thousands
    of them at once: fewer of the GC's young collections, and none of its objects promoted to
    the older generations, whose collections then walk them (a third of the rendering's cost
    for a day of history).
    """
    parts = []
    for start in range(0, len(positions), RENDER_CHUNK):
        if start:
            await asyncio.sleep(0)
        parts.append(orjson.dumps(render_positions(positions[start : start + RENDER_CHUNK]))[1:-1])
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# --- GeoJSON ------------------------------------------------------------------------------


def _point_feature(p: Position, properties: dict[str, Any]) -> dict[str, Any]:
    # The properties (``p`` rendered) are the JSON fields but the point's horizontal
    # coordinates (altitude_m stays: clients that ignore the third coordinate still see it).
    del properties["lat"], properties["lon"]
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [p.lon, p.lat, p.altitude_m]},
        "properties": properties,
    }


async def geojson_points(pages: AsyncIterator[list[Position]]) -> AsyncIterator[bytes]:
    """A FeatureCollection with one Point feature per position, in time order."""
    yield b'{"type":"FeatureCollection","features":['
    first = True
    async for page in pages:
        if not page:
            continue
        features = map(_point_feature, page, render_positions(page))
        body = b",".join(orjson.dumps(feature) for feature in features)
        yield body if first else b"," + body
        first = False
    yield b"]}"


async def geojson_linestring(
    pages: AsyncIterator[list[Position]], properties: dict[str, Any]
) -> AsyncIterator[bytes]:
    """One Feature whose LineString is the track; geometry null below two positions.

    Coordinates are [lon, lat, altitude_m]; the properties gain the first and last time and the
    number of positions (times per point are in the Point format and in GPX). The properties
    come after the geometry, since they are known only at the end.
    """
    held: list[Position] = []  # until two points are seen the geometry may still be null
    count = 0
    first_ms: int | None = None
    last_ms: int | None = None
    started = False
    async for page in pages:
        if not page:
            continue
        count += len(page)
        first_ms = page[0].time_ms if first_ms is None else first_ms
        last_ms = page[-1].time_ms
        if not started:
            held.extend(page)
            if len(held) < 2:
                continue
            page, held = held, []
            started = True
            yield b'{"type":"Feature","geometry":{"type":"LineString","coordinates":['
            yield _coordinates(page)
        else:
            yield b"," + _coordinates(page)
    summary = {
        **properties,
        "count": count,
        "start_time": iso_ms(first_ms) if first_ms is not None else None,
        "end_time": iso_ms(last_ms) if last_ms is not None else None,
    }
    if started:
        yield b']},"properties":' + orjson.dumps(summary) + b"}"
    else:
        yield b'{"type":"Feature","geometry":null,"properties":' + orjson.dumps(summary) + b"}"


def _coordinates(page: Iterable[Position]) -> bytes:
    return b",".join(orjson.dumps([p.lon, p.lat, p.altitude_m]) for p in page)


# --- CSV ----------------------------------------------------------------------------------

# The JSON fields, in the JSON's order.
CSV_COLUMNS: tuple[str, ...] = tuple(f.public_name for f in PUBLIC_POSITION_FIELDS)


def csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "|".join(value)
    if isinstance(value, dict):  # io: one cell of compact JSON, as the JSON shows it
        return orjson.dumps(value).decode()
    return "" if value is None else str(value)


async def csv_rows(pages: AsyncIterator[list[Position]]) -> AsyncIterator[bytes]:
    """RFC 4180 CSV: a header row, a row per position; warnings joined by ``|``, io as JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode()
    async for page in pages:
        buffer.seek(0)
        buffer.truncate()
        for row in render_positions(page):
            writer.writerow([csv_cell(row[column]) for column in CSV_COLUMNS])
        yield buffer.getvalue().encode()


# --- GPX ----------------------------------------------------------------------------------

GPX_NAMESPACE = "http://www.topografix.com/GPX/1/1"
GP8_GPX_NAMESPACE = "urn:gp8:gpx:1"


def _trkpt(p: Position) -> str:
    # Child order follows the GPX 1.1 wptType sequence: ele, time, ..., fix, sat, hdop, extensions.
    # The gp8: extensions are named after the JSON fields (tests/storage/test_fields.py).
    fix = "" if p.fix_valid else "<fix>none</fix>"
    return (
        f'<trkpt lat="{p.lat:.7f}" lon="{p.lon:.7f}"><ele>{p.altitude_m}</ele>'
        f"<time>{iso_ms(p.time_ms)}</time>{fix}<sat>{p.satellites}</sat><hdop>{p.hdop}</hdop>"
        f"<extensions><gp8:speed_kmh>{p.speed_kmh}</gp8:speed_kmh>"
        f"<gp8:heading_deg>{p.heading_deg}</gp8:heading_deg>"
        f"<gp8:ignition>{'true' if p.ignition else 'false'}</gp8:ignition>"
        f"<gp8:odometer_m>{p.odometer_m}</gp8:odometer_m></extensions></trkpt>"
    )


async def gpx_track(pages: AsyncIterator[list[Position]], name: str) -> AsyncIterator[bytes]:
    """A GPX 1.1 document with one track and one segment, a trkpt per position."""
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<gpx version="1.1" creator="gp8" xmlns="{GPX_NAMESPACE}" '
        f"xmlns:gp8={quoteattr(GP8_GPX_NAMESPACE)}>"
        f"<trk><name>{escape(name)}</name><trkseg>"
    ).encode()
    async for page in pages:
        if page:
            yield "".join(_trkpt(p) for p in page).encode()
    yield b"</trkseg></trk></gpx>\n"
