"""Every listing of a position's fields against the one definition, storage/fields.py.

Derived listings are checked for what they produce (the SQLite table a fresh file gets, the
documents written, the OpenAPI schema served); hand-written ones (the model, the JSON
rendering, the GPX point, the docs table) field by field. The stored names are pinned here
literally: they are what existing databases hold.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import types
import typing
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from api.schemas.positions import PositionPublic, public_description
from api.services import formats
from api.times import MAX_MS, MIN_MS, iso_ms
from protocol.gp8.frames import WarningLight
from storage.fields import (
    POSITION_ATTRS,
    POSITION_FIELDS,
    PUBLIC_ORDER,
    PUBLIC_POSITION_FIELDS,
    QUERIED_ATTRS,
    REQUIRED,
    Kind,
    PositionField,
)
from storage.models import Position
from storage.mongo import documents as docs
from storage.secrets import SecretBox
from storage.sqlite import migrations, rows, schema
from tests.storage.factories import event, position

# What existing SQLite files and Mongo databases hold, in column order. Changing a name here
# means existing data no longer reads: keep the old name in the field's `sqlite`/`mongo`
# instead, or write a migration.
STORED_NAMES = (
    "fleet_id",
    "device_id",
    "vehicle_id",
    "time_ms",
    "received_ms",
    "lat",
    "lon",
    "altitude_m",
    "speed_kmh",
    "heading_deg",
    "satellites",
    "hdop",
    "fix_valid",
    "ignition",
    "doors_locked",
    "engine_start_inhibited",
    "external_power",
    "odometer_m",
    "ext_power_mv",
    "battery_mv",
    "gsm_signal",
    "warnings",
    "driver_badge",
    "buffered",
    "io",  # added in release 3 (ADDED_COLUMNS; older rows and documents have none)
)

# How the API serves each kind of field, written independently of api.services.formats.
RENDER: dict[Kind, Callable[[Any], Any]] = {
    Kind.PLAIN: lambda value: value,
    Kind.EPOCH_MS: iso_ms,
    Kind.WARNING_MASK: lambda mask: [
        (light.name or "").lower() for light in WarningLight if mask & light
    ],
    Kind.BADGE: lambda badge: None if badge is None else str(badge),
    Kind.OBJECT: lambda value: value,
}

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_DOC_TABLE = re.compile(r"<!-- fields: PositionPublic -->\n((?:\|.*\n)+)")


def samples() -> list[Position]:
    """Positions whose every field differs from the factory default and from the others."""
    busy = position(
        "flt_1",
        "dev_1",
        "veh_1",
        1_714_564_800_250,
        received_ms=1_714_564_801_999,
        lat=-33.8688,
        lon=151.2093,
        altitude_m=-12,
        speed_kmh=87.5,
        heading_deg=359.9,
        satellites=11,
        hdop=25.5,
        fix_valid=False,
        ignition=False,
        doors_locked=True,
        engine_start_inhibited=True,
        external_power=False,
        odometer_m=987_654,
        external_power_mv=13_800,
        battery_mv=3_700,
        gsm_signal=99,
        warnings=int(WarningLight.ENGINE | WarningLight.ESP),
        driver_badge=2**53 + 1,  # beyond a JavaScript number: why badges are served as text
        buffered=True,
        io={"240": 1, "385": "01ab", "400": 2**63 - 1},
    )
    unfitted = position("flt_1", "dev_2", None, 1_000)
    return [busy, unfitted]


def by_attr(attr: str) -> PositionField:
    return next(f for f in POSITION_FIELDS if f.attr == attr)


# --- the table itself -----------------------------------------------------------------------


def test_fields_have_one_name_each_per_listing() -> None:
    for names in (
        POSITION_ATTRS,
        [f.public for f in POSITION_FIELDS if f.public is not None],
        [f.sqlite_column for f in POSITION_FIELDS],
        [f.mongo_key for f in POSITION_FIELDS],
    ):
        assert len(set(names)) == len(names), names
    assert [f.public for f in PUBLIC_POSITION_FIELDS] == list(PUBLIC_ORDER)


def test_every_kind_is_served_by_a_known_rendering() -> None:
    assert set(RENDER) == set(Kind)
    assert all(f.kind is Kind.PLAIN or f.public is not None for f in POSITION_FIELDS)


# --- storage ------------------------------------------------------------------------------


def test_position_model_is_the_table() -> None:
    """Names, order (the ingest path builds Position positionally), types and defaults."""
    assert Position._fields == POSITION_ATTRS
    hints = typing.get_type_hints(Position)
    for f in POSITION_FIELDS:
        hint = hints[f.attr]
        if typing.get_origin(hint) is types.UnionType:  # X | None: the X of it
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            assert f.nullable and len(args) == 1, f.attr
            hint = args[0]
        else:
            assert not f.nullable, f.attr
        # A parametrised type (io's dict[str, int | str]) is its origin in the table.
        assert (typing.get_origin(hint) or hint) is f.py_type, f.attr
    defaults = {f.attr: f.default for f in POSITION_FIELDS if f.default is not REQUIRED}
    assert Position._field_defaults == defaults


def test_stored_names_are_those_of_existing_databases() -> None:
    assert schema.POSITION_COLUMN_NAMES == STORED_NAMES
    assert docs.POSITION_KEYS == STORED_NAMES


def test_queried_fields_are_stored_under_their_own_names() -> None:
    for attr in QUERIED_ATTRS:
        f = by_attr(attr)
        assert f.sqlite_column == f.mongo_key == attr


def test_sqlite_positions_table_is_the_table() -> None:
    conn = sqlite3.connect(":memory:")
    schema.create_current(conn)
    columns = conn.execute("PRAGMA table_info(positions)").fetchall()
    sql_types = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER", dict: "TEXT"}
    assert [(c[1], c[2], bool(c[3])) for c in columns] == [
        (f.sqlite_column, sql_types[f.py_type], not f.nullable) for f in POSITION_FIELDS
    ]
    assert rows.POSITION_COLUMNS.split(", ") == list(STORED_NAMES)


def test_sqlite_rows_and_event_copies_round_trip() -> None:
    conn = sqlite3.connect(":memory:")
    schema.create_current(conn)
    for p in samples():
        placeholders = ", ".join("?" * len(STORED_NAMES))
        conn.execute(
            f"INSERT INTO positions ({rows.POSITION_COLUMNS}) VALUES ({placeholders})",
            rows.position_values(p),
        )
        found = conn.execute(
            f"SELECT {rows.POSITION_COLUMNS} FROM positions WHERE time_ms = ? AND device_id = ?",
            (p.time_ms, p.device_id),
        ).fetchone()
        assert rows.to_position(found) == p
        # == holds for 1 == True too: each value has its field's type (to_position is
        # written out, the flags turned back from 0/1 one by one).
        assert [type(v) for v in rows.to_position(found)] == [type(v) for v in p]
        assert list(orjson.loads(rows.position_json(p))) == list(STORED_NAMES)
    e = event("flt_1", "dev_1", "veh_1", 5_000)
    assert rows.to_event(rows.event_values(e)) == e


def test_mongo_documents_are_the_table() -> None:
    for p in samples():
        doc = docs.position_doc(p)
        assert list(doc) == [*STORED_NAMES, "_id"]
        assert docs.to_position(doc) == p
    e = event("flt_1", "dev_1", "veh_1", 5_000)
    assert list(docs.event_doc(e)["position"]) == list(STORED_NAMES)
    assert docs.to_event(docs.event_doc(e)) == e


def test_records_written_before_a_field_existed_read_with_its_default() -> None:
    """Documents, rows' event copies of an older gp8 lack io: read as None, not a KeyError."""
    p = samples()[0]
    doc = docs.position_doc(p)
    del doc["io"]
    assert docs.to_position(doc) == p._replace(io=None)
    copy = orjson.loads(rows.position_json(p))
    del copy["io"]
    assert rows.from_position_json(orjson.dumps(copy)) == p._replace(io=None)


