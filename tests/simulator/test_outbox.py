"""The box's sans-IO outbox (simulator.outbox): frames out, answers in, a fate per record.

No network and no event loop: the clock is a number the test moves.
"""

from __future__ import annotations

from collections.abc import Iterator

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
from simulator.outbox import (
    ACK_TIMEOUT_S,
    NACK_VERDICTS,
    Fate,
    Framing,
    Kind,
    Outbox,
    Resend,
    Unit,
    Verdict,
)
from simulator.records import make_record

IMEI = "356000000000018"
SECRET = "box-secret"
NONCE = bytes(range(16))
T0_MS = 1_795_000_000_000
BACKOFF_S = 2.0


def track(n: int) -> list[PositionRecord]:
    return [make_record(T0_MS + i * 1000, 48.85 + i * 1e-4, 2.35, speed_kmh=40) for i in range(n)]


def online(framing: Framing = Framing.STREAM, **kw: object) -> Outbox:
    """An outbox whose link is up and, over a stream, logged in."""
    outbox = Outbox(IMEI, SECRET, Model.GP8500, busy_backoff_s=BACKOFF_S, **kw)  # type: ignore[arg-type]
    outbox.link_up(framing)
    if framing is Framing.STREAM:
        outbox.receive_data(encode(Challenge(0, NONCE, T0_MS)), 0.0)
        outbox.receive_data(encode(LoginResult(1, LoginStatus.OK, T0_MS)), 0.0)
    assert outbox.online
    return outbox


def decode(units: list[Unit]) -> list[Message]:
    decoder = FrameDecoder()
    decoder.feed(b"".join(u.data for u in units))
    out: list[Message] = []
    for item in decoder:
        assert not isinstance(item, FrameError)
        out.append(item)
    return out


