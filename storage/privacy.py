"""Privacy mode and pseudonymised drivers as storage keeps them (docs/privacy.md).

Privacy mode is decided at read time from three kinds of facts, never by rewriting positions:

* a vehicle's schedule *history*: each change is a row with the time it takes effect, so a
  schedule set today does not hide (or reveal) what was stored under yesterday's;
* privacy-badge toggles: each presentation of the fleet's privacy badge flips the vehicle's
  private state at that fix's time (sorted times: [t0, t1), [t2, t3), ... are private);
* the fleet's privacy badge, as its pseudonym (storage/pseudonyms.py). A box whose profile has
  a privacy switch (an input, gateway/adapters/teltonika.py) reports its position as the event
  `PRIVACY_SWITCH_EVENT`; the processing stage turns a change of it into a toggle.

An open theft case overrides all of it (tracking/privacy.py decides; this module only holds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The event of a box's privacy switch (its profile's input): detail 1 on (private), 0 off.
PRIVACY_SWITCH_EVENT = "privacy_switch"


@dataclass(frozen=True, slots=True)
class PrivacyWindow:
    """Private on ``days`` (ISO weekdays, 1 = Monday) from ``start`` to ``end`` ("HH:MM",
    local time; ``end`` before ``start`` runs past midnight and belongs to its start day)."""

    days: tuple[int, ...]
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class PrivacySchedule:
    """A weekly schedule of private hours in the IANA zone ``timezone``."""

    timezone: str
    windows: tuple[PrivacyWindow, ...]


@dataclass(frozen=True, slots=True)
class ScheduleChange:
    """``schedule`` applies to the vehicle's fixes from ``effective_ms`` on (None: no schedule
    any more), until the next change."""

    vehicle_id: str
    effective_ms: int
    schedule: PrivacySchedule | None
    set_by: str | None = None  # API key id


@dataclass(frozen=True, slots=True)
class FleetPrivacy:
    """What a read path needs to decide privacy for a fleet (or one of its vehicles)."""

    fleet_id: str
    # Per vehicle, oldest change first.
    changes: Mapping[str, tuple[ScheduleChange, ...]] = field(default_factory=dict)
    # Per vehicle, the times the privacy badge was presented, in time order.
    toggles: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    badge: int | None = None  # the fleet's privacy badge (pseudonym); None: none set


@dataclass(frozen=True, slots=True)
class Driver:
    """A badge's pseudonym mapped to a driver's name (GET /v1/drivers)."""

    id: str
    fleet_id: str
    badge: int  # the pseudonym (storage/pseudonyms.py), never the badge itself
    name: str
    created_ms: int


# --- the stored form of a schedule (JSON, the same on both engines) -------------------------


def schedule_data(schedule: PrivacySchedule | None) -> dict[str, Any] | None:
    if schedule is None:
        return None
    return {
        "tz": schedule.timezone,
        "private": [{"days": list(w.days), "from": w.start, "to": w.end} for w in schedule.windows],
    }


def to_schedule(data: Mapping[str, Any] | None) -> PrivacySchedule | None:
    if data is None:
        return None
    return PrivacySchedule(
        timezone=data["tz"],
        windows=tuple(PrivacyWindow(tuple(w["days"]), w["from"], w["to"]) for w in data["private"]),
    )
