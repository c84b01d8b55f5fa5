"""The device-session core alone, driven by a toy line protocol: what it decides does not
depend on GP8, so a new protocol is one adapter (docs/architecture.md).

The toy protocol: ``HELLO <imei>`` logs in, ``P <seq> <time_ms> <lat> <lon>`` is a position,
``PING <seq>`` a keep-alive, ``R <seq>`` a command answer; replies are ``OK <seq>`` and
``NO <seq> <reason>``. Lines that do not parse are framing problems.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gateway.context import DeviceContext
from gateway.core import (
    MAX_ERRORS_IN_A_ROW,
    DeviceSession,
    LoginDecision,
    Problem,
    Refusal,
    Role,
    Rule,
)
from gateway.metrics import SessionMetrics
from storage.models import Event, Position, now_ms
from tests.storage.factories import position

CTX = DeviceContext("flt_toy", "dev_toy", "123456789012347")


@dataclass(frozen=True)
class Line:
    verb: str
    seq: int
    args: tuple[str, ...] = ()


RULES = {
    "HELLO": Rule("login", Role.LOGIN),
    "P": Rule("position", Role.DATA),
    "PING": Rule("ping", Role.KEEPALIVE),
    "R": Rule("answer", Role.ANSWER, ack=False),
}


@dataclass
class ToySession:
    known: set[str] = field(default_factory=lambda: {CTX.imei})
    authenticated: bool = False
    buffer: bytes = b""

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    def greeting(self) -> list[str]:
        return ["WELCOME"]

    def feed(self, data: bytes) -> Iterator[Line | Problem]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            words = raw.decode(errors="replace").split()
            if len(words) >= 2 and words[0] in ("P", "PING", "R", "BOGUS") and words[1].isdigit():
                yield Line(words[0], int(words[1]), tuple(words[2:]))
            elif len(words) == 2 and words[0] == "HELLO":
                yield Line("HELLO", 0, (words[1],))
            else:
                yield Problem("garbage", None, None)

    def rule(self, frame: Line) -> Rule | None:
        return RULES.get(frame.verb)

    def allowed(self, frame: Line) -> bool:
        return (frame.verb == "HELLO") != self.authenticated

    def seq(self, frame: Line) -> int:
        return frame.seq

    async def login(self, frame: Line, peer: str) -> LoginDecision[str]:
        ok = frame.args[0] in self.known
        return LoginDecision("HI" if ok else "BYE", CTX if ok else None, "ok" if ok else "unknown")

    def refuse_login(self, status: str) -> str:
        return "BYE"

    def mark_authenticated(self) -> None:
        self.authenticated = True

    def records(
        self, frame: Line, context: DeviceContext, received_ms: int, metrics: SessionMetrics
    ) -> tuple[Sequence[Position], Sequence[Event]]:
        time_ms, lat, lon = int(frame.args[0]), float(frame.args[1]), float(frame.args[2])
        if abs(lat) > 90:
            metrics.records_rejected["latitude_out_of_range"] += 1
            return (), ()
        p = position(context.fleet_id, context.device_id, None, time_ms, lat=lat, lon=lon)._replace(
            received_ms=received_ms
        )
        return (p,), ()

    def ack(self, seq: int) -> str:
        return f"OK {seq}"

    def refuse(self, seq: int, refusal: Refusal) -> str:
        return f"NO {seq} {refusal.value}"

    def encode(self, replies: Sequence[str]) -> bytes:
        return b"".join(f"{r}\n".encode() for r in replies)

    def close(self) -> None:
        self.authenticated = False


@dataclass
class Rig:
    stored: list[Position] = field(default_factory=list)
    answers: list[tuple[str, Line]] = field(default_factory=list)
    storage_up: bool = True
    metrics: SessionMetrics = field(default_factory=SessionMetrics)
    session: DeviceSession[Line, str] = field(init=False)

    def __post_init__(self) -> None:
        self.session = DeviceSession(ToySession(), self.store, self.metrics, self.on_answer)

    async def store(self, positions: Sequence[Position], events: Sequence[Event]) -> bool:
        if not self.storage_up:
            return False
        self.stored.extend(positions)
        return True

    async def on_answer(self, imei: str, frame: Line) -> None:
        self.answers.append((imei, frame))

    async def send(self, text: str) -> list[str]:
        step = await self.session.handle(text.encode(), now_ms())
        return step.wire.decode().splitlines()


async def test_login_then_data_are_stored_and_acknowledged_in_order() -> None:
    rig = Rig()
    assert await rig.send(f"HELLO {CTX.imei}\n") == ["HI"]
    t = now_ms()
    replies = await rig.send(f"P 1 {t} 48.85 2.35\nPING 2\nP 3 {t + 1000} 48.86 2.36\n")
    assert replies == ["OK 1", "OK 2", "OK 3"]
    assert [(p.device_id, p.lat) for p in rig.stored] == [("dev_toy", 48.85), ("dev_toy", 48.86)]
    assert rig.metrics.frames == {"login": 1, "position": 2, "ping": 1}


async def test_a_frame_split_across_chunks_waits_for_its_end() -> None:
    rig = Rig()
    await rig.send(f"HELLO {CTX.imei}\n")
    assert await rig.send(f"P 1 {now_ms()} 48.8") == []
    assert await rig.send("5 2.35\n") == ["OK 1"]
    assert len(rig.stored) == 1


async def test_data_before_login_is_refused_and_ends_the_session() -> None:
    rig = Rig()
    step = await rig.session.handle(f"P 1 {now_ms()} 48.85 2.35\n".encode(), now_ms())
    assert step.wire == b"NO 1 not_authenticated\n" and step.close == "not_authenticated"
    assert rig.stored == []


async def test_an_unknown_box_is_refused() -> None:
    rig = Rig()
    step = await rig.session.handle(b"HELLO 999\n", now_ms())
    assert step.wire == b"BYE\n" and step.close == "login_refused"


async def test_storage_down_refuses_the_data_frames_only() -> None:
    rig = Rig()
    await rig.send(f"HELLO {CTX.imei}\n")
    rig.storage_up = False
    replies = await rig.send(f"P 1 {now_ms()} 48.85 2.35\nPING 2\n")
    assert replies == ["NO 1 server_busy", "OK 2"]
    assert rig.metrics.nacks == {"server_busy": 1}


async def test_an_impossible_record_is_dropped_alone_and_its_frame_acknowledged() -> None:
    rig = Rig()
    await rig.send(f"HELLO {CTX.imei}\n")
    t = now_ms()
    assert await rig.send(f"P 1 {t} 123.0 2.35\nP 2 {t} 48.0 2.0\n") == ["OK 1", "OK 2"]
    assert [p.lat for p in rig.stored] == [48.0]
    assert rig.metrics.records_rejected == {"latitude_out_of_range": 1}


async def test_command_answers_reach_the_hook() -> None:
    rig = Rig()
    await rig.send(f"HELLO {CTX.imei}\n")
    assert await rig.send("R 7\n") == []  # this rule expects no acknowledgement
    assert rig.answers == [(CTX.imei, Line("R", 7))]


async def test_an_unknown_type_or_a_second_login_is_refused() -> None:
    rig = Rig()
    await rig.send(f"HELLO {CTX.imei}\n")
    assert await rig.send(f"BOGUS 4\nHELLO {CTX.imei}\n") == [
        "NO 4 unknown_type",
        "NO 0 unknown_type",
    ]
    assert rig.metrics.frame_errors == {"unexpected_message": 2}


async def test_a_link_of_nothing_but_noise_is_closed() -> None:
    rig = Rig()
    await rig.send(f"HELLO {CTX.imei}\n")
    step = await rig.session.handle(b"?\n" * (MAX_ERRORS_IN_A_ROW + 10), now_ms())
    assert step.close == "too_many_errors"
    assert rig.metrics.frame_errors["garbage"] == MAX_ERRORS_IN_A_ROW


async def test_frames_are_let_go_of_while_their_records_are_stored() -> None:
    # A link that decodes a message whole hands its frames over one by one (MQTT: uplink.py's
    # _consume); while their records are stored, the decoded frames must not stay alive.
    rig = Rig()
    await rig.send(f"HELLO {CTX.imei}\n")
    frames = [Line("P", seq, (str(1_700_000_000_000 + seq), "1.0", "2.0")) for seq in (1, 2)]
    alive = [weakref.ref(frame) for frame in frames]
    seen_alive: list[bool] = []

    async def store(positions: Sequence[Position], events: Sequence[Event]) -> bool:
        seen_alive.extend(ref() is not None for ref in alive)
        return await rig.store(positions, events)

    def handed_over(items: list[Line]) -> Iterator[Line]:
        items.reverse()
        while items:
            yield items.pop()

    rig.session.store = store
    step = await rig.session.handle_frames(handed_over(frames), now_ms())
    assert step.replies == ["OK 1", "OK 2"]
    assert seen_alive == [False, False]
