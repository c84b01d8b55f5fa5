"""One fleet, one vehicle with a box fitted, on a real storage engine, and a command service
behind a fake transport and the test's clock: what the service-level tests start from."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pymongo_async_mock import AsyncMongoMockClient

from commands import CommandRequest, CommandService, Requester
from protocol.gp8 import Command, CommandFailure, CommandResult, CommandStatus, RecordFlags
from storage.models import CommandKind, CommandState, DeviceModel, Role
from storage.mongo import MongoStore
from storage.repository import Store
from storage.sqlite import SqliteStore

IMEI = "356938035643809"
# SQLite fsyncs every commit; these tests do not measure that.
TMPFS = "/dev/shm" if Path("/dev/shm").is_dir() else None
T0 = 1_714_564_800_000
ENGINES = ["sqlite", "mongo-fake"]


@dataclass
class FakeSender:
    """The transport side of the service (`commands.Sender`), in memory."""

    online: set[str] = field(default_factory=set)
    sent: list[tuple[str, Command]] = field(default_factory=list)
    fail: bool = False

    def is_online(self, imei: str) -> bool:
        return imei in self.online

    async def send(self, imei: str, message: Command) -> bool:
        if self.fail or imei not in self.online:
            return False
        self.sent.append((imei, message))
        return True


class Clock:
    """Wall and monotonic time from one number the test moves: the service sees no other."""

    def __init__(self) -> None:
        self.ms = T0

    def now_ms(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.ms / 1000

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


@dataclass
class World:
    store: Store
    clock: Clock
    fleet_id: str
    vehicle_id: str
    admin: Requester

    def service(self, sender: FakeSender | None = None, **kw: float) -> CommandService:
        service = CommandService(self.store, gateway_id="gw-t", clock=self.clock, **kw)
        if sender is not None:
            service.add_sender(sender)
        return service

    async def status(self, command_id: str) -> CommandState:
        return (await self.store.commands.get(self.fleet_id, command_id)).status


@asynccontextmanager
async def open_world(engine: str) -> AsyncIterator[World]:
    path = Path(tempfile.mkdtemp(prefix="gp8-cmd-svc-", dir=TMPFS))
    store: Store
    if engine == "sqlite":
        store = SqliteStore(path / "gp8.sqlite3")
    else:
        store = MongoStore(AsyncMongoMockClient(), "gp8_test")
    await store.start()
    try:
        fleet = await store.fleets.create("f")
        vehicle = await store.vehicles.create(
            fleet.id, vin="VF1AAAAA000000001", plate="P", label="L"
        )
        await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s")
        await store.devices.fit(fleet.id, vehicle.id, IMEI, T0 - 1000)
        admin = Requester("key_admin", fleet.id, Role.ADMIN)
        yield World(store, Clock(), fleet.id, vehicle.id, admin)
    finally:
        await store.close()
        shutil.rmtree(path, ignore_errors=True)


def lock(world: World, **kw: object) -> CommandRequest:
    return CommandRequest(vehicle_id=world.vehicle_id, kind=CommandKind.LOCK, **kw)  # type: ignore[arg-type]


def done(seq: int, state: int = RecordFlags.DOORS_LOCKED) -> CommandResult:
    return CommandResult(900, seq, CommandStatus.DONE, CommandFailure.NONE, state)
