"""Query fragments shared by the Mongo repositories."""

from __future__ import annotations

from collections.abc import Sequence

from storage.mongo.db import Doc
from storage.pagination import CursorKey

ASC = 1
DESC = -1


def after(fields: Sequence[str], key: CursorKey | None) -> Doc:
    """Documents sorting after ``key`` on ``fields`` (all ascending): the keyset condition
    ``(f1, f2, ...) > (k1, k2, ...)`` spelled out as an $or, since MongoDB has no row values."""
    return _beyond(fields, key, "$gt")


def before(fields: Sequence[str], key: CursorKey | None) -> Doc:
    """Documents sorting before ``key`` on ``fields``: `after` for a newest-first listing."""
    return _beyond(fields, key, "$lt")


def _beyond(fields: Sequence[str], key: CursorKey | None, op: str) -> Doc:
    if key is None:
        return {}
    branches: list[Doc] = []
    for i, field in enumerate(fields):
        branch: Doc = {fields[j]: key[j] for j in range(i)}
        branch[field] = {op: key[i]}
        branches.append(branch)
    return branches[0] if len(branches) == 1 else {"$or": branches}


def keyset(
    fields: Sequence[str], key: CursorKey | None, *, newest_first: bool
) -> tuple[Doc, list[tuple[str, int]]]:
    """A listing page's keyset condition and its sort, in either direction: every field
    descending for newest first, so the tiebreak is reversed too and documents sharing a
    timestamp come exactly once across pages (an ascending index serves both)."""
    if newest_first:
        return before(fields, key), [(field, DESC) for field in fields]
    return after(fields, key), [(field, ASC) for field in fields]
