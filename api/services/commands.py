"""What the command routes share: the service dependency and the vehicle's lock state as the
API shows it. The service's refusals become problems in one registered handler (api/problems.py).
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from api.schemas.commands import LockStatePublic
from api.times import iso_ms
from commands import CommandService
from storage.models import Position
from storage.repository import Store


def get_commands(request: Request) -> CommandService:
    """The process's command service (gp8 serve puts it in ``app.state.commands``).

    An API running without one (an API-only process) gets a service without transports: it
    stores and audits commands, and the gateways' polls deliver them.
    """
    state = request.app.state
    service = getattr(state, "commands", None)
    if service is not None:
        return cast(CommandService, service)
    store = cast(Store, state.store)
    fallback = getattr(state, "store_only_commands", None)
    # Made again when the app's store was replaced (tests restart the lifespan with a new one).
    if fallback is None or fallback.store is not store:
        fallback = state.store_only_commands = CommandService(store)
    return cast(CommandService, fallback)


async def _commands_dep(request: Request) -> CommandService:
    return get_commands(request)  # async: see api/deps.py, "Dependencies are async"


CommandsDep = Annotated[CommandService, Depends(_commands_dep)]


async def lock_state(
    store: Store, fleet_id: str, vehicle_id: str, last: Position | None = None
) -> LockStatePublic:
    """The vehicle's doors and inhibit: the last acknowledged command's report at once, the
    box's positions once one taken after it arrives (``last``: the last position, if read)."""
    ack = await store.commands.vehicle_state(fleet_id, vehicle_id)
    if last is None:
        last = await store.telemetry.last_position(fleet_id, vehicle_id)
    if last is not None and (ack is None or last.time_ms >= ack.updated_ms):
        agrees = ack is None or (last.doors_locked, last.engine_start_inhibited) == (
            ack.doors_locked,
            ack.engine_start_inhibited,
        )
        return LockStatePublic(
            doors_locked=last.doors_locked,
            engine_start_inhibited=last.engine_start_inhibited,
            source="position",
            confirmed=agrees,
            as_of=iso_ms(last.time_ms),
            command_id=ack.command_id if ack is not None else None,
        )
    if ack is not None:
        return LockStatePublic(
            doors_locked=ack.doors_locked,
            engine_start_inhibited=ack.engine_start_inhibited,
            source="command",
            confirmed=False,
            as_of=iso_ms(ack.updated_ms),
            command_id=ack.command_id,
        )
    return LockStatePublic(
        doors_locked=None,
        engine_start_inhibited=None,
        source=None,
        confirmed=False,
        as_of=None,
        command_id=None,
    )
