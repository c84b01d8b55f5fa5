"""Round-trip properties over every message type, with each field's full wire range."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.gp8 import (
    Ack,
    Challenge,
    Command,
    CommandResult,
    EncodeError,
    Event,
    FrameDecoder,
    Heartbeat,
    Ident,
    Login,
    LoginResult,
    Message,
    Nack,
    Position,
    PositionRecord,
    encode,
)
from protocol.gp8.codec import MESSAGES
from tests.protocol.gp8 import strategies as gp8


def decode_one(data: bytes) -> Message | None:
    decoder = FrameDecoder()
    decoder.feed(data)
    message = decoder.next_frame()
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    return message


def test_strategies_cover_every_message_class() -> None:
    assert set(gp8.BY_CLASS) == {cls for cls, _, _ in MESSAGES.values()}


@settings(max_examples=500)
@given(gp8.messages)
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert decode_one(data) == message
    # Canonical: there is one encoding per message, so re-encoding gives the same bytes.
    assert encode(message) == data


@settings(max_examples=200)
@given(st.lists(gp8.messages, min_size=1, max_size=8), st.integers(1, 600))
def test_round_trip_of_a_stream_in_chunks(messages: list[Message], chunk: int) -> None:
    stream = b"".join(map(encode, messages))
    decoder = FrameDecoder()
    decoded: list[Message] = []
    for i in range(0, len(stream), chunk):
        decoder.feed(stream[i : i + chunk])
        while (message := decoder.next_frame()) is not None:
            decoded.append(message)
    assert decoded == messages
    assert decoder.buffered == 0


@settings(max_examples=300)
@given(gp8.messages)
def test_frame_layout_invariants(message: Message) -> None:
    data = encode(message)
    assert data[:2] == b"G8"
    assert int.from_bytes(data[2:4], "big") == len(data) - 4
    assert data[4] == 1
    assert int.from_bytes(data[6:10], "big") == message.seq


# --- anything encode accepts must decode back equal ---------------------------------------------
# The strategies below go past the wire ranges and outside the enums on purpose: encode must
# either refuse with EncodeError or produce a frame that decodes to an equal message.

_any_int = st.one_of(st.integers(-(2**65), 2**65), st.integers(-2, 300))
_loose_records = st.builds(PositionRecord, *[_any_int] * len(PositionRecord._fields))
_loose_bytes = st.binary(max_size=40)

loose_messages: st.SearchStrategy[Any] = st.one_of(
    st.builds(
        Login,
        _any_int,
        st.one_of(gp8.imeis, st.text(max_size=17)),
        _any_int,
        st.tuples(_any_int, _any_int, _any_int),
        _loose_bytes,
    ),
    st.builds(
        Ident,
        _any_int,
        st.one_of(gp8.imeis, st.text(max_size=17)),
        _any_int,
        st.tuples(_any_int, _any_int, _any_int),
    ),
    st.builds(Position, _any_int, st.lists(_loose_records, max_size=3).map(tuple)),
    st.builds(Event, _any_int, _any_int, _any_int, _loose_records),
    st.builds(Heartbeat, _any_int),
    st.builds(CommandResult, _any_int, _any_int, _any_int, _any_int, _any_int),
    st.builds(Challenge, _any_int, _loose_bytes, _any_int),
    st.builds(LoginResult, _any_int, _any_int, _any_int),
    st.builds(Command, _any_int, _any_int, _any_int),
    st.builds(Ack, _any_int, _any_int),
    st.builds(Nack, _any_int, _any_int, _any_int),
)


@settings(max_examples=500)
@given(loose_messages)
def test_whatever_encodes_decodes_back_equal(message: Any) -> None:
    try:
        data = encode(message)
    except EncodeError:
        return
    assert decode_one(data) == message
