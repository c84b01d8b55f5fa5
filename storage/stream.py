"""The live stream's log: every change of a fleet's data, in storage order (GET /v1/stream).

Both engines keep one append-only log per fleet, written by the repositories themselves as
they store (positions and events by `telemetry.store`, in the same transaction on SQLite;
alerts and commands as they change), so what one gp8 process stores reaches stream clients
connected to any other process through the database, not process memory.

Blocks: what one write appends for one fleet (a flush's positions and events, an alert) is one
stored *block*, numbered 1, 2, 3... per fleet without holes; an entry's cursor is
``block << BLOCK_BITS | index in the block``, so cursors only ever increase and a consumer
resumes after the last cursor it saw. One row per flush and fleet rather than one per record
keeps the log's cost to a small fraction of the ingest's (a row per position halved it).
Entries are kept for a retention window (`prune`); asking after a cursor older than that is a
typed error (`CursorExpired`), never a silent skip.

Holes: SQLite numbers blocks inside its single writer's transaction, so they become visible in
order. MongoDB takes a number from the fleet's counter first and inserts after, so two
processes may make block 12 visible before 11; a reader that meets a hole waits for it (up to
HOLE_GRACE_MS of the later block's age) rather than step over one about to appear, and only
then treats it as lost (a write that failed after taking its number).

This module is the engine-neutral part: how each kind of item is written into an entry and
read back (JSON-ready data), and the hole rule.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from itertools import groupby
from operator import attrgetter, sub
from typing import Any

from storage.models import (
    Alert,
    CommandRecord,
    Event,
    Position,
    StreamEntry,
    StreamKind,
    StreamPage,
)

# How long a reader waits for a hole in a fleet's cursors to fill (see the module docstring).
HOLE_GRACE_MS = 2_000
# Entries kept by default: what a consumer that disconnects can catch up on.
RETENTION_S = 15 * 60
# Entries one `after` call scans at most.
MAX_PAGE = 5_000
# Index bits of a cursor: a block holds at most 2**16 entries (a bigger append is split).
BLOCK_BITS = 16
BLOCK_SIZE = 1 << BLOCK_BITS

Doc = dict[str, Any]


def kind_of(item: object) -> StreamKind:
    kind = _KIND_BY_TYPE.get(type(item))
    if kind is None:
        raise TypeError(f"{type(item).__name__} has no stream kind")
    return kind


def vehicle_of(item: object) -> str | None:
    vehicle_id = getattr(item, "vehicle_id", None)
    return vehicle_id if isinstance(vehicle_id, str) else None


@dataclass(frozen=True, slots=True)
class PositionRef:
    """A position in the log by its key only: the log of the hot path holds references (a
    copy of every position doubled the bytes ingest writes); `after` reads them back from
    the positions themselves."""

    device_id: str
    time_ms: int


def encode(item: object) -> Any:
    """The item as JSON-ready data: a position as its key [device_id, time_ms], anything else
    as a dict with enums by value (an event with its position as a dict)."""
    if isinstance(item, Position):
        return (item.device_id, item.time_ms)
    if isinstance(item, Event):
        return {**_flat(item, skip="position"), "position": item.position._asdict()}
    return _flat(item)


def decode(kind: StreamKind, data: Any) -> object:
    """The item back; a position as a PositionRef, which the engine resolves."""
    cls = _TYPE_BY_KIND[kind]
    if cls is Position:
        return PositionRef(data[0], data[1])
    if cls is Event:
        fields = _revive(Event, data, skip="position")
        return Event(**fields, position=Position(**data["position"]))
    return cls(**_revive(cls, data))


def register(kind: StreamKind, cls: type) -> None:
    """Let a new flat dataclass travel on the stream (theft cases, ...)."""
    _KIND_BY_TYPE[cls] = kind
    _TYPE_BY_KIND[kind] = cls


_KIND_BY_TYPE: dict[type, StreamKind] = {
    Position: StreamKind.POSITION,
    Event: StreamKind.EVENT,
    Alert: StreamKind.ALERT,
    CommandRecord: StreamKind.COMMAND,
}
_TYPE_BY_KIND: dict[StreamKind, type] = {v: k for k, v in _KIND_BY_TYPE.items()}


def _flat(item: object, skip: str = "") -> Doc:
    out: Doc = {}
    for f in dataclasses.fields(item):  # type: ignore[arg-type]
        if f.name == skip:
            continue
        value = getattr(item, f.name)
        out[f.name] = value.value if isinstance(value, Enum) else value
    return out


def _revive(cls: type, data: Doc, skip: str = "") -> Doc:
    """Field values back to their types: enums from their values (the rest is JSON-native)."""
    out = {k: v for k, v in data.items() if k != skip}
    for name, convert in _converters(cls).items():
        if out.get(name) is not None:
            out[name] = convert(out[name])
    return out


@cache
def _converters(cls: type) -> dict[str, Callable[[Any], Any]]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Callable[[Any], Any]] = {}
    for name, hint in hints.items():
        for candidate in (hint, *typing.get_args(hint)):
            if isinstance(candidate, type) and issubclass(candidate, Enum):
                out[name] = candidate
                break
    return out


def cursor_of(block: int, index: int) -> int:
    return block << BLOCK_BITS | index


def split_cursor(cursor: int) -> tuple[int, int]:
    return cursor >> BLOCK_BITS, cursor & (BLOCK_SIZE - 1)


def pack(items: Sequence[Any]) -> list[tuple[int, Any]]:
    """``items`` as blocks: (entry count, JSON-ready data) each, at most BLOCK_SIZE entries.

    A block is a list of entries ``[kind, vehicle_id, encode(item)]``, except a block of
    positions only (an ingest flush: runs of one box's fixes, a frame each), which is written as
    runs, ``{"runs": [[vehicle_id, device_id, first time_ms, [time deltas...]], ...]}``: about a
    seventh of the bytes, and a tenth less SQLite writer time per stored position
    (bench/bench_ingest.py). `block_entries` reads both back as the same list.
    """
    out = []
    for start in range(0, len(items), BLOCK_SIZE):
        chunk = items[start : start + BLOCK_SIZE]
        data: Any
        if set(map(type, chunk)) == _ONLY_POSITIONS:
            data = {_RUNS: _runs(chunk)}
        else:
            data = [(kind_of(item).value, vehicle_of(item), encode(item)) for item in chunk]
        out.append((len(chunk), data))
    return out


def block_entries(data: Any) -> list[Any]:
    """A block's entries ``[kind, vehicle_id, encoded item]`` in order, whichever way `pack`
    wrote it."""
    if not isinstance(data, dict):
        return data  # type: ignore[no-any-return]
    out: list[Any] = []
    for vehicle_id, device_id, time_ms, deltas in data[_RUNS]:
        out.append((_POSITION_KIND, vehicle_id, (device_id, time_ms)))
        for delta in deltas:
            time_ms += delta
            out.append((_POSITION_KIND, vehicle_id, (device_id, time_ms)))
    return out


def _runs(positions: Sequence[Position]) -> list[tuple[str | None, str, int, list[int]]]:
    runs = []
    for (vehicle_id, device_id), run in groupby(positions, key=_subject_ids):
        times = list(map(_time, run))
        runs.append((vehicle_id, device_id, times[0], list(map(sub, times[1:], times))))
    return runs


_RUNS = "runs"
_ONLY_POSITIONS = {Position}
_subject_ids = attrgetter("vehicle_id", "device_id")
_time = attrgetter("time_ms")
_POSITION_KIND = StreamKind.POSITION.value


def last_cursor(block: int, count: int) -> int:
    """The cursor of a block's last entry."""
    return cursor_of(block, count - 1)


def page(
    blocks: Sequence[tuple[int, int, Any]],
    fleet_id: str,
    cursor: int,
    *,
    kinds: Collection[StreamKind] | None,
    vehicle_id: str | None,
    limit: int,
    now_ms: int,
) -> StreamPage:
    """Entries after ``cursor`` from ``blocks`` (number, created_ms, data), in cursor order,
    stopping at a young hole or after ``limit`` entries scanned, then filtered; see the module
    docstring. ``blocks`` start at the block holding ``cursor`` (or the first after it)."""
    entries: list[StreamEntry] = []
    start_block, start_index = split_cursor(cursor)
    last = cursor
    expected = start_block  # the block that holds ``cursor``, then each next one
    scanned = 0
    for number, created_ms, data in blocks:
        if number == start_block:
            first = start_index + 1
        elif number == expected + 1 or now_ms - created_ms >= HOLE_GRACE_MS:
            first = 0  # the next block, or one after a hole old enough to be a lost write
        else:
            break  # an earlier block may still be on its way: wait for it
        expected = number
        data = block_entries(data)
        for index in range(first, len(data)):
            if scanned >= limit:
                return StreamPage(entries, last)
            scanned += 1
            kind_value, row_vehicle, item = data[index]
            last = cursor_of(number, index)
            kind = StreamKind(kind_value)
            if kinds is not None and kind not in kinds:
                continue
            if vehicle_id is not None and row_vehicle != vehicle_id:
                continue
            entries.append(
                StreamEntry(fleet_id, last, kind, row_vehicle, created_ms, decode(kind, item))
            )
    return StreamPage(entries, last)


def refs(page_: StreamPage) -> list[PositionRef]:
    return [e.item for e in page_.entries if isinstance(e.item, PositionRef)]


def resolved(page_: StreamPage, found: dict[PositionRef, Position]) -> StreamPage:
    """``page_`` with its position references replaced by the positions ``found``; an entry
    whose position is gone (the fleet erased meanwhile) is left out."""
    entries = []
    for entry in page_.entries:
        if isinstance(entry.item, PositionRef):
            position = found.get(entry.item)
            if position is None:
                continue
            entry = dataclasses.replace(entry, item=position)
        entries.append(entry)
    return StreamPage(entries, page_.cursor)
