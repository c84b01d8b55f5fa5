"""Hash chains over the audit logs (the access log and the command audit), one per fleet.

Each entry carries its place in its fleet's chain (``seq``: 1, 2, 3, ...), the hash of the
entry before it (``prev_hash``; `GENESIS` for the first) and its own ``hash``: SHA-256 over the
canonical encoding of every other field, ``seq`` and ``prev_hash`` included. Editing an entry
in the database breaks its own hash; deleting one leaves a gap in ``seq`` and a ``prev_hash``
that names no entry; both are found by `verify` at that entry. Platform-wide entries (no fleet)
form a chain of their own.

The canonical encoding is JSON with sorted keys, no whitespace, UTF-8 (orjson): stable across
engines and versions, since every field is a string, an integer or null. Storage fills the
chain fields when it appends, inside the write that reads the chain's head (SQLite: the writer
transaction; MongoDB: an insert guarded by a unique (fleet, seq) index, retried on a race), so
two processes appending to one chain cannot fork it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

GENESIS = "0" * 64
# The fields an entry's own hash does not cover: the hash itself.
_UNHASHED = frozenset({"hash"})


class Chained(Protocol):
    """An audit entry (AccessLogEntry, AuditEntry): a dataclass with the chain fields."""

    @property
    def id(self) -> str: ...
    @property
    def fleet_id(self) -> str | None: ...
    @property
    def seq(self) -> int: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


E = TypeVar("E", bound=Chained)


@functools.cache
def _hashed_names(model: type[Any]) -> tuple[str, ...]:
    # dataclasses.fields builds its tuple anew each call: once per model, not per entry.
    return tuple(f.name for f in dataclasses.fields(model) if f.name not in _UNHASHED)


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def entry_hash(entry: Chained) -> str:
    """SHA-256 (hex) of the entry's canonical encoding, ``hash`` left out."""
    return _digest({name: getattr(entry, name) for name in _hashed_names(type(entry))})


def link(entry: E, head_seq: int, head_hash: str | None) -> E:
    """``entry`` as the next link after the chain's head (``head_hash`` None: empty chain)."""
    # Hashed as `entry_hash` would hash the placed entry, built once (every append runs this
    # on the writer thread, GIL held).
    fields = {name: getattr(entry, name) for name in _hashed_names(type(entry))}
    fields["seq"] = head_seq + 1
    fields["prev_hash"] = head_hash or GENESIS
    return dataclasses.replace(  # type: ignore[type-var]
        entry, seq=fields["seq"], prev_hash=fields["prev_hash"], hash=_digest(fields)
    )


@dataclass(frozen=True, slots=True)
class Broken:
    """The first link of a chain that does not hold, and why."""

    seq: int  # where the chain breaks: the entry's seq, or the missing one's
    entry_id: str | None  # the entry found there; None when it is missing
    reason: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What `verify` found in one chain."""

    entries: int
    first_seq: int  # 0 for an empty chain
    last_seq: int
    broken: Broken | None


async def verify(entries: AsyncIterable[Chained]) -> ChainReport:
    """Check one chain read in ``seq`` order; stops at the first broken link.

    The chain may begin after 1 (retention deleted its oldest entries): its first entry is
    then taken on trust, and everything after it is checked.
    """
    count = 0
    first = last = 0
    prev: str | None = None
    async for entry in entries:
        count += 1
        if prev is None:
            first = entry.seq
            if entry.seq == 1 and entry.prev_hash != GENESIS:
                return ChainReport(
                    count, first, entry.seq, Broken(1, entry.id, "the first entry has a prev_hash")
                )
        else:
            if entry.seq != last + 1:
                return ChainReport(
                    count, first, last, Broken(last + 1, None, f"entry {last + 1} is missing")
                )
            if entry.prev_hash != prev:
                return ChainReport(
                    count,
                    first,
                    entry.seq,
                    Broken(entry.seq, entry.id, "prev_hash is not the hash of the entry before"),
                )
        if entry_hash(entry) != entry.hash:
            return ChainReport(
                count, first, entry.seq, Broken(entry.seq, entry.id, "the entry was altered")
            )
        prev, last = entry.hash, entry.seq
    return ChainReport(count, first, last, None)


Reader = Callable[[int, int], Awaitable[Sequence[E]]]


async def walk(read: Reader[E], *, batch: int = 1000) -> AsyncIterable[E]:
    """A chain in ``seq`` order from ``read(after_seq, limit)``, a batch at a time."""
    after = 0
    while True:
        found = await read(after, batch)
        for entry in found:
            yield entry
        if len(found) < batch:
            return
        after = found[-1].seq
