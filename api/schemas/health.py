from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class HealthPublic(BaseModel):
    """Overall status and each component's state (storage, gateway, ...)."""

    model_config = ConfigDict(extra="allow")

    status: str
    storage: dict[str, Any]
