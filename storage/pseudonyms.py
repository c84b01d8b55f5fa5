"""Driver badges as keyed hashes (pseudonyms), so a database dump names no driver.

A badge number identifies a person (whoever carries the RFID tag or iButton). gp8 keeps, in
its place, ``HMAC-SHA256(key, badge)`` truncated to 63 bits: a positive integer that fits the
existing ``driver_badge`` INTEGER column and Mongo int64 (no schema change for the biggest
tables, no index change) and that the API serves as a string, as it served the badge. Equal
badges give equal pseudonyms, so trips, exports, erasure, the badge policy and the guard keep
working on pseudonyms; without the key nobody can go from a pseudonym back to a badge, not even
by trying every badge number. Collisions: with 63 bits, one in ~10^10 for a fleet of 100,000
badges.

The key comes from Settings (``GP8_DRIVER_KEY`` / ``GP8_DRIVER_KEY_FILE``, read by gp8/serve.py);
without one the public development key is used, which production mode refuses
(`BadgePseudonyms.is_default`). Changing the key changes every pseudonym: the stored ones no
longer match the boxes' new records (docs/privacy.md, "The driver key").

Hashed once, where box records enter storage (gateway/pipeline.py), and where a client names a
badge (the API: drivers, badge policy, privacy badge, exports, erasure), with the same object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from operator import itemgetter
from pathlib import Path

from storage.errors import StorageError
from storage.models import Event, Position

_BADGE = Position._fields.index("driver_badge")
_badge_of = itemgetter(_BADGE)
_new_tuple = tuple.__new__

# The 63 low bits: a positive signed 64-bit integer (SQLite INTEGER, BSON int64).
_MASK = (1 << 63) - 1
MIN_KEY_BYTES = 32
# Distinct badges a process meets is small (a fleet's drivers); the cache keeps the HMAC off
# the ingest path for all but the first fix of each.
CACHE_SIZE = 65_536

DEVELOPMENT_KEY = hashlib.sha256(b"gp8 development driver key: public, not secret").digest()


class InvalidDriverKey(StorageError, ValueError):
    """The configured driver key is not the base64 of at least 32 bytes, or is ambiguous."""


class BadgePseudonyms:
    """Turns a badge number into its pseudonym under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise InvalidDriverKey(f"the driver key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.is_default = key == DEVELOPMENT_KEY
        self.of = lru_cache(maxsize=CACHE_SIZE)(self._hash)

    @classmethod
    def development(cls) -> BadgePseudonyms:
        return cls(DEVELOPMENT_KEY)

    def _hash(self, badge: int) -> int:
        if badge < 0:
            raise ValueError("a badge number is not negative")
        digest = hmac.new(self._key, str(badge).encode(), hashlib.sha256).digest()
        # Never 0: some boxes report 0 for "no badge", and a pseudonym must not read as one.
        return int.from_bytes(digest[:8], "big") & _MASK or 1

    def position(self, p: Position) -> Position:
        """``p`` with its badge pseudonymised (the same object when it has none)."""
        badge = p.driver_badge
        if badge is None:
            return p
        # The ingest hot path (a driving box reports its badge on every fix): the same
        # Position rebuilt from a list, several times cheaper than NamedTuple._replace.
        fields = list(p)
        fields[_BADGE] = self.of(badge)
        return _new_tuple(Position, fields)

    def records(
        self, positions: Sequence[Position], events: Sequence[Event]
    ) -> tuple[Sequence[Position], Sequence[Event]]:
        """Box records as they must be stored: every badge (of a position or of an event's
        position) replaced by its pseudonym. No copy when no record carries a badge."""
        # A badge is a positive number or None (the adapters turn "0: none" into None), so a
        # truthiness scan in C finds one: ~13 ns a record when there is none.
        if any(map(_badge_of, positions)):
            positions = [self.position(p) for p in positions]
        if events and any(e.position.driver_badge is not None for e in events):
            events = [_with_position(e, self.position(e.position)) for e in events]
        return positions, events


def _with_position(event: Event, position: Position) -> Event:
    return event if position is event.position else replace(event, position=position)


def decode_driver_key(text: str) -> bytes:
    """A key as configured: standard or URL-safe base64 of at least 32 bytes."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDriverKey("the driver key is not base64") from None
    if len(raw) < MIN_KEY_BYTES:
        raise InvalidDriverKey(
            f"the driver key must be the base64 of at least {MIN_KEY_BYTES} random bytes"
        )
    return raw


def load_pseudonyms(*, key: str | None, key_file: Path | None) -> BadgePseudonyms:
    """The configured key (text or file, not both); the development key when neither."""
    if key is not None and key_file is not None:
        raise InvalidDriverKey("set GP8_DRIVER_KEY or GP8_DRIVER_KEY_FILE, not both")
    if key_file is not None:
        try:
            key = key_file.read_text()
        except OSError as exc:  # an operator's matter: one line, as a bad key
            raise InvalidDriverKey(f"the driver key file {key_file}: {exc.strerror}") from exc
    if key is None:
        return BadgePseudonyms.development()
    return BadgePseudonyms(decode_driver_key(key))
