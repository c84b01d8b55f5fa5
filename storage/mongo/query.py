"""Query fragments shared by the Mongo repositories."""

from __future__ import annotations

from collections.abc import Sequence

from storage.mongo.db import Doc
from storage.pagination import CursorKey


def after(fields: Sequence[str], key: CursorKey | None) -> Doc:
    """Documents sorting after ``key`` on ``fields`` (all ascending): the keyset condition
    ``(f1, f2, ...) > (k1, k2, ...)`` spelled out as an $or, since MongoDB has no row values."""
    if key is None:
        return {}
    branches: list[Doc] = []
    for i, field in enumerate(fields):
        branch: Doc = {fields[j]: key[j] for j in range(i)}
        branch[field] = {"$gt": key[i]}
        branches.append(branch)
    return branches[0] if len(branches) == 1 else {"$or": branches}


ASC = 1
