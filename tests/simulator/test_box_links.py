"""One table of cases, run over both links: the TCP box against a scripted TCP server, the MQTT
box against a scripted peer on the shared Mosquitto (127.0.0.1:1883). Same outbox, so the same
fates, counters and command order whatever carries the frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
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
    FrameDecoder,
    FrameError,
    Heartbeat,
    Ident,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
    RecordFlags,
    encode,
    verify_login_proof,
)
from protocol.gp8.topics import ack_topic, down_topic, up_topic
from simulator.box import Box, BoxDisconnected, VirtualBox
from simulator.mqtt_box import MqttBox
from simulator.outbox import Answer, BoxState, CommandOutcome, Fate, Resend
from simulator.pacing import wall_ms
from simulator.records import make_record
from tests.polling import eventually

TIMEOUT = 10.0
SECRET = "box-secret"
NONCE = bytes(range(16))
BROKER_PORT = 1883

Reply = Callable[[Message], list[Message]]


def answer_data(message: Message) -> list[Message]:
    """ACK what a gateway ACKs: data frames, not the box's own ACKs of COMMANDs."""
    if isinstance(message, Position | Event | Heartbeat | CommandResult):
        return [Ack(0, message.seq)]
    return []


def silent(message: Message) -> list[Message]:
    return []


def track(n: int) -> list[PositionRecord]:
    start = wall_ms() - (n + 10) * 1000
    return [make_record(start + i * 1000, 48.85 + i * 1e-4, 2.35, speed_kmh=40) for i in range(n)]


class Server(Protocol):
    """A scripted gateway: logs the box in as its transport does, records what the box sends
    (without LOGIN or IDENT) and answers each frame with what ``reply`` says."""

    received: list[Message]
    reply: Reply

    def make_box(self, **kw: Any) -> Box: ...
    async def send(self, message: Message) -> None: ...


class TcpServer:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.received: list[Message] = []
        self.imei = _imei()
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._handlers), TIMEOUT)

    def make_box(self, **kw: Any) -> Box:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return VirtualBox(self.imei, SECRET, Model.GP8500, port=port, **kw)

    async def send(self, message: Message) -> None:
        self._writers[-1].write(encode(message))
        await self._writers[-1].drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.append(task)
        decoder = FrameDecoder()
        writer.write(encode(Challenge(0, NONCE, wall_ms())))
        with contextlib.suppress(ConnectionResetError):  # a box aborting its link
            while data := await reader.read(65536):
                decoder.feed(data)
                for message in decoder:
                    assert not isinstance(message, FrameError)
                    if isinstance(message, Login):
                        assert verify_login_proof(
                            SECRET, NONCE, self.imei, message.model, message.proof
                        )
                        writer.write(encode(LoginResult(1, LoginStatus.OK, wall_ms())))
                        continue
                    self.received.append(message)
                    writer.write(b"".join(map(encode, self.reply(message))))


