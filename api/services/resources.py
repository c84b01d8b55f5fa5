"""What the API shows of each kind of stored resource, in one place: the REST routes, the live
stream (GET /v1/stream) and webhooks all send the same JSON for the same thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.schemas.commands import AlertPublic, CommandPublic
from api.services.formats import event_dict, position_dict
from storage.models import StreamEntry, StreamKind

Render = Callable[[Any], dict[str, Any]]

_RENDER: dict[StreamKind, Render] = {
    StreamKind.POSITION: position_dict,
    StreamKind.EVENT: event_dict,
    StreamKind.ALERT: lambda alert: AlertPublic.of(alert).model_dump(mode="json"),
    StreamKind.COMMAND: lambda command: CommandPublic.of(command).model_dump(mode="json"),
}


def register(kind: StreamKind, render: Render) -> None:
    """How a new kind of resource (theft cases, ...) is shown."""
    _RENDER[kind] = render


def render(kind: StreamKind, item: Any) -> dict[str, Any]:
    """The REST representation of ``item``."""
    return _RENDER[kind](item)


def stream_message(entry: StreamEntry) -> dict[str, Any]:
    """One live-stream message: ``{"kind", "cursor", "vehicle_id", "data"}``."""
    return {
        "kind": entry.kind.value,
        "cursor": entry.cursor,
        "vehicle_id": entry.vehicle_id,
        "data": render(entry.kind, entry.item),
    }
