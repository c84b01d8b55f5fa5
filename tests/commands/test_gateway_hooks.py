"""The gateway's command hooks on their own (fake storage, raw sockets): the login hook fires only
once LOGIN_RESULT is on the wire, and the duplicate hook only for a live older session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway import TcpGateway
from protocol.gp8 import Ack, Command, CommandType, Heartbeat, LoginResult, LoginStatus, encode
from tests.commands.conftest import wait_silent
from tests.gateway.conftest import RawClient, imei_for
from tests.gateway.fakes import FakeStore


@pytest.fixture
async def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
async def gateway(store: FakeStore) -> AsyncIterator[TcpGateway]:
    logins: list[str] = []

    async def on_login(imei: str) -> None:
        logins.append(imei)
        # Sent from inside the hook: it must reach the box after its LOGIN_RESULT.
        await gw.send(imei, Command(4242, CommandType.LOCATE, 0))

    gw = TcpGateway(store, port=0, login_timeout_s=5.0, write_timeout_s=5.0, on_login=on_login)
    gw.logins = logins  # type: ignore[attr-defined]
    await gw.start()
    yield gw
    await gw.stop(grace_s=2.0)


async def test_commands_follow_the_login_result(gateway: TcpGateway, store: FakeStore) -> None:
    store.devices.add(imei_for(1), "secret-1")
    client = await RawClient.connect(gateway.port)
    # Login and a heartbeat in one write: the hook must still wait for the replies.
    await client.send(client.login_frame(imei_for(1), "secret-1") + encode(Heartbeat(2)))
    first = await client.read()
    assert isinstance(first, LoginResult) and first.status is LoginStatus.OK
    ack = await client.read()
    assert isinstance(ack, Ack) and ack.acked_seq == 2
    assert await client.read() == Command(4242, CommandType.LOCATE, 0)
    assert gateway.logins == [imei_for(1)]  # type: ignore[attr-defined]
    client.close()


async def test_refused_login_is_not_announced(gateway: TcpGateway, store: FakeStore) -> None:
    store.devices.add(imei_for(2), "secret-2")
    client = await RawClient.connect(gateway.port)
    result = await client.login(imei_for(2), "wrong secret")
    assert result.status is LoginStatus.BAD_PROOF
    assert await client.read() is None  # closed, nothing else sent
    assert gateway.logins == []  # type: ignore[attr-defined]


async def test_duplicate_hook_only_for_a_live_older_session(
    gateway: TcpGateway, store: FakeStore
) -> None:
    calls: list[tuple[str, float]] = []

    async def on_duplicate(imei: str, *, old_remote: str, new_remote: str, idle_s: float) -> None:
        assert old_remote != new_remote
        calls.append((imei, idle_s))

    gateway.registry.on_duplicate = on_duplicate
    gateway.registry.duplicate_live_window_s = 0.3
    store.devices.add(imei_for(3), "secret-3")
    first = await RawClient.connect(gateway.port)
    assert (await first.login(imei_for(3), "secret-3")).status is LoginStatus.OK
    second = await RawClient.connect(gateway.port)
    assert (await second.login(imei_for(3), "secret-3")).status is LoginStatus.OK
    assert len(calls) == 1 and calls[0][0] == imei_for(3) and calls[0][1] < 0.3
    await wait_silent(gateway.registry, imei_for(3), 0.3)  # the second session goes silent
    third = await RawClient.connect(gateway.port)
    assert (await third.login(imei_for(3), "secret-3")).status is LoginStatus.OK
    assert len(calls) == 1  # a box back after a dead link: the newer session simply wins
    for client in (first, second, third):
        client.close()
