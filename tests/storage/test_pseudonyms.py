"""Badge pseudonyms (storage/pseudonyms.py): keyed, stable, int64-sized, and the ingest
path's `records` leaves batches without a badge untouched."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from storage.models import Event
from storage.pseudonyms import (
    DEVELOPMENT_KEY,
    BadgePseudonyms,
    InvalidDriverKey,
    load_pseudonyms,
)
from tests.storage.factories import position

KEY = bytes(range(32))


def test_a_pseudonym_is_keyed_stable_and_fits_int64() -> None:
    one, other = BadgePseudonyms(KEY), BadgePseudonyms(bytes(range(1, 33)))
    badges = [1, 4242, 2**63 - 1]
    assert [one.of(b) for b in badges] == [BadgePseudonyms(KEY).of(b) for b in badges]
    assert all(one.of(b) != other.of(b) for b in badges)
    assert all(0 < one.of(b) < 2**63 and one.of(b) != b for b in badges)
    with pytest.raises(ValueError, match="not negative"):
        one.of(-1)


def test_records_hash_every_badge_and_copy_nothing_without_one() -> None:
    key = BadgePseudonyms(KEY)
    plain = [position("f", "d", "v", t) for t in (1, 2)]
    assert key.records(plain, []) == (plain, [])
    assert key.records(plain, [])[0] is plain  # the same list: no copy on the hot path
    badged = position("f", "d", "v", 3, driver_badge=77)
    event = Event("f", "d", "v", 3, 3, "driver_badge", 0, badged)
    calm = Event("f", "d", "v", 1, 1, "sos", 0, plain[0])
    positions, events = key.records([*plain, badged], [event, calm])
    assert [p.driver_badge for p in positions] == [None, None, key.of(77)]
    assert positions[2] == badged._replace(driver_badge=key.of(77))
    assert type(positions[2]) is type(badged)
    assert events[0].position.driver_badge == key.of(77) and events[1] is calm


def test_the_key_from_settings(tmp_path: Path) -> None:
    assert load_pseudonyms(key=None, key_file=None).is_default
    text = base64.b64encode(KEY).decode()
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * 32).decode()
    assert load_pseudonyms(key=text, key_file=None).of(5) == BadgePseudonyms(KEY).of(5)
    assert load_pseudonyms(key=urlsafe, key_file=None).of(5) == BadgePseudonyms(b"\xfb" * 32).of(5)
    key_file = tmp_path / "driver.key"
    key_file.write_text(text + "\n")
    assert not load_pseudonyms(key=None, key_file=key_file).is_default
    public = base64.b64encode(DEVELOPMENT_KEY).decode()
    assert load_pseudonyms(key=public, key_file=None).is_default
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidDriverKey):
            load_pseudonyms(key=bad, key_file=None)
    with pytest.raises(InvalidDriverKey, match="not both"):
        load_pseudonyms(key=text, key_file=key_file)
    with pytest.raises(InvalidDriverKey, match="driver key file"):
        load_pseudonyms(key=None, key_file=tmp_path / "missing.key")
