"""Codec 12 commands end to end: the command service → a real TcpGateway's Teltonika listener →
a box driven by hand over a real socket → its text response completes the command (SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from commands import CommandRequest, CommandService, Requester
from gateway import TcpGateway
from protocol.teltonika import Command, DeviceDecoder, Imei, ImeiReply, Response, encode
from storage.models import (
    CommandKind,
    CommandRecord,
    CommandState,
    DeviceModel,
    DeviceProtocol,
    Role,
)
from storage.sqlite import SqliteStore
from tests.gateway.conftest import TIMEOUT
from tests.polling import eventually

IMEI = "356307042441013"


@dataclass
class World:
    store: SqliteStore
    gateway: TcpGateway
    commands: CommandService
    admin: Requester
    vehicle_id: str

    async def request(self, kind: CommandKind, **params: object) -> CommandRecord:
        command, _ = await self.commands.create(
            self.admin, CommandRequest(self.vehicle_id, kind, params=params)
        )
        return command

    async def status(self, command: CommandRecord) -> CommandRecord:
        return await self.store.commands.get(command.fleet_id, command.id)


@pytest.fixture(params=[DeviceModel.FMC130])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    fleet = await store.fleets.create("teltonika")
    await store.devices.create(
        fleet.id, imei=IMEI, model=request.param, secret="", protocol=DeviceProtocol.TELTONIKA
    )
    vehicle = await store.vehicles.create(fleet.id, vin="VF1AAAAAAAAAAAAAA", plate="AB", label="x")
    await store.devices.fit(fleet.id, vehicle.id, IMEI, 0)
    commands = CommandService(store, gateway_id="gw-t", sweep_interval_s=0.05)
    gateway = TcpGateway(
        store,
        port=0,
        teltonika_port=0,
        login_timeout_s=5,
        write_timeout_s=5,
        max_delay_ms=5,
        gateway_id="gw-t",
        on_command_result=commands.on_box_reply,
        on_login=commands.on_box_online,
    )
    commands.add_sender(gateway)
    await gateway.start()
    await commands.start()
    try:
        yield World(store, gateway, commands, Requester("key_1", fleet.id, Role.ADMIN), vehicle.id)
    finally:
        await commands.stop()
        await gateway.stop(grace_s=5)
        await store.close()


class Box:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = DeviceDecoder()

    @classmethod
    async def online(cls, port: int) -> Box:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        box = cls(reader, writer)
        writer.write(encode(Imei(IMEI)))
        assert await box.read() == ImeiReply(True)
        return box

    async def read(self) -> object:
        async with asyncio.timeout(TIMEOUT):
            while (frame := self.decoder.next_frame()) is None:
                data = await self.reader.read(65536)
                assert data, "the server closed the link"
                self.decoder.feed(data)
        return frame

    async def answer(self, text: str) -> None:
        self.writer.write(encode(Response(text)))
        async with asyncio.timeout(TIMEOUT):
            await self.writer.drain()

    def close(self) -> None:
        self.writer.transport.abort()


async def wait_for(world: World, command: CommandRecord, status: CommandState) -> CommandRecord:
    current = command

    async def check() -> bool:
        nonlocal current
        current = await world.status(command)
        return current.status is status

    async with asyncio.timeout(TIMEOUT):
        while not await check():  # noqa: ASYNC110 - stored state: no event to wait on
            await asyncio.sleep(0.01)
    return current


async def test_disable_engine_start_goes_speed_gated_and_the_response_completes_it(
    world: World,
) -> None:
    box = await Box.online(world.gateway.teltonika_port or 0)
    await eventually(lambda: world.gateway.is_online(IMEI))
    command = await world.request(CommandKind.DISABLE_ENGINE_START)
    assert await box.read() == Command("setdigout 1? ? ? 5 ?")  # never without the speed gate
    await box.answer("DOUT1:1 DOUT2:IGNORED Timeout:INFINITY")
    done = await wait_for(world, command, CommandState.ACKNOWLEDGED)
    assert done.failure is None and done.delivered_ms is not None
    state = await world.store.commands.vehicle_state(done.fleet_id, done.vehicle_id)
    assert state is not None and state.engine_start_inhibited and not state.doors_locked
    box.close()


async def test_one_outstanding_command_at_a_time_and_refusals_fail_with_the_box_words(
    world: World,
) -> None:
    box = await Box.online(world.gateway.teltonika_port or 0)
    await eventually(lambda: world.gateway.is_online(IMEI))
    lock = await world.request(CommandKind.LOCK)
    locate = await world.request(CommandKind.LOCATE)
    interval = await world.request(CommandKind.SET_REPORT_INTERVAL, seconds=30)
    assert await box.read() == Command("setdigout ?1")
    # Nothing else arrives until the box answers (the sweeper's resends included).
    assert box.decoder.next_frame() is None
    await box.answer("DOUT2 Is disabled from CFG")
    failed = await wait_for(world, lock, CommandState.FAILED)
    assert failed.failure == "box_refused: DOUT2 Is disabled from CFG"
    assert await box.read() == Command("getrecord")
    await box.answer("Data sending")
    await wait_for(world, locate, CommandState.ACKNOWLEDGED)
    assert await box.read() == Command("setparam 10050:30;10150:30;10250:30")
    await box.answer("New value 10050:30;10150:30;10250:30;")
    await wait_for(world, interval, CommandState.ACKNOWLEDGED)
    box.close()


async def test_queued_commands_go_at_login(world: World) -> None:
    command = await world.request(CommandKind.ENABLE_ENGINE_START)
    assert command.status is CommandState.QUEUED
    box = await Box.online(world.gateway.teltonika_port or 0)
    assert await box.read() == Command("setdigout 0?")
    await box.answer("DOUT1:0 DOUT2:IGNORED")
    await wait_for(world, command, CommandState.ACKNOWLEDGED)
    box.close()


async def test_reboot_is_written_once_even_across_logins(world: World) -> None:
    box = await Box.online(world.gateway.teltonika_port or 0)
    await eventually(lambda: world.gateway.is_online(IMEI))
    reboot = await world.request(CommandKind.REBOOT)
    assert await box.read() == Command("cpureset")
    box.close()  # it reboots without answering
    await eventually(lambda: not world.gateway.is_online(IMEI))
    box = await Box.online(world.gateway.teltonika_port or 0)
    await eventually(lambda: world.gateway.is_online(IMEI))
    locate = await world.request(CommandKind.LOCATE)
    # The next command is the locate: the reboot is not written again.
    assert await box.read() == Command("getrecord")
    assert (await world.status(reboot)).status is CommandState.SENT  # until its TTL
    await box.answer("Data sending")
    await wait_for(world, locate, CommandState.ACKNOWLEDGED)
    box.close()