def pieces(data: bytes) -> Iterator[list[bytes]]:
    """The same bytes whole, one byte at a time, and split in the middle: a stream may cut
    them anywhere."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[: len(data) // 2], data[len(data) // 2 :]]


# --- the NACK table ---------------------------------------------------------------------------


def test_every_nack_reason_has_a_verdict() -> None:
    assert set(NACK_VERDICTS) == set(NackReason)


@pytest.mark.parametrize("reason", list(NackReason), ids=lambda r: r.name)
def test_a_nack_settles_the_frames_records_as_its_verdict_says(reason: NackReason) -> None:
    outbox = online()
    entries = outbox.enqueue(track(3))
    (unit,) = outbox.take(now=10.0)
    assert unit.seq is not None
    reaction = outbox.receive_data(encode(Nack(0, unit.seq, reason)), 11.0)

    verdict = NACK_VERDICTS[reason]
    (answer,) = reaction.answers
    assert answer.reason is reason and answer.latency_s == 1.0
    assert outbox.nacks == {reason: 1}
    if verdict is Verdict.REFUSE:
        assert [e.fate for e in entries] == [Fate.REFUSED] * 3
        assert all(e.refusal is reason for e in entries)
        assert outbox.refused == 3 and outbox.pending == 0 and outbox.resent == 0
    else:
        assert [e.fate for e in entries] == [Fate.WAITING] * 3
        assert outbox.refused == 0 and outbox.pending == 3
        assert outbox.resends == {Resend.NACK: 3}
        # RESEND goes out again at once; RESEND_LATER after the back-off.
        assert outbox.may_send(11.0) is (verdict is Verdict.RESEND)
        assert outbox.may_send(11.0 + BACKOFF_S)
        (again,) = outbox.take(now=13.0)
        assert decode([again]) == [Position(again.seq or 0, tuple(e.record for e in entries))]
        assert all(e.sends == 2 for e in entries)


# --- fates ------------------------------------------------------------------------------------


def test_each_record_has_a_fate_and_final_fates_are_counted_by_kind() -> None:
    outbox = online(batch_size=2)
    records = track(5)
    positions = outbox.enqueue(records[:4])
    sos = outbox.enqueue_event(EventCode.SOS, records[4], detail=7)
    assert all(e.fate is Fate.WAITING for e in [*positions, sos])

    units = outbox.take(now=0.0)
    assert [type(m).__name__ for m in decode(units)] == ["Position", "Position", "Event"]
    assert all(e.fate is Fate.IN_FLIGHT for e in [*positions, sos])
    assert outbox.pending == 5 and outbox.frames_in_flight == 3

    first, second, event = (u.seq for u in units)
    assert first is not None and second is not None and event is not None
    answers = (
        encode(Ack(0, first))
        + encode(Nack(0, second, NackReason.INVALID_DATA))
        + encode(Nack(0, event, NackReason.IMEI_MISMATCH))
    )
    reaction = outbox.receive_data(answers, 0.5)

    assert [e.fate for e in positions] == [Fate.ACKED] * 2 + [Fate.REFUSED] * 2
    assert sos.fate is Fate.REFUSED and sos.refusal is NackReason.IMEI_MISMATCH
    assert outbox.count(Fate.ACKED, Kind.POSITION) == 2
    assert outbox.count(Fate.REFUSED, Kind.POSITION) == 2
    assert outbox.count(Fate.REFUSED, Kind.EVENT) == 1
    assert (outbox.acked, outbox.refused, outbox.pending) == (2, 3, 0)
    assert [(len(a.entries), a.fate, a.is_event) for a in reaction.answers] == [
        (2, Fate.ACKED, False),
        (2, Fate.REFUSED, False),
        (1, Fate.REFUSED, True),
    ]


def test_an_answer_to_no_frame_of_ours_changes_nothing() -> None:
    outbox = online()
    outbox.enqueue(track(1))
    (unit,) = outbox.take(now=0.0)
    # An ACK twice, and a NACK carrying a number read from a damaged header (§5.6).
    assert unit.seq is not None
    outbox.receive_data(encode(Ack(0, unit.seq)), 0.1)
    reaction = outbox.receive_data(
        encode(Ack(0, unit.seq)) + encode(Nack(0, 999, NackReason.BAD_CRC)), 0.2
    )
    assert reaction.answers == []
    assert outbox.acked == 1 and outbox.pending == 0 and outbox.resent == 0
    assert outbox.nacks == {NackReason.BAD_CRC: 1}  # counted, acted upon only when it is ours


def test_frames_are_batched_and_events_go_alone() -> None:
    outbox = online(batch_size=4)
    records = track(10)
    outbox.enqueue(records[:6])
    outbox.enqueue_event(EventCode.SOS, records[6], detail=2)
    outbox.enqueue(records[7:])
    shapes = [
        len(m.records) if isinstance(m, Position) else m.code.name
        for m in decode(outbox.take(now=0.0))
        if isinstance(m, Position | Event)
    ]
    assert shapes == [4, 2, "SOS", 3]


# --- resending --------------------------------------------------------------------------------


def test_a_lost_link_puts_every_frame_in_flight_back_in_order() -> None:
    outbox = online(batch_size=2, window=3)
    records = track(7)
    entries = outbox.enqueue(records)
    units = outbox.take(now=0.0, max_frames=3)
    assert units[1].seq is not None
    outbox.receive_data(encode(Ack(0, units[1].seq)), 0.1)  # the middle frame is stored

    assert outbox.link_lost() == 4
    assert not outbox.online and outbox.resends == {Resend.LINK_LOST: 4}
    assert [e.fate for e in entries] == [Fate.WAITING] * 2 + [Fate.ACKED] * 2 + [Fate.WAITING] * 3

    outbox.link_up(Framing.MESSAGES)
    again = [r for m in decode(outbox.take(now=1.0)) if isinstance(m, Position) for r in m.records]
    assert again == records[:2] + records[4:]


def test_an_overdue_ack_puts_the_frame_back_and_says_so() -> None:
    outbox = online(window=2)  # 50 records a frame
    outbox.enqueue(track(60))
    outbox.take(now=0.0, max_frames=1)
    outbox.take(now=10.0, max_frames=1)
    assert outbox.next_deadline(1.0) == ACK_TIMEOUT_S  # the oldest frame's
    assert outbox.expire(ACK_TIMEOUT_S - 0.001) == 0
    assert outbox.expire(ACK_TIMEOUT_S) == 50  # the first frame only: "the link is dead"
    assert outbox.next_deadline(ACK_TIMEOUT_S) == 10.0 + ACK_TIMEOUT_S
    assert outbox.expire(10.0 + ACK_TIMEOUT_S) == 10
    assert outbox.resends == {Resend.ACK_TIMEOUT: 60} and outbox.frames_in_flight == 0


def test_a_frame_that_reached_no_server_goes_again_after_the_back_off() -> None:
    outbox = online(Framing.MESSAGES)
    outbox.enqueue(track(3))
    (unit,) = outbox.take(now=5.0)
    assert unit.seq is not None
    assert outbox.undelivered([unit.seq], 5.0) == 3
    assert outbox.unrouted == 3 and outbox.resent == 0  # it reached no gp8: not a resend
    assert not outbox.may_send(5.0) and outbox.next_deadline(5.0) == 5.0 + BACKOFF_S
    assert outbox.may_send(5.0 + BACKOFF_S)


# --- commands ---------------------------------------------------------------------------------


def test_a_command_is_acked_on_receipt_then_executed_once_per_number() -> None:
    executed: list[int] = []
    outbox = online(on_command=lambda command, state: executed.append(command.seq))
    commands = [
        Command(500, CommandType.LOCK, 0),
        Command(501, CommandType.DISABLE_ENGINE_START, 0),
        Command(500, CommandType.LOCK, 0),  # resent by the server: answered, not executed
        Command(502, CommandType.SET_REPORT_INTERVAL, 0),
    ]
    reaction = outbox.receive_data(b"".join(map(encode, commands)), 0.0)

    # The receipt ACKs come first, and nothing has been executed yet.
    assert [(type(m), m.acked_seq) for m in decode(reaction.send) if isinstance(m, Ack)] == [
        (Ack, 500),
        (Ack, 501),
        (Ack, 500),
        (Ack, 502),
    ]
    assert executed == [] and not outbox.state.doors_locked and outbox.commands_due == 4
    results = decode(outbox.execute_due())
    assert executed == [500, 501, 502] and outbox.commands_due == 0
    locked = RecordFlags.DOORS_LOCKED
    both = RecordFlags.DOORS_LOCKED | RecordFlags.ENGINE_START_INHIBITED
    assert [
        (r.command_seq, r.status, r.failure, r.state)
        for r in results
        if isinstance(r, CommandResult)
    ] == [
        (500, CommandStatus.DONE, CommandFailure.NONE, locked),
        (501, CommandStatus.DONE, CommandFailure.NONE, both),
        (500, CommandStatus.DONE, CommandFailure.NONE, both),
        (502, CommandStatus.FAILED, CommandFailure.INVALID_PARAMETER, both),
    ]
    assert outbox.commands == commands


# --- login and framing ------------------------------------------------------------------------


@pytest.mark.parametrize("split", range(3), ids=["whole", "bytewise", "halves"])
def test_a_stream_logs_in_however_the_bytes_arrive(split: int) -> None:
    outbox = Outbox(IMEI, SECRET, Model.GP8500)
    outbox.link_up(Framing.STREAM)
    command = Command(77, CommandType.LOCK, 0)
    server = (
        encode(Challenge(0, NONCE, T0_MS))
        + encode(LoginResult(1, LoginStatus.OK, T0_MS))
        + encode(command)  # right behind the LOGIN_RESULT, in the same bytes
    )
    sent: list[Unit] = []
    login = None
    for piece in list(pieces(server))[split]:
        reaction = outbox.receive_data(piece, 0.0)
        sent += reaction.send
        login = reaction.login or login
    assert login == LoginResult(1, LoginStatus.OK, T0_MS) and outbox.online
    first, ack = decode(sent)
    assert isinstance(first, Login) and first.imei == IMEI
    assert verify_login_proof(SECRET, NONCE, IMEI, Model.GP8500, first.proof)
    assert isinstance(ack, Ack) and ack.acked_seq == 77
    assert outbox.challenge is not None and outbox.challenge.server_time_ms == T0_MS


@pytest.mark.parametrize(
    "answer",
    [LoginResult(1, LoginStatus.BAD_PROOF, 0), Nack(1, 1, NackReason.NOT_AUTHENTICATED)],
    ids=["refused", "nacked"],
)
def test_a_refused_login_leaves_the_box_offline(answer: LoginResult | Nack) -> None:
    outbox = Outbox(IMEI, SECRET)
    outbox.link_up(Framing.STREAM)
    outbox.receive_data(encode(Challenge(0, NONCE, 0)), 0.0)
    reaction = outbox.receive_data(encode(answer), 0.0)
    assert reaction.login == answer and not outbox.online


def test_over_messages_every_unit_starts_with_ident_and_stands_alone() -> None:
    outbox = online(Framing.MESSAGES)
    outbox.enqueue(track(2))
    units = [*outbox.take(now=0.0), outbox.heartbeat(0.0), outbox.wrap(b"raw")]
    for unit in units:
        decoder = FrameDecoder()
        decoder.feed(unit.data)
        ident = decoder.next_frame()
        assert isinstance(ident, Ident) and ident.imei == IMEI and ident.model is Model.GP8500
    heartbeat = units[1]
    assert heartbeat.seq is not None
    torn = encode(Ack(0, 123))[:-3]  # the rest of a message must not eat the next one
    outbox.receive_data(torn, 0.1)
    (answer,) = outbox.receive_data(encode(Ack(0, heartbeat.seq)), 0.2).answers
    assert answer.entries == () and answer.seq == heartbeat.seq


def test_peek_frame_shows_the_next_frame_and_changes_nothing() -> None:
    outbox = online()
    assert isinstance(decode([Unit(outbox.peek_frame())])[0], Heartbeat)
    outbox.enqueue(track(3))
    (peeked,) = decode([Unit(outbox.peek_frame())])
    (taken,) = outbox.take(now=0.0)
    assert decode([taken]) == [peeked]
