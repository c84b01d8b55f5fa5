"""Retention, exports, erasure and offboarding: the records both engines keep about them
(docs/gdpr.md). Engine-independent values only; the queries are in storage/*/retention.py.

Retention is per fleet and per `DataKind`, in days. What each kind covers, and what the purge
job (retention/purge.py) deletes for it once older than the fleet's period:

* ``positions``: positions (the last one of each vehicle too, see docs/gdpr.md), geofence
  crossings (location data), and through them everything derived (trips are computed from
  positions, the live stream's log keeps minutes only);
* ``events``: box events (each carries its position);
* ``alerts``: closed alerts, and closed theft cases whose legal hold has ended;
* ``commands``: final commands and the command audit's entries about a vehicle;
* ``access_log``: the access log;
* ``exports``: export jobs and their files.

A vehicle under a legal hold (an open theft case, or one closed less than its hold period
ago: docs/theft.md) keeps all of its data whatever its age.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DAY_MS = 86_400_000


class DataKind(StrEnum):
    POSITIONS = "positions"
    EVENTS = "events"
    ALERTS = "alerts"
    COMMANDS = "commands"
    ACCESS_LOG = "access_log"
    EXPORTS = "exports"


# The defaults every fleet starts with. Positions and events: two months, the CNIL's
# recommendation for activity control of employees' vehicles (61 days: any two calendar months).
# Alerts, commands and the access log: one year, long enough to answer a complaint about an
# alert or an order sent to a vehicle, and to show who read what (accountability). Exports: a
# week to download the file.
DEFAULT_RETENTION_DAYS: Mapping[DataKind, int] = {
    DataKind.POSITIONS: 61,
    DataKind.EVENTS: 61,
    DataKind.ALERTS: 365,
    DataKind.COMMANDS: 365,
    DataKind.ACCESS_LOG: 365,
    DataKind.EXPORTS: 7,
}
MIN_RETENTION_DAYS = 1
# Five years: the longest the processing agreement allows (e.g. a fleet's own legal duty).
MAX_RETENTION_DAYS = 5 * 366


@dataclass(frozen=True, slots=True)
class PurgeRun:
    """One purge of a fleet: when, and how many records of each table it deleted."""

    at_ms: int
    deleted: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class FleetRetention:
    """A fleet's periods (days per kind, every kind present) and its last purge."""

    fleet_id: str
    days: Mapping[DataKind, int]
    updated_ms: int | None = None  # None: the defaults, never changed
    updated_by: str | None = None  # API key id
    last_run: PurgeRun | None = None

    def cutoffs(self, now_ms: int) -> dict[DataKind, int]:
        """Per kind, the time before which records are past their period."""
        return {kind: now_ms - days * DAY_MS for kind, days in self.days.items()}


def default_retention(fleet_id: str) -> FleetRetention:
    return FleetRetention(fleet_id=fleet_id, days=dict(DEFAULT_RETENTION_DAYS))


def with_defaults(days: Mapping[str, int]) -> dict[DataKind, int]:
    """Stored periods completed with the defaults (a kind added by a later gp8 has none)."""
    merged = dict(DEFAULT_RETENTION_DAYS)
    for name, value in days.items():
        if name in DataKind.__members__.values():
            merged[DataKind(name)] = int(value)
    return merged


# --- exports (right of access and portability) ----------------------------------------------


class ExportStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ExportJob:
    """An export of one data subject's records (a vehicle or a driver) over [from_ms, to_ms)."""

    id: str
    fleet_id: str
    vehicle_id: str | None
    driver_badge: int | None
    from_ms: int
    to_ms: int
    requested_by: str | None  # API key id
    created_ms: int
    status: ExportStatus = ExportStatus.PENDING
    updated_ms: int = 0
    # While running: the worker's claim ends then unless renewed (a process that died leaves a
    # running job whose lease runs out; ExportRepo.fail_stale marks it failed).
    lease_ms: int | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    file_name: str | None = None  # under the exports directory, once done
    size_bytes: int | None = None


# --- erasure, rectification, offboarding ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offboarding:
    """A fleet at the end of its contract: read-only from ``started_ms``, erased at ``ends_ms``.

    Kept after the fleet is erased, as the deletion report: counts per table, no data.
    """

    fleet_id: str
    fleet_name: str
    started_ms: int
    ends_ms: int
    started_by: str | None  # API key id
    erased_ms: int | None = None
    deleted: Mapping[str, int] = field(default_factory=dict)


def driver_key(badge: int) -> int:
    """The stored value the driver queries (exports, erasure) match. Callers pass the badge
    as stored: a pseudonym when badges are pseudonymised (storage/pseudonyms.py; the API turns
    a client's badge into it, api/routes/erasure.py `stored_badge`), so storage matches as is.
    """
    return badge


# --- how both engines store these (one JSON document each, next to the queried columns) ----


def retention_data(r: FleetRetention) -> dict[str, Any]:
    return {
        "days": {str(kind): days for kind, days in r.days.items()},
        "updated_ms": r.updated_ms,
        "updated_by": r.updated_by,
        "last_run": None
        if r.last_run is None
        else {"at_ms": r.last_run.at_ms, "deleted": dict(r.last_run.deleted)},
    }


def to_retention(fleet_id: str, data: Mapping[str, Any]) -> FleetRetention:
    run = data.get("last_run")
    return FleetRetention(
        fleet_id=fleet_id,
        days=with_defaults(data.get("days", {})),
        updated_ms=data.get("updated_ms"),
        updated_by=data.get("updated_by"),
        last_run=None if run is None else PurgeRun(run["at_ms"], dict(run["deleted"])),
    )


def job_data(job: ExportJob) -> dict[str, Any]:
    data = dataclasses.asdict(job)
    data["status"] = str(job.status)
    data["counts"] = dict(job.counts)
    return data


def to_job(data: Mapping[str, Any]) -> ExportJob:
    fields = {f.name for f in dataclasses.fields(ExportJob)}
    values = {k: v for k, v in data.items() if k in fields}
    values["status"] = ExportStatus(values["status"])
    return ExportJob(**values)


def offboarding_data(o: Offboarding) -> dict[str, Any]:
    data = dataclasses.asdict(o)
    data["deleted"] = dict(o.deleted)
    return data


def to_offboarding(data: Mapping[str, Any]) -> Offboarding:
    fields = {f.name for f in dataclasses.fields(Offboarding)}
    return Offboarding(**{k: v for k, v in data.items() if k in fields})
