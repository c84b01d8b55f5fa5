from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import APIRouter, Request

from api.deps import StoreDep
from api.problems import problem_responses
from api.schemas.health import HealthPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, responses=problem_responses(503, 500))
async def get_health(request: Request, store: StoreDep) -> dict[str, Any]:
    """The service's state and each component's; 503 when storage is down. No key needed."""
    extra = cast(Callable[[], Awaitable[dict[str, Any]]] | None, request.app.state.health)
    components = await extra() if extra is not None else {}
    return {"status": "ok", "storage": await store.health(), **components}
