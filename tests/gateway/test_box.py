"""The virtual box against a scripted server: outbox, NACK handling, commands."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from protocol.gp8 import (
    Ack,
    Challenge,
    Command,
    CommandFailure,
    CommandResult,
    CommandStatus,
    CommandType,
    Event,
    EventCode,
    FrameDecoder,
    Heartbeat,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    RecordFlags,
    encode,
    verify_login_proof,
)
from simulator.box import BoxDisconnected, LoginRefused, VirtualBox
from tests.gateway.conftest import TIMEOUT, imei_for, track
from tests.polling import eventually

IMEI = imei_for(7)
SECRET = "box-secret"
NONCE = bytes(range(16))

Reply = Callable[[Message], list[Message]]


class ScriptedServer:
    """Logs a box in, then answers each frame with what ``reply`` says."""

    def __init__(self, reply: Reply, login_status: LoginStatus = LoginStatus.OK) -> None:
        self.reply = reply
        self.login_status = login_status
        self.received: list[Message] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self.handlers), TIMEOUT)

    async def send(self, message: Message) -> None:
        self.writers[-1].write(encode(message))
        await self.writers[-1].drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        decoder = FrameDecoder()
        writer.write(encode(Challenge(0, NONCE, 0)))
        # A box closing with our ACKs unread makes its kernel answer with a reset.
        with contextlib.suppress(ConnectionResetError):
            while data := await reader.read(65536):
                decoder.feed(data)
                for message in decoder:
                    assert not isinstance(message, Exception)
                    if isinstance(message, Login):
                        proof = message.proof
                        assert verify_login_proof(SECRET, NONCE, IMEI, message.model, proof)
                        writer.write(encode(LoginResult(1, self.login_status, 0)))
                        continue
                    self.received.append(message)
                    for out in self.reply(message):
                        writer.write(encode(out))


def ack_all(message: Message) -> list[Message]:
    return [Ack(0, message.seq)]


@pytest.fixture
async def acking() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer(ack_all) as server:
        yield server


def box_for(server: ScriptedServer, **kw: object) -> VirtualBox:
    return VirtualBox(IMEI, SECRET, Model.GP8500, port=server.port, io_timeout_s=TIMEOUT, **kw)  # type: ignore[arg-type]


async def test_the_outbox_is_framed_in_batches_and_events_alone(acking: ScriptedServer) -> None:
    acks: list[tuple[int, bool, float]] = []
    box = box_for(acking, batch_size=4, on_ack=lambda n, event, s: acks.append((n, event, s)))
    records = track(10)
    box.enqueue(records[:6])
    box.enqueue_event(EventCode.SOS, records[6], detail=2)
    box.enqueue(records[7:])
    await box.connect()
    await box.flush()
    shapes = [
        len(m.records) if isinstance(m, Position) else m.code.name
        for m in acking.received
        if isinstance(m, (Position, Event))
    ]
    assert shapes == [4, 2, "SOS", 3]
    sent = [r for m in acking.received if isinstance(m, Position) for r in m.records]
    assert sent == records[:6] + records[7:]
    assert box.acked == 10 and box.pending == 0
    assert [(n, event) for n, event, _ in acks] == [(4, False), (2, False), (1, True), (3, False)]
    assert all(0 <= latency < TIMEOUT for _, _, latency in acks)
    await box.close()


async def test_refused_login_raises_with_the_status() -> None:
    async with ScriptedServer(ack_all, login_status=LoginStatus.DEVICE_DISABLED) as server:
        box = box_for(server)
        with pytest.raises(LoginRefused) as refused:
            await box.connect()
        assert refused.value.status is LoginStatus.DEVICE_DISABLED
        assert not box.connected


async def test_nack_invalid_drops_and_retryable_nacks_resend() -> None:
    seen: Counter[int] = Counter()

    def reply(message: Message) -> list[Message]:
        if not isinstance(message, Position):
            return [Ack(0, message.seq)]
        first = message.records[0].time_ms
        seen[first] += 1
        if first == records[0].time_ms:  # refused for good
            return [Nack(0, message.seq, NackReason.INVALID_DATA)]
        if first == records[2].time_ms and seen[first] == 1:  # corrupted once
            return [Nack(0, message.seq, NackReason.BAD_CRC)]
        if first == records[4].time_ms and seen[first] == 1:  # storage down once
            return [Nack(0, message.seq, NackReason.SERVER_BUSY)]
        return [Ack(0, message.seq)]

    records = track(6)
    async with ScriptedServer(reply) as server:
        box = box_for(server, batch_size=2, window=1, busy_backoff_s=0.05)
        await box.connect()
        await box.send_positions(records)
        assert box.dropped == 2 and box.acked == 4 and box.pending == 0
        assert box.nacks == {
            NackReason.INVALID_DATA: 1,
            NackReason.BAD_CRC: 1,
            NackReason.SERVER_BUSY: 1,
        }
        stored = [m.records for m in server.received if isinstance(m, Position)]
        assert stored.count(tuple(records[2:4])) == 2  # resent after BAD_CRC
        assert stored.count(tuple(records[4:6])) == 2  # resent after SERVER_BUSY
        await box.close()


async def test_unacked_records_survive_a_lost_connection_in_order() -> None:
    async with ScriptedServer(lambda m: []) as server:  # never ACKs
        box = box_for(server, batch_size=3, window=2)
        records = track(9)
        await box.connect()
        box.enqueue(records)
        assert await box.send_frames() == 3
        server.writers[-1].transport.abort()  # the server side drops the link
        with pytest.raises(BoxDisconnected):
            await box.flush(timeout=TIMEOUT)
        assert box.pending == 9 and not box.connected
        assert box.requeued == 9
        server.reply = ack_all
        server.received.clear()
        await box.deliver(timeout=TIMEOUT)
        resent = [r for m in server.received if isinstance(m, Position) for r in m.records]
        assert resent == records  # the same records, in their order
        await box.close()


async def test_commands_are_executed_once_answered_and_reflected_in_records(
    acking: ScriptedServer,
) -> None:
    box = box_for(acking)
    await box.connect()
    await acking.send(Command(500, CommandType.LOCK, 0))
    await acking.send(Command(501, CommandType.DISABLE_ENGINE_START, 0))
    await acking.send(Command(500, CommandType.LOCK, 0))  # resent by the server: deduped
    await acking.send(Command(502, CommandType.SET_REPORT_INTERVAL, 0))
    await eventually(lambda: sum(isinstance(m, CommandResult) for m in acking.received) == 4)
    results = [m for m in acking.received if isinstance(m, CommandResult)]
    locked = RecordFlags.DOORS_LOCKED
    both = RecordFlags.DOORS_LOCKED | RecordFlags.ENGINE_START_INHIBITED
    assert [(r.command_seq, r.status, r.failure, r.state) for r in results] == [
        (500, CommandStatus.DONE, CommandFailure.NONE, locked),
        (501, CommandStatus.DONE, CommandFailure.NONE, both),
        (500, CommandStatus.DONE, CommandFailure.NONE, both),
        (502, CommandStatus.FAILED, CommandFailure.INVALID_PARAMETER, both),
    ]
    assert len(box.commands) == 4
    record = box.record(track(1)[0].time_ms, 1.0, 2.0)
    assert record.flags & both == both
    await box.close()


async def test_a_cut_leaves_half_a_frame_and_keeps_the_records(acking: ScriptedServer) -> None:
    box = box_for(acking, batch_size=5)
    await box.connect()
    box.enqueue(track(5))
    box.cut()
    assert not box.connected and box.pending == 5
    await box.deliver(timeout=TIMEOUT)
    assert box.acked == 5 and box.logins == 2
    await box.close()


async def test_a_heartbeat_without_ack_drops_the_link() -> None:
    async with ScriptedServer(lambda m: []) as server:  # answers nothing
        box = VirtualBox(
            IMEI, SECRET, port=server.port, io_timeout_s=0.2, heartbeat_interval_s=0.05
        )
        await box.connect()
        await eventually(lambda: not box.connected)
        assert any(isinstance(m, Heartbeat) for m in server.received)
        await box.close()
