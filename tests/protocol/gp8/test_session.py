"""Server-side session state machine (docs/protocol.md §5)."""

from __future__ import annotations

import pytest

from protocol.gp8 import (
    Ack,
    CommandResult,
    DeviceSession,
    Event,
    Heartbeat,
    Login,
    Message,
    Nack,
    Position,
    ProtocolError,
    SessionError,
    SessionState,
)
from protocol.gp8.codec import MESSAGES
from tests.protocol.gp8.cases import CASES

# One message of each class, from the shared table.
SAMPLES: dict[type, Message] = {}
for _case in CASES:
    SAMPLES.setdefault(type(_case.message), _case.message)

DATA = {Position, Event, Heartbeat, CommandResult, Ack, Nack}
# What a box may send in each state; every other message class is refused. Server → box types
# (CHALLENGE, LOGIN_RESULT, COMMAND) are refused in every state, and so is IDENT: it heads MQTT
# messages, which do not go through a TCP session.
EXPECTED: dict[SessionState, set[type]] = {
    SessionState.AWAIT_LOGIN: {Login},
    SessionState.AUTHENTICATED: DATA,
    SessionState.STREAMING: DATA,
    SessionState.CLOSED: set(),
}


def session_in(state: SessionState) -> DeviceSession:
    session = DeviceSession()
    if state is not SessionState.AWAIT_LOGIN:
        session.authenticated()
    if state is SessionState.STREAMING:
        session.receive(SAMPLES[Heartbeat])
    if state is SessionState.CLOSED:
        session.close()
    assert session.state is state
    return session


def test_every_message_class_is_sampled() -> None:
    assert set(SAMPLES) == {cls for cls, _, _ in MESSAGES.values()}


@pytest.mark.parametrize("state", list(SessionState), ids=lambda s: s.value)
@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda c: c.__name__)
def test_state_table(state: SessionState, cls: type) -> None:
    session = session_in(state)
    if cls in EXPECTED[state]:
        session.receive(SAMPLES[cls])
    else:
        with pytest.raises(SessionError):
            session.receive(SAMPLES[cls])
        assert session.state is state  # a refused message changes nothing


def observe(session: DeviceSession) -> tuple[SessionState, bool]:
    return session.state, session.is_authenticated


def test_happy_path() -> None:
    session = DeviceSession()
    assert observe(session) == (SessionState.AWAIT_LOGIN, False)
    session.receive(SAMPLES[Login])
    # Verifying the proof is the caller's job: receiving a LOGIN authenticates nothing.
    assert observe(session) == (SessionState.AWAIT_LOGIN, False)
    session.authenticated()
    assert observe(session) == (SessionState.AUTHENTICATED, True)
    session.receive(SAMPLES[Position])
    assert observe(session) == (SessionState.STREAMING, True)
    session.receive(SAMPLES[Event])
    assert observe(session) == (SessionState.STREAMING, True)
    session.close()
    assert observe(session) == (SessionState.CLOSED, False)


def test_nothing_but_login_before_authentication() -> None:
    session = DeviceSession()
    for cls in DATA:
        with pytest.raises(SessionError, match="await_login"):
            session.receive(SAMPLES[cls])
    assert not session.is_authenticated


@pytest.mark.parametrize(
    "state",
    [SessionState.AUTHENTICATED, SessionState.STREAMING, SessionState.CLOSED],
    ids=lambda s: s.value,
)
def test_authenticated_only_once(state: SessionState) -> None:
    session = session_in(state)
    with pytest.raises(SessionError):
        session.authenticated()
    assert session.state is state


def test_close_is_idempotent_from_any_state() -> None:
    for state in SessionState:
        session = session_in(state)
        session.close()
        session.close()
        assert session.state is SessionState.CLOSED


def test_session_error_is_a_protocol_error() -> None:
    assert issubclass(SessionError, ProtocolError)