class MqttServer:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.received: list[Message] = []
        self.imei = _imei()
        self._client = aiomqtt.Client(
            "127.0.0.1",
            BROKER_PORT,
            identifier=f"scripted-{self.imei}",
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=TIMEOUT,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._client.__aenter__()
        await self._client.subscribe(up_topic(self.imei), qos=1)
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.__aexit__(None, None, None)

    def make_box(self, **kw: Any) -> Box:
        # A short session: a test must not leave one queueing on the shared broker.
        url = f"mqtt://127.0.0.1:{BROKER_PORT}"
        return MqttBox.from_url(
            url, self.imei, SECRET, model=Model.GP8500, session_expiry_s=5, **kw
        )

    async def send(self, message: Message) -> None:
        topic = down_topic(self.imei) if isinstance(message, Command) else ack_topic(self.imei)
        await self._client.publish(topic, encode(message), qos=1)

    async def _serve(self) -> None:
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            decoder = FrameDecoder()
            decoder.feed(message.payload)
            ident, *frames = list(decoder)
            assert isinstance(ident, Ident) and ident.imei == self.imei  # §7.3: IDENT first
            answers: list[Message] = []
            for frame in frames:
                assert not isinstance(frame, FrameError)
                self.received.append(frame)
                answers += self.reply(frame)
            if answers:  # §7.4: one message answers one uplink message
                payload = b"".join(map(encode, answers))
                await self._client.publish(ack_topic(self.imei), payload, qos=1)


def _imei() -> str:
    return f"35{secrets.randbelow(10**13):013d}"


@dataclass
class Rig:
    """A scripted server and the boxes made for it."""

    server: Server
    boxes: list[Box]

    def box(self, **kw: Any) -> Box:
        kw.setdefault("io_timeout_s", TIMEOUT)
        kw.setdefault("connect_timeout_s", TIMEOUT)
        box = self.server.make_box(**kw)
        self.boxes.append(box)
        return box


Serve = Callable[[Reply], Awaitable[Rig]]


@pytest.fixture(params=["tcp", pytest.param("mqtt", marks=pytest.mark.mqtt)])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[Serve]:
    """Starts scripted servers of the parameter's transport; stops them and their boxes."""
    rigs: list[tuple[TcpServer | MqttServer, Rig]] = []

    async def start(reply: Reply) -> Rig:
        server = TcpServer(reply) if request.param == "tcp" else MqttServer(reply)
        await server.start()
        rig = Rig(server, [])
        rigs.append((server, rig))
        return rig

    yield start
    for server, rig in rigs:
        for box in rig.boxes:
            await box.close()
        await server.stop()


# --- records: one NACK, then what the box does about it --------------------------------------


@dataclass(frozen=True)
class NackCase:
    reason: NackReason
    fate: Fate  # what becomes of the NACKed frame's two records in the end
    resent: int  # records the box sent again
    frames: int  # POSITION frames the server saw for the three frames of the outbox


NACK_CASES = [
    NackCase(NackReason.INVALID_DATA, Fate.REFUSED, resent=0, frames=3),
    NackCase(NackReason.MALFORMED, Fate.REFUSED, resent=0, frames=3),
    NackCase(NackReason.BAD_CRC, Fate.ACKED, resent=2, frames=4),
    NackCase(NackReason.SERVER_BUSY, Fate.ACKED, resent=2, frames=4),
]


@pytest.mark.parametrize("case", NACK_CASES, ids=lambda c: c.reason.name.lower())
async def test_a_nack_gives_the_same_fates_and_counts_on_both_links(
    serve: Serve, case: NackCase
) -> None:
    records = track(6)
    nacked = records[2].time_ms

    def reply(message: Message) -> list[Message]:
        if isinstance(message, Position) and message.records[0].time_ms == nacked:
            seen = sum(
                isinstance(m, Position) and m.records[0].time_ms == nacked for m in server.received
            )
            if seen == 1:
                return [Nack(0, message.seq, case.reason)]
        return answer_data(message)

    rig = await serve(reply)
    server = rig.server
    settled: list[Answer] = []
    acks: list[tuple[int, bool]] = []
    box = rig.box(
        batch_size=2,
        window=1,
        busy_backoff_s=0.05,
        on_answer=settled.append,
        on_ack=lambda n, is_event, latency_s: acks.append((n, is_event)),
    )
    entries = box.outbox.enqueue(records)
    await box.connect()
    await box.flush()

    assert [e.fate for e in entries] == [Fate.ACKED] * 2 + [case.fate] * 2 + [Fate.ACKED] * 2
    assert box.pending == 0 and box.resent == case.resent and box.nacks == {case.reason: 1}
    refused = 2 if case.fate is Fate.REFUSED else 0
    assert (box.acked, box.dropped) == (6 - refused, refused)
    assert sum(isinstance(m, Position) for m in server.received) == case.frames
    # The hook saw each frame settle once, with its fate.
    assert [(len(a.entries), a.fate) for a in settled] == [
        (2, Fate.ACKED),
        (2, case.fate),
        (2, Fate.ACKED),
    ]
    assert acks == [(2, False)] * (3 if case.fate is Fate.ACKED else 2)


# --- commands: the same order on both links ---------------------------------------------------


def _count(server: Server, kind: type[Message]) -> int:
    return sum(isinstance(m, kind) for m in server.received)


def _answers(server: Server) -> list[tuple[str, int]]:
    """What the box said about commands: (ACK or RESULT, command number), in order."""
    out: list[tuple[str, int]] = []
    for m in server.received:
        if isinstance(m, Ack):
            out.append(("ack", m.acked_seq))
        elif isinstance(m, CommandResult):
            out.append(("result", m.command_seq))
    return out


async def test_commands_are_acked_on_receipt_then_answered_in_one_order(
    serve: Serve,
) -> None:
    rig = await serve(answer_data)
    server = rig.server
    box = rig.box()
    await box.connect()
    commands = [
        Command(500, CommandType.LOCK, 0),
        Command(501, CommandType.DISABLE_ENGINE_START, 0),
        Command(500, CommandType.LOCK, 0),  # resent by the server: answered, not executed
        Command(502, CommandType.SET_REPORT_INTERVAL, 0),
    ]
    for n, command in enumerate(commands, start=1):
        await server.send(command)
        await eventually(lambda n=n: _count(server, CommandResult) == n)

    assert _answers(server) == [
        ("ack", 500),
        ("result", 500),
        ("ack", 501),
        ("result", 501),
        ("ack", 500),
        ("result", 500),
        ("ack", 502),
        ("result", 502),
    ]
    locked = RecordFlags.DOORS_LOCKED
    both = RecordFlags.DOORS_LOCKED | RecordFlags.ENGINE_START_INHIBITED
    results = [m for m in server.received if isinstance(m, CommandResult)]
    assert [(r.status, r.failure, r.state) for r in results] == [
        (CommandStatus.DONE, CommandFailure.NONE, locked),
        (CommandStatus.DONE, CommandFailure.NONE, both),
        (CommandStatus.DONE, CommandFailure.NONE, both),
        (CommandStatus.FAILED, CommandFailure.INVALID_PARAMETER, both),
    ]
    assert box.commands == commands


async def test_the_receipt_ack_is_out_before_the_command_runs(serve: Serve) -> None:
    """The link dies while the command runs: the server has its ACK, not its result; after the
    next login it sends the command again and gets the remembered result, executed once."""
    rig = await serve(answer_data)
    server = rig.server
    executed: list[int] = []

    def lose_the_link(command: Command, state: BoxState) -> CommandOutcome | None:
        executed.append(command.seq)
        box.cut()
        return None

    box = rig.box(on_command=lose_the_link)
    await box.connect()
    await server.send(Command(600, CommandType.LOCK, 0))
    await eventually(lambda: executed == [600] and not box.connected)
    await eventually(lambda: _answers(server) == [("ack", 600)])

    await box.connect()
    await server.send(Command(600, CommandType.LOCK, 0))
    await eventually(lambda: ("result", 600) in _answers(server))
    assert _answers(server) == [("ack", 600), ("ack", 600), ("result", 600)]
    assert executed == [600] and box.state.doors_locked


# --- dead links: the same on both --------------------------------------------------------------


async def test_an_unanswered_heartbeat_drops_the_link(serve: Serve) -> None:
    rig = await serve(silent)
    server = rig.server
    box = rig.box(io_timeout_s=1.0, heartbeat_interval_s=0.05)
    await box.connect()
    await eventually(lambda: not box.connected)
    assert any(isinstance(m, Heartbeat) for m in server.received)


async def test_an_overdue_ack_drops_the_link_and_keeps_the_records(serve: Serve) -> None:
    rig = await serve(silent)
    server = rig.server
    box = rig.box(batch_size=5, ack_timeout_s=0.3)
    box.enqueue(track(10))
    await box.connect()
    with pytest.raises(BoxDisconnected):
        await box.flush(timeout=TIMEOUT)
    assert not box.connected and box.pending == 10
    assert box.outbox.resends[Resend.ACK_TIMEOUT] + box.outbox.resends[Resend.LINK_LOST] == 10

    server.reply = answer_data
    await box.deliver(timeout=TIMEOUT)
    assert box.acked == 10 and box.pending == 0 and box.logins == 2


async def test_records_cut_off_in_flight_are_delivered_after_the_next_login(
    serve: Serve,
) -> None:
    rig = await serve(silent)
    server = rig.server
    box = rig.box(batch_size=3, window=3)
    records = track(9)
    entries = box.outbox.enqueue(records)
    await box.connect()
    assert await box.send_frames() == 3
    await eventually(lambda: len(server.received) == 3)
    box.cut()
    assert not box.connected and box.pending == 9 and box.resent == 9
    assert all(e.fate is Fate.WAITING for e in entries)

    server.reply = answer_data
    await box.deliver(timeout=TIMEOUT)
    assert all(e.fate is Fate.ACKED for e in entries) and box.logins == 2
    resent = [r for m in server.received[3:] if isinstance(m, Position) for r in m.records]
    assert resent == records  # the same records, in their order
