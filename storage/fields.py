"""A position's fields, defined once: name, type, unit, meaning, public name, stored names.

A position is listed by the storage model, by both engines and by every API format. Each of
those listings is either derived from `POSITION_FIELDS` when its module is imported, or, where
a derived version would cost the hot path, written out by hand and checked against it by
tests/storage/test_fields.py:

* derived: the SQLite column list, DDL and boolean columns (storage/sqlite/schema.py, rows.py),
  the event's JSON copy of its position, the Mongo document keys (storage/mongo/documents.py),
  the API schema with its OpenAPI descriptions (api/schemas/positions.py), the CSV header and
  the GeoJSON properties (api/services/formats.py);
* checked: `storage.models.Position` (a NamedTuple mypy can see, built positionally on the
  ingest path: a generated class would be neither), `api.services.formats.position_dict` (a
  dict literal: it runs for every fix of a history, and a loop over this table costs about 40%
  more per fix), the GPX extension elements, and the field table of docs/api.md.

Three spellings per field, on purpose: ``attr`` is the model's attribute, ``public`` the API's
name (a contract: clients parse it), and ``sqlite``/``mongo`` the names in existing databases
(a compatibility matter: changing one needs a migration, so they are pinned by a test, and
renaming an attribute leaves them alone). Today they only differ where the API serves a value
in another form (``time_ms`` is served as ``time``, an ISO-8601 string), and for the supply
voltage, ``external_power_mv`` everywhere but in the databases, which keep the column and key
``ext_power_mv`` of the first release.

storage/ is the lowest layer the API and the gateway share, so both may import this module;
it imports nothing of the project (protocol/ has its own, wire-level, record layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Kind(StrEnum):
    """How a stored value is served by the API (api.services.formats renders each kind)."""

    PLAIN = "plain"  # as stored
    EPOCH_MS = "epoch_ms"  # ms since the Unix epoch, served as ISO-8601 UTC with milliseconds
    WARNING_MASK = "warning_mask"  # protocol WarningLight bitmask, served as the lights' names
    # A badge number is an identifier, not a quantity: served as a string, so clients keep
    # every digit of a u64 (JavaScript numbers stop being exact at 2**53).
    BADGE = "badge"
    # A JSON object as stored (keys strings): the raw IO elements a box reported that have no
    # field of their own (Teltonika), so a profile can be changed later without data lost.
    OBJECT = "object"


class _Required(Enum):
    REQUIRED = "required"


# The default of a field that has none (None is a default: driver_badge's).
REQUIRED = _Required.REQUIRED


@dataclass(frozen=True, slots=True)
class PositionField:
    """One field of a stored position, and how each listing names and shows it."""

    attr: str  # the attribute of storage.models.Position
    py_type: type  # its type, without None
    description: str  # one line; feeds the OpenAPI description and docs/api.md
    unit: str = ""  # of the value as served and stored; "" for counts, flags and times
    public: str | None = None  # the API's name (JSON, CSV, GeoJSON); None: not served
    kind: Kind = Kind.PLAIN
    nullable: bool = False
    default: object = REQUIRED  # the model's default
    sqlite: str | None = None  # the SQLite column when it is not ``attr``
    mongo: str | None = None  # the Mongo document key when it is not ``attr``

    @property
    def sqlite_column(self) -> str:
        return self.sqlite or self.attr

    @property
    def mongo_key(self) -> str:
        return self.mongo or self.attr

    @property
    def public_name(self) -> str:
        if self.public is None:
            raise ValueError(f"position field {self.attr} is not served by the API")
        return self.public


def _served(attr: str, py_type: type, description: str, unit: str = "") -> PositionField:
    """The usual row: served as stored, under its own name."""
    return PositionField(attr, py_type, description, unit, public=attr)


# In the model's order, which is also the SQLite column order (rows map to Position(*row)) and
# the positional order the ingest path builds a Position in: append new fields, never insert.
POSITION_FIELDS: tuple[PositionField, ...] = (
    PositionField("fleet_id", str, "The fleet the position belongs to (tenant key)"),
    _served("device_id", str, "The box that reported the fix"),
    PositionField(
        "vehicle_id",
        str,
        "The vehicle the box was fitted to when the fix was taken; null for an unfitted box",
        nullable=True,
    ),
    PositionField(
        "time_ms",
        int,
        "When the fix was taken (the box's GPS clock); with device_id, the fix's identity",
        public="time",
        kind=Kind.EPOCH_MS,
    ),
    PositionField(
        "received_ms",
        int,
        "When gp8 received the record",
        public="received_at",
        kind=Kind.EPOCH_MS,
    ),
    _served("lat", float, "Latitude (WGS 84), north positive", "degrees"),
    _served("lon", float, "Longitude (WGS 84), east positive", "degrees"),
    _served("altitude_m", int, "Altitude above mean sea level", "m"),
    _served("speed_kmh", float, "Ground speed", "km/h"),
    _served("heading_deg", float, "Course over ground, clockwise from true north", "degrees"),
    _served("satellites", int, "Satellites used in the fix"),
    _served("hdop", float, "Horizontal dilution of precision (25.5: that or worse)"),
    _served(
        "fix_valid",
        bool,
        "The position comes from a valid GPS fix (if not, it repeats the last known one)",
    ),
    _served("ignition", bool, "Ignition is on"),
    _served("doors_locked", bool, "Central locking reports locked"),
    _served("engine_start_inhibited", bool, "The engine-start inhibit relay is engaged"),
    _served(
        "external_power", bool, "The box runs on the vehicle supply (false: on its backup battery)"
    ),
    _served("odometer_m", int, "The box's odometer", "m"),
    PositionField(
        "external_power_mv",
        int,
        "External (vehicle) supply voltage",
        "mV",
        public="external_power_mv",
        # Stored under the wire protocol's name since the first release; kept (no migration).
        sqlite="ext_power_mv",
        mongo="ext_power_mv",
    ),
    _served("battery_mv", int, "The box's backup battery voltage", "mV"),
    _served("gsm_signal", int, "Cellular signal, 3GPP CSQ 0..31, 99 unknown"),
    PositionField(
        "warnings",
        int,
        "Dashboard warning lights on, lower case: engine, oil_pressure, brake, ...",
        public="warnings",
        kind=Kind.WARNING_MASK,
    ),
    PositionField(
        "driver_badge",
        int,
        "The pseudonym of the driver badge (RFID/iButton) presented for this trip "
        "(docs/privacy.md); null when none",
        public="driver_badge",
        kind=Kind.BADGE,
        nullable=True,
        default=None,
    ),
    PositionField(
        "buffered",
        bool,
        "The box kept this fix while offline and sent it late",
        public="buffered",
        default=False,
    ),
    PositionField(
        "io",
        dict,
        "IO elements the box reported that have no field of their own, raw: IO id -> value "
        "(an integer; variable-size and 8-byte values beyond 2^63-1 as hex); null when none",
        public="io",
        kind=Kind.OBJECT,
        nullable=True,
        default=None,
    ),
)

# The API's order of the served fields, which is the CSV column order (a contract): the time
# first, where a reader of a track looks, and the box's identity last, as it rarely changes.
PUBLIC_ORDER: tuple[str, ...] = (
    "time",
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
    "external_power_mv",
    "battery_mv",
    "gsm_signal",
    "warnings",
    "driver_badge",
    "received_at",
    "device_id",
    "buffered",
    "io",
)


def _public_fields() -> tuple[PositionField, ...]:
    by_name = {f.public: f for f in POSITION_FIELDS if f.public is not None}
    if set(by_name) != set(PUBLIC_ORDER) or len(PUBLIC_ORDER) != len(by_name):
        # At import, so a field added to one list and not the other cannot ship.
        raise ValueError(
            f"PUBLIC_ORDER {sorted(PUBLIC_ORDER)} is not the served fields {sorted(by_name)}"
        )
    return tuple(by_name[name] for name in PUBLIC_ORDER)


PUBLIC_POSITION_FIELDS: tuple[PositionField, ...] = _public_fields()

POSITION_ATTRS: tuple[str, ...] = tuple(f.attr for f in POSITION_FIELDS)

# Fields that queries, indexes and cursors of both engines name literally (and the SQLite
# last_positions table copies): their stored names must stay their attribute names.
QUERIED_ATTRS: tuple[str, ...] = ("fleet_id", "device_id", "vehicle_id", "time_ms", "lat", "lon")
