"""GET /v1/me: who the caller's key is — its id, fleet and role, never its secret.

A client needs this before anything else: the web console (console/, docs/console.md) decides
which buttons exist from the role, and a viewer cannot read its own key through
/v1/fleets/{id}/keys (that is for admins). It tells the caller only what it already holds.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentKey
from api.problems import problem_responses
from api.schemas.keys import KeyPublic

router = APIRouter(tags=["keys"], responses=problem_responses(401, 429, 503))


@router.get("/v1/me", response_model=KeyPublic)
async def get_me(key: CurrentKey) -> KeyPublic:
    """The caller's own key: id, fleet (null for the operator), role, name, prefix, expiry."""
    return KeyPublic.of(key)
