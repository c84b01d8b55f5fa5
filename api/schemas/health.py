from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class HealthPublic(BaseModel):
    """Overall status and each component's state (storage, gateway, ...)."""

    model_config = ConfigDict(extra="allow")

    status: str
    storage: dict[str, Any]


class ComponentReadiness(BaseModel):
    """One component readiness depends on: ``ok``, or ``failing`` and why."""

    status: Literal["ok", "failing"]
    reason: str | None = Field(default=None, description="Why it is failing; absent when ok.")


class ReadyPublic(BaseModel):
    """Ready to take traffic: every component ``ok`` (else the answer is a 503 problem with
    the same ``components``)."""

    status: Literal["ready"]
    components: dict[str, ComponentReadiness]
