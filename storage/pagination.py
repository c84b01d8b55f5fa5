"""Opaque pagination cursors and page assembly, shared by both engines.

A cursor is the sort key of the last item of a page, tagged with the listing it belongs to and
base64url-encoded so callers treat it as opaque. Keyset pagination (``key > cursor``) instead of
offsets keeps every page an index range scan and never skips or repeats an item when rows are
inserted between two page requests.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

import orjson

from storage.errors import InvalidCursor
from storage.models import Page

T = TypeVar("T")

# One page is built in memory and serialised by the API; this bounds what a single request can
# make the server hold.
MAX_PAGE_LIMIT = 10_000
# Our own cursors are far shorter (a kind tag, an id or a time and two ids); anything longer is
# not ours and is rejected before decoding.
MAX_CURSOR_CHARS = 512

CursorKey = tuple[str | int, ...]


def page_limit(limit: int) -> int:
    """The number of items to return: at least 1 (a caller bug otherwise), at most the cap."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return min(limit, MAX_PAGE_LIMIT)


def encode_cursor(kind: str, key: CursorKey) -> str:
    raw = orjson.dumps([kind, *key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, kind: str, shape: tuple[type[str] | type[int], ...]) -> CursorKey:
    """The key of a cursor made by `encode_cursor` for the same ``kind`` and key ``shape``.

    Raises InvalidCursor for anything else (garbage, another listing's cursor, wrong types).
    """
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidCursor("cursor too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise InvalidCursor("malformed cursor") from exc
    if not isinstance(value, list) or len(value) != len(shape) + 1 or value[0] != kind:
        raise InvalidCursor(f"not a {kind} cursor")
    key = tuple(value[1:])
    # type() rather than isinstance(): JSON true/false must not pass for an int.
    if any(type(part) is not expected for part, expected in zip(key, shape, strict=True)):
        raise InvalidCursor(f"not a {kind} cursor")
    return key


def decode_id_cursor(cursor: str, kind: str) -> str:
    (item_id,) = decode_cursor(cursor, kind, (str,))
    assert isinstance(item_id, str)  # checked by decode_cursor; narrows the type
    return item_id


def order_kind(kind: str, newest_first: bool) -> str:
    """The cursor kind of a time-ordered listing read in one direction. A newest-first page's
    cursor has its own kind, so the other direction refuses it (InvalidCursor) instead of
    seeking from it the wrong way and returning the wrong rows."""
    return f"{kind}_desc" if newest_first else kind


def id_key(cursor: str | None, kind: str) -> tuple[str] | None:
    """The keyset key of an id-ordered listing's cursor (None: the first page), for either
    engine's ``after`` condition."""
    return None if cursor is None else (decode_id_cursor(cursor, kind),)


def make_page(rows: list[T], limit: int, kind: str, key: Callable[[T], CursorKey]) -> Page[T]:
    """A page from ``rows`` fetched with ``LIMIT limit + 1``: the extra row only tells that
    another page exists, so the last page never ends with a cursor to an empty page."""
    if len(rows) <= limit:
        return Page(items=rows, next_cursor=None)
    items = rows[:limit]
    return Page(items=items, next_cursor=encode_cursor(kind, key(items[-1])))
