"""How many writes a command costs, and that fewer writes keep every step: a command for a box
connected here is stored queued and sent in one write, a box's receipt read with its answer is
stored with it, and the audit log still has every line, in order, on one unbroken chain."""

from __future__ import annotations

import asyncio

from commands import CommandService
from protocol.gp8 import Ack, Command, CommandType
from storage.audit_chain import verify, walk
from storage.models import CommandKind, CommandState
from tests.commands.world import IMEI, FakeSender, World, done, lock

EVERY_STEP = [
    ("command.requested", "queued"),
    ("command.sent", "sent"),
    ("command.delivered", "sent"),
    ("command.acknowledged", "acknowledged"),
]


class CountingWrites:
    """Counts the command repository's writes (each one commit on SQLite)."""

    def __init__(self, world: World) -> None:
        self.calls: list[str] = []
        self._inside = False  # an engine's method calling another (MongoDB's) is one write
        repo = world.store.commands
        for name in ("create", "create_then", "transitions"):
            setattr(repo, name, self._counted(name, getattr(repo, name)))

    def _counted(self, name: str, method: object) -> object:
        async def counted(*args: object, **kwargs: object) -> object:
            if self._inside:
                return await method(*args, **kwargs)  # type: ignore[operator]
            self.calls.append(name)
            self._inside = True
            try:
                return await method(*args, **kwargs)  # type: ignore[operator]
            finally:
                self._inside = False

        return counted


async def online(world: World) -> tuple[CommandService, FakeSender]:
    sender = FakeSender(online={IMEI})
    service = world.service(sender)
    await service.on_box_online(IMEI)
    await service.settle()
    return service, sender


async def lines(world: World, command_id: str) -> list[tuple[str, str | None]]:
    page = await world.store.audit.list(world.fleet_id, command_id=command_id)
    return [(e.action, e.status) for e in page.items]


async def chain_holds(world: World) -> bool:
    store = world.store
    entries = walk(lambda after, n: store.audit.chain(world.fleet_id, after_seq=after, limit=n))
    return (await verify(entries)).broken is None


async def test_a_command_for_a_box_here_costs_two_writes_and_keeps_every_step(
    world: World,
) -> None:
    service, sender = await online(world)
    writes = CountingWrites(world)
    seen: list[CommandState] = []
    service.add_listener(lambda c: seen.append(c.status))

    command, created = await service.create(world.admin, lock(world))
    assert created and command.status is CommandState.SENT and command.attempts == 1
    assert sender.sent == [(IMEI, Command(command.seq, CommandType.LOCK, 0))]
    # The box's receipt and answer, read in one chunk: the gateway hands them over in a row.
    await service.on_box_reply(IMEI, Ack(901, command.seq))
    received_ms = world.clock.ms
    world.clock.advance(0.2)
    await service.on_box_reply(IMEI, done(command.seq))
    await service.settle()

    assert writes.calls == ["create_then", "transitions"]
    stored = await world.store.commands.get(world.fleet_id, command.id)
    assert stored.status is CommandState.ACKNOWLEDGED
    assert stored.delivered_ms == received_ms  # the receipt's own time, not the answer's
    assert stored.completed_ms == world.clock.ms
    assert await lines(world, command.id) == EVERY_STEP
    assert await chain_holds(world)
    assert seen == [CommandState.QUEUED, CommandState.SENT, CommandState.SENT,
                    CommandState.ACKNOWLEDGED]  # fmt: skip


async def test_a_receipt_alone_is_stored_and_its_answer_later_on_its_own(world: World) -> None:
    service, _ = await online(world)
    command, _ = await service.create(world.admin, lock(world))
    await service.on_box_reply(IMEI, Ack(901, command.seq))
    await service.on_box_reply(IMEI, Ack(902, command.seq))  # repeated: stored once
    await service.settle()
    stored = await world.store.commands.get(world.fleet_id, command.id)
    assert stored.delivered_ms == world.clock.ms and stored.status is CommandState.SENT

    world.clock.advance(1)
    await service.on_box_reply(IMEI, done(command.seq))
    stored = await world.store.commands.get(world.fleet_id, command.id)
    assert stored.status is CommandState.ACKNOWLEDGED
    assert stored.delivered_ms == world.clock.ms - 1000
    assert await lines(world, command.id) == EVERY_STEP
    assert await chain_holds(world)


async def test_an_answer_while_its_receipt_is_being_stored_comes_after_it(world: World) -> None:
    service, _ = await online(world)
    command, _ = await service.create(world.admin, lock(world))
    await service.on_box_reply(IMEI, Ack(901, command.seq))
    receipt_ms = world.clock.ms
    # The receipt's write starts on the next loop turn and is under way when the answer comes.
    started = service.replies._receipts[(IMEI, command.seq)]
    await asyncio.sleep(0)  # one loop turn: the receipt's task (scheduled first) starts
    assert started.storing is not None
    world.clock.advance(0.5)
    await service.on_box_reply(IMEI, done(command.seq))
    stored = await world.store.commands.get(world.fleet_id, command.id)
    assert stored.status is CommandState.ACKNOWLEDGED and stored.delivered_ms == receipt_ms
    assert await lines(world, command.id) == EVERY_STEP


async def test_older_commands_of_the_box_go_first_then_the_new_one(world: World) -> None:
    sender = FakeSender()  # offline: the first command waits
    service = world.service(sender)
    first, _ = await service.create(world.admin, lock(world))
    assert first.status is CommandState.QUEUED
    sender.online.add(IMEI)
    await service.on_box_online(IMEI)  # delivers in the background, not started yet
    unlock = lock(world)
    second, _ = await service.create(
        world.admin, type(unlock)(world.vehicle_id, CommandKind.UNLOCK)
    )
    await service.settle()
    assert [m.seq for _, m in sender.sent] == [first.seq, second.seq]
    assert await world.status(first.id) is CommandState.SENT
    assert await world.status(second.id) is CommandState.SENT
    assert await lines(world, second.id) == EVERY_STEP[:2]


async def test_a_replayed_key_for_a_box_here_sends_nothing_again(world: World) -> None:
    service, sender = await online(world)
    first, created = await service.create(world.admin, lock(world, idempotency_key="k"))
    again, created_again = await service.create(world.admin, lock(world, idempotency_key="k"))
    assert created and not created_again and again.id == first.id
    assert len(sender.sent) == 1


class StalledSender(FakeSender):
    """A link whose writes wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__(online={IMEI})
        self.through = asyncio.Event()

    async def send(self, imei: str, message: Command) -> bool:
        await self.through.wait()
        return await super().send(imei, message)


async def test_a_stalled_link_holds_neither_the_request_nor_the_order(world: World) -> None:
    sender = StalledSender()
    service = world.service(sender, delivery_wait_s=0.05)
    await service.on_box_online(IMEI)
    await service.settle()

    async with asyncio.timeout(5):
        first, _ = await service.create(world.admin, lock(world))
        # The box is busy with the first write: the second is stored and waits its turn.
        second, _ = await service.create(world.admin, lock(world))
    assert first.status is CommandState.SENT and second.status is CommandState.QUEUED
    assert sender.sent == []
    sender.through.set()
    await service.settle()
    assert [m.seq for _, m in sender.sent] == [first.seq, second.seq]
    assert service.stats["frames_sent"] == 2
