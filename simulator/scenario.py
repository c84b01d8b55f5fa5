"""Scenarios as data: what the vehicles do and what their cellular link goes through, phase by
phase. The format is documented in docs/simulator.md; the built-in scenarios are the files in
simulator/scenarios/ (TOML), and testers write their own in TOML, JSON or YAML.

Parsing is strict: an unknown key, a duration that does not parse or a rate out of range is a
`ScenarioError` naming the file and the key, so a typo never silently runs another scenario.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from protocol.gp8 import EventCode, WarningLight
from simulator.trajectory import Motion

SCENARIO_PACKAGE = "simulator.scenarios"
SUFFIXES = (".toml", ".json", ".yaml", ".yml")
# Corrupted frames per position, at most.
MAX_GARBAGE_RATE = 5.0
# Faster than this fraction of the limit is not a driver any more.
MAX_PHASE_SPEED_FACTOR = 1.5
# Phases of a scenario, at most: a scenario is a story, not a log.
MAX_PHASES = 1000
# GPS jitter beyond this is no receiver's noise any more (a multipath city canyon is ~50 m).
MAX_GPS_JITTER_M = 200.0


class ScenarioError(ValueError):
    """A scenario that cannot be loaded: the message names the file and the key."""


class Behaviour(StrEnum):
    NORMAL = "normal"
    DRIVE = "drive"
    PARK = "park"
    TOW = "tow"
    TUNNEL = "tunnel"
    OFFLINE = "offline"
    STORM = "storm"
    GARBAGE = "garbage"


class Replay(StrEnum):
    IN_ORDER = "in_order"  # the backlog goes first when the link returns, oldest first
    LATE = "late"  # live records first, the backlog after `replay_delay`: out of order


# What each behaviour means, as defaults for the phase's keys.
_PRESETS: dict[Behaviour, dict[str, Any]] = {
    Behaviour.NORMAL: {},
    Behaviour.DRIVE: {"motion": Motion.DRIVE},
    Behaviour.PARK: {"motion": Motion.PARK},
    Behaviour.TOW: {"motion": Motion.TOW},
    Behaviour.TUNNEL: {"motion": Motion.DRIVE, "gps": False},
    Behaviour.OFFLINE: {"online": False},
    Behaviour.STORM: {"storm": True},
    Behaviour.GARBAGE: {"garbage_rate": 0.2},
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|s|min|m|h|d)", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LOCAL_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10min"``, ``"2h"``, ``"1h30min"``, ``"500ms"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _DURATION.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_S[match.group(2).lower()]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"{value!r} is not a duration (examples: 90, 90s, 10min, 2h, 1h30min)"
                ) from None
    else:
        raise ValueError(f"{value!r} is not a duration")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{value!r}: a duration is a finite number of seconds >= 0")
    return seconds


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    behaviour: Behaviour
    motion: Motion
    duration_s: float | None  # None: open-ended (last phase only)
    gps: bool = True  # False: GPS denied, fixes are invalid
    online: bool = True
    replay: Replay = Replay.IN_ORDER
    replay_delay_s: float = 60.0
    drop_rate: float = 0.0  # probability per send that the link drops mid-frame
    garbage_rate: float = 0.0  # corrupted frames per position sent
    storm: bool = False  # every box drops its link and reconnects when the phase starts
    storm_spread_s: float = 0.0  # reconnections spread over this many (wall) seconds
    lock: bool | None = None  # the driver locks (True) or never locks (False) when parking
    badge: bool | None = None  # a badge at every start (True) or none (False)
    warnings: int = 0  # WarningLight bits that come on when the phase starts
    events: tuple[EventCode, ...] = ()  # events the box reports when the phase starts
    speed_factor: tuple[float, float] | None = None
    night_parking: bool | None = None
    interval_s: float | None = None  # report interval during the phase
    # Each valid fix of the phase is off by up to this many metres, in a random direction: the
    # noise of a receiver standing still (geofence hysteresis is tested with it).
    gps_jitter_m: float = 0.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    phases: tuple[Phase, ...]
    interval_s: float | None = None  # the scenario's report interval, unless the CLI says
    start_local_min: int | None = None  # minutes after local midnight the scenario starts at
    repeat: bool = False  # loop over the phases forever
    source: str = ""

    @property
    def duration_s(self) -> float | None:
        """Total simulated time of the phases; None when open-ended or repeating."""
        if self.repeat or any(p.duration_s is None for p in self.phases):
            return None
        return sum(p.duration_s or 0.0 for p in self.phases)

    def cycle_s(self) -> float:
        return sum(p.duration_s or 0.0 for p in self.phases)

    def phase_at(self, offset_s: float) -> tuple[int, float]:
        """The index of the phase at ``offset_s`` seconds into the scenario, and when that
        phase started (seconds into the scenario). After the end: the last phase."""
        cycle = self.cycle_s()
        base = 0.0
        if self.repeat and cycle > 0 and offset_s >= cycle:
            laps = offset_s // cycle
            base = laps * cycle
            offset_s -= base
        start = 0.0
        for index, phase in enumerate(self.phases):
            if phase.duration_s is None or offset_s < start + phase.duration_s:
                return index, base + start
            start += phase.duration_s
        last = len(self.phases) - 1
        return last, base + start - (self.phases[last].duration_s or 0.0)


# --- loading ----------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    folder = resources.files(SCENARIO_PACKAGE)
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    )


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name (``theft``), or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix.lower() in SUFFIXES or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: {exc.strerror or exc}") from exc
        return parse_scenario(text, source=str(path), fmt=path.suffix.lower().lstrip("."))
    resource = resources.files(SCENARIO_PACKAGE) / f"{name_or_path}.toml"
    if not resource.is_file():
        names = ", ".join(builtin_names())
        raise ScenarioError(f"no scenario {name_or_path!r}: built-in ones are {names}, or a path")
    return parse_scenario(resource.read_text(encoding="utf-8"), source=f"{name_or_path}.toml")


def parse_scenario(text: str, *, source: str = "<scenario>", fmt: str = "toml") -> Scenario:
    """Parse and validate a scenario document (``fmt``: toml, json, yaml or yml)."""
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt in ("yaml", "yml"):
            try:
                yaml = importlib.import_module("yaml")  # optional: PyYAML, no type stubs
            except ImportError:  # pragma: no cover
                raise ScenarioError(f"{source}: reading YAML needs PyYAML installed") from None
            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except ScenarioError:
        raise
    except Exception as exc:  # every parser has its own error class: one boundary here
        raise ScenarioError(f"{source}: not valid {fmt.upper()}: {exc}") from exc
    return _Reader(source).scenario(data)


_TOP_KEYS = {"name", "description", "interval", "start_local", "repeat", "defaults", "phases"}
_PHASE_KEYS = {
    "name",
    "behaviour",
    "behavior",
    "motion",
    "duration",
    "gps",
    "gps_jitter",
    "link",
    "replay",
    "replay_delay",
    "drop_rate",
    "garbage_rate",
    "storm",
    "storm_spread",
    "lock",
    "badge",
    "warnings",
    "events",
    "speed_factor",
    "night_parking",
    "interval",
}


class _Reader:
    """Validation with locations: every error says which file and which key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {where}: {message}")

    def scenario(self, data: object) -> Scenario:
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{self.source}: a scenario is a table of keys")
        self.unknown(data, _TOP_KEYS, "scenario")
        name = self.text(data.get("name", Path(self.source).stem), "name")
        description = self.text(data.get("description", ""), "description")
        interval = self.interval(data.get("interval"), "interval")
        start_local = None
        if "start_local" in data:
            raw = data["start_local"]
            match = _LOCAL_TIME.fullmatch(raw) if isinstance(raw, str) else None
            if match is None:
                raise self.fail("start_local", f"{raw!r} is not a local time HH:MM")
            start_local = int(match.group(1)) * 60 + int(match.group(2))
        repeat = self.flag(data.get("repeat", False), "repeat")
        defaults = data.get("defaults", {})
        if not isinstance(defaults, Mapping):
            raise self.fail("defaults", "must be a table of phase keys")
        self.unknown(defaults, _PHASE_KEYS - {"name", "duration"}, "defaults")
        raw_phases = data.get("phases")
        if not isinstance(raw_phases, list) or not raw_phases:
            raise self.fail("phases", "a scenario needs a non-empty list of [[phases]]")
        if len(raw_phases) > MAX_PHASES:
            raise self.fail("phases", f"at most {MAX_PHASES} phases")
        phases = []
        for index, raw in enumerate(raw_phases):
            where = f"phases[{index}]"
            if not isinstance(raw, Mapping):
                raise self.fail(where, "a phase is a table of keys")
            self.unknown(raw, _PHASE_KEYS, where)
            last = index == len(raw_phases) - 1
            phases.append(self.phase({**defaults, **raw}, where, last=last, index=index))
        if repeat and any(p.duration_s is None for p in phases):
            raise self.fail("repeat", "a repeating scenario needs a duration on every phase")
        if repeat and sum(p.duration_s or 0.0 for p in phases) <= 0:
            raise self.fail("repeat", "a repeating scenario must last longer than 0 s")
        return Scenario(
            name=name,
            description=description,
            phases=tuple(phases),
            interval_s=interval,
            start_local_min=start_local,
            repeat=repeat,
            source=self.source,
        )

    def phase(self, raw: Mapping[str, Any], where: str, *, last: bool, index: int) -> Phase:
        behaviour_raw = raw.get("behaviour", raw.get("behavior", Behaviour.NORMAL.value))
        behaviour = self.choice(behaviour_raw, Behaviour, f"{where}.behaviour")
        values: dict[str, Any] = {"motion": Motion.NORMAL, **_PRESETS[behaviour]}
        if "motion" in raw:
            values["motion"] = self.choice(raw["motion"], Motion, f"{where}.motion")
        if "duration" in raw:
            values["duration_s"] = self.duration(raw["duration"], f"{where}.duration")
        elif not last:
            raise self.fail(f"{where}.duration", "required (only the last phase may be open)")
        else:
            values["duration_s"] = None
        if "gps" in raw:
            gps = raw["gps"]
            if gps not in ("ok", "denied", True, False):
                raise self.fail(f"{where}.gps", f'{gps!r}: use "ok" or "denied"')
            values["gps"] = gps in ("ok", True)
        if "gps_jitter" in raw:
            values["gps_jitter_m"] = self.rate(
                raw["gps_jitter"], f"{where}.gps_jitter", MAX_GPS_JITTER_M
            )
        if "link" in raw:
            link = raw["link"]
            if link not in ("online", "offline"):
                raise self.fail(f"{where}.link", f'{link!r}: use "online" or "offline"')
            values["online"] = link == "online"
        if "replay" in raw:
            values["replay"] = self.choice(raw["replay"], Replay, f"{where}.replay")
        if "replay_delay" in raw:
            values["replay_delay_s"] = self.duration(raw["replay_delay"], f"{where}.replay_delay")
        if "drop_rate" in raw:
            values["drop_rate"] = self.rate(raw["drop_rate"], f"{where}.drop_rate", 1.0)
        if "garbage_rate" in raw:
            values["garbage_rate"] = self.rate(
                raw["garbage_rate"], f"{where}.garbage_rate", MAX_GARBAGE_RATE
            )
        if "storm" in raw:
            values["storm"] = self.flag(raw["storm"], f"{where}.storm")
        if "storm_spread" in raw:
            values["storm_spread_s"] = self.duration(raw["storm_spread"], f"{where}.storm_spread")
        for key in ("lock", "badge", "night_parking"):
            if key in raw:
                values[key] = self.flag(raw[key], f"{where}.{key}")
        if "warnings" in raw:
            values["warnings"] = self.warnings(raw["warnings"], f"{where}.warnings")
        if "events" in raw:
            values["events"] = self.events(raw["events"], f"{where}.events")
        if "speed_factor" in raw:
            values["speed_factor"] = self.speed_factor(raw["speed_factor"], f"{where}.speed_factor")
        if "interval" in raw:
            values["interval_s"] = self.interval(raw["interval"], f"{where}.interval")
        name = self.text(raw.get("name", f"{index + 1}:{behaviour.value}"), f"{where}.name")
        return Phase(name=name, behaviour=behaviour, **values)

    # --- value checks ----------------------------------------------------------------------

    def unknown(self, data: Mapping[str, Any], allowed: set[str], where: str) -> None:
        extra = sorted(str(k) for k in data if k not in allowed)
        if extra:
            raise self.fail(where, f"unknown key(s) {', '.join(extra)}")

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "must be a string")
        return value

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"{value!r}: use true or false")
        return value

    def duration(self, value: object, where: str) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None

    def interval(self, value: object, where: str) -> float | None:
        if value is None:
            return None
        seconds = self.duration(value, where)
        if seconds <= 0:
            raise self.fail(where, "a report interval must be longer than 0 s")
        return seconds

    def rate(self, value: object, where: str, maximum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"{value!r} is not a number")
        if not 0 <= value <= maximum:
            raise self.fail(where, f"{value} is outside 0..{maximum}")
        return float(value)

    def choice(self, value: object, enum: type[StrEnum], where: str) -> Any:
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return enum(value)
        except ValueError:
            options = ", ".join(e.value for e in enum)
            raise self.fail(where, f"{value!r}: one of {options}") from None

    def warnings(self, value: object, where: str) -> int:
        if not isinstance(value, list):
            raise self.fail(where, 'a list of warning light names, e.g. ["engine"]')
        bits = 0
        for name in value:
            try:
                bits |= int(WarningLight[str(name).upper()])
            except KeyError:
                options = ", ".join(w.name.lower() for w in WarningLight if w.name)
                raise self.fail(where, f"{name!r}: one of {options}") from None
        return bits

    def events(self, value: object, where: str) -> tuple[EventCode, ...]:
        if not isinstance(value, list):
            raise self.fail(where, 'a list of event names, e.g. ["sos"]')
        codes = []
        for name in value:
            try:
                codes.append(EventCode[str(name).upper()])
            except KeyError:
                options = ", ".join(e.name.lower() for e in EventCode)
                raise self.fail(where, f"{name!r}: one of {options}") from None
        return tuple(codes)

    def speed_factor(self, value: object, where: str) -> tuple[float, float]:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise self.fail(where, "two numbers [low, high], fractions of the speed limit")
        low, high = float(value[0]), float(value[1])
        if not 0 < low <= high <= MAX_PHASE_SPEED_FACTOR:
            raise self.fail(where, f"need 0 < low <= high <= {MAX_PHASE_SPEED_FACTOR}")
        return low, high
