from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway import TcpGateway
from protocol.gp8 import (
    Challenge,
    FrameDecoder,
    FrameError,
    Login,
    LoginResult,
    Message,
    Model,
    PositionRecord,
    encode,
    login_proof,
)
from simulator.box import VirtualBox, make_record
from storage.models import now_ms
from tests.gateway.fakes import FakeStore

# Short enough to keep the suite fast, long enough for a loaded 2-core CI machine.
TIMEOUT = 10.0

GatewayFactory = Callable[..., Awaitable[TcpGateway]]


def imei_for(n: int) -> str:
    return f"{356_000_000_000_000 + n:015d}"


def track(
    count: int, *, start_ms: int | None = None, step_ms: int = 1000, **kw: Any
) -> list[PositionRecord]:
    """``count`` plausible records one ``step_ms`` apart, ending before now."""
    start = start_ms if start_ms is not None else now_ms() - (count + 10) * step_ms
    return [
        make_record(start + i * step_ms, 48.85 + i * 1e-4, 2.35 + i * 1e-4, speed_kmh=42.0, **kw)
        for i in range(count)
    ]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
async def make_gateway() -> AsyncIterator[GatewayFactory]:
    started: list[TcpGateway] = []

    async def factory(store: Any, **kw: Any) -> TcpGateway:
        options: dict[str, Any] = {
            "idle_timeout_s": 30.0,
            "login_timeout_s": 5.0,
            "write_timeout_s": 5.0,
            "max_delay_ms": 5,
            "gateway_id": "gw-test",
        }
        options.update(kw)
        gw = TcpGateway(store, host="127.0.0.1", port=0, **options)
        await gw.start()
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        await gw.stop(grace_s=2.0)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, store: FakeStore) -> TcpGateway:
    return await make_gateway(store)


def new_box(store: FakeStore, gw: TcpGateway, n: int = 1, **kw: Any) -> VirtualBox:
    """A VirtualBox for a device provisioned in the fake store."""
    secret = f"secret-{n}"
    store.devices.add(imei_for(n), secret)
    kw.setdefault("io_timeout_s", TIMEOUT)
    return VirtualBox(imei_for(n), secret, Model.GP8000, port=gw.port, **kw)


class RawClient:
    """A hand-driven socket for sending crafted bytes and reading the server's frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.challenge: Challenge | None = None

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        message = await client.read()
        assert isinstance(message, Challenge)
        client.challenge = message
        return client

    def login_frame(self, imei: str, secret: str, seq: int = 1) -> bytes:
        assert self.challenge is not None
        proof = login_proof(secret, self.challenge.nonce, imei, Model.GP8000)
        return encode(Login(seq, imei, Model.GP8000, (1, 0, 0), proof))

    async def login(self, imei: str, secret: str) -> LoginResult:
        await self.send(self.login_frame(imei, secret))
        result = await self.read()
        assert isinstance(result, LoginResult), result
        return result

    async def send(self, data: bytes | Message) -> None:
        self.writer.write(data if isinstance(data, bytes) else encode(data))
        async with asyncio.timeout(TIMEOUT):
            await self.writer.drain()

    async def read(self, timeout: float = TIMEOUT) -> Message | None:  # noqa: ASYNC109
        """The next message from the server, or None when it closed the connection."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    message = self.decoder.next_frame()
                except FrameError:
                    continue
                if message is not None:
                    return message
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.decoder.feed(data)

    async def read_all_until_closed(self, timeout: float = TIMEOUT) -> list[Message]:  # noqa: ASYNC109
        messages: list[Message] = []
        while (message := await self.read(timeout)) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.writer.transport.abort()