def test_an_older_sqlite_file_gains_the_io_column() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.create_current(conn)
    conn.execute("ALTER TABLE positions DROP COLUMN io")  # the table as version 2 had it
    conn.execute("PRAGMA user_version = 2")
    migrations.open_schema(conn, SecretBox.development(), migrate=True)
    assert "io" in {c[1] for c in conn.execute("PRAGMA table_info(positions)")}


# --- the API ------------------------------------------------------------------------------


def test_api_schema_is_the_table() -> None:
    fields = PositionPublic.model_fields
    assert list(fields) == list(PUBLIC_ORDER)
    for f in PUBLIC_POSITION_FIELDS:
        info = fields[f.public_name]
        assert info.is_required(), f.public
        assert info.description == public_description(f)
    served = PositionPublic.model_json_schema()
    assert list(served["properties"]) == list(PUBLIC_ORDER)
    assert served["required"] == list(PUBLIC_ORDER)


def test_json_rendering_is_the_table() -> None:
    """render_positions is a hand-written literal: each field, in order, rendered by its kind
    (position_dict is it for one fix)."""
    assert formats.render_positions(samples()) == [formats.position_dict(p) for p in samples()]
    for p in samples():
        rendered = formats.position_dict(p)
        assert rendered == {
            f.public_name: RENDER[f.kind](getattr(p, f.attr)) for f in PUBLIC_POSITION_FIELDS
        }
        assert list(rendered) == list(PUBLIC_ORDER)
        # What is rendered is what the schema declares, type by type.
        assert PositionPublic.model_validate(rendered, strict=True).model_dump() == rendered


@pytest.mark.parametrize(
    "ms", [0, 1, 59_999, 60_000, -1, -60_001, 1_714_564_799_999, 951_782_400_000, MIN_MS, MAX_MS]
)
def test_rendered_times_are_iso_ms(ms: int) -> None:
    """render_positions puts a time together from its minute and a table, not by iso_ms."""
    (rendered,) = formats.render_positions([samples()[1]._replace(time_ms=ms, received_ms=ms)])
    assert rendered["time"] == rendered["received_at"] == iso_ms(ms)


async def _pages() -> AsyncIterator[list[Position]]:
    yield samples()


async def test_csv_and_geojson_fields_are_the_json_fields() -> None:
    assert formats.CSV_COLUMNS == PUBLIC_ORDER
    csv_body = b"".join([chunk async for chunk in formats.csv_rows(_pages())]).decode()
    assert csv_body.splitlines()[0].split(",") == list(PUBLIC_ORDER)
    geojson = orjson.loads(b"".join([chunk async for chunk in formats.geojson_points(_pages())]))
    for p, feature in zip(samples(), geojson["features"], strict=True):
        expected = {k: v for k, v in formats.position_dict(p).items() if k not in ("lat", "lon")}
        assert feature["properties"] == expected
        assert list(feature["properties"]) == [n for n in PUBLIC_ORDER if n not in ("lat", "lon")]
        assert feature["geometry"]["coordinates"] == [p.lon, p.lat, p.altitude_m]


def test_gpx_extensions_are_json_fields_with_their_values() -> None:
    for p in samples():
        point = ET.fromstring(
            f'<gpx xmlns:gp8="{formats.GP8_GPX_NAMESPACE}">{formats._trkpt(p)}</gpx>'
        )
        extensions = point.findall(f"trkpt/extensions/{{{formats.GP8_GPX_NAMESPACE}}}*")
        assert extensions
        rendered = formats.position_dict(p)
        for element in extensions:
            name = element.tag.rpartition("}")[2]
            assert name in PUBLIC_ORDER, name
            assert element.text == formats.csv_cell(rendered[name])


def _doc_type(prop: dict[str, Any]) -> str:
    """A JSON schema property as docs/api.md writes its type."""
    if "anyOf" in prop:
        return " or ".join(_doc_type(p) for p in prop["anyOf"])
    if prop["type"] == "array":
        return f"array of {_doc_type(prop['items'])}"
    if prop.get("format") == "date-time":
        return "string (date-time)"
    return str(prop["type"])


def test_docs_field_table_is_the_openapi_schema() -> None:
    """docs/api.md lists the fields with the types and descriptions /docs shows."""
    served = PositionPublic.model_json_schema()["properties"]
    expected = [
        f"| `{name}` | {_doc_type(prop)} | {prop['description']} |" for name, prop in served.items()
    ]
    match = _DOC_TABLE.search(DOC_PATH.read_text(encoding="utf-8"))
    assert match, "docs/api.md lost its <!-- fields: PositionPublic --> table"
    documented = match.group(1).splitlines()[2:]  # without the header and separator rows
    assert documented == expected, "docs/api.md should read:\n" + "\n".join(expected)


@pytest.mark.parametrize("attr", ["fleet_id", "vehicle_id"])
def test_tenant_and_vehicle_ids_are_not_served_inside_a_position(attr: str) -> None:
    # Every response already says whose position it is, next to it.
    assert by_attr(attr).public is None


async def test_positions_json_renders_the_same_and_gives_the_loop_turns() -> None:
    """A long history is rendered in chunks, with the event loop's turn between them: a box's
    ACK on the same loop waits for a chunk, not for the whole page (issue 11)."""
    fixes = [samples()[0]._replace(time_ms=t) for t in range(3 * formats.RENDER_CHUNK + 5)]
    turns = 0
    rendering = True

    async def count_turns() -> None:
        nonlocal turns
        while rendering:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    rendered = await formats.positions_json(fixes)
    rendering = False
    await counter
    assert orjson.loads(formats.dumps({"data": rendered}))["data"] == orjson.loads(
        orjson.dumps([formats.position_dict(p) for p in fixes])
    )
    assert turns >= 3  # one per chunk after the first, at least
    assert formats.dumps(await formats.positions_json([])) == b"[]"
