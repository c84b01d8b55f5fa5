"""Server-side state of one box session (docs/protocol.md §5).

AWAIT_LOGIN → AUTHENTICATED → STREAMING → CLOSED. Which messages a box may send in which state
is a table; anything else is a SessionError, and nothing a box sends before a successful login
is stored. Pure: the gateway drives it, the state machine only decides.
"""

from __future__ import annotations

from enum import Enum

from protocol.gp8.errors import ProtocolError
from protocol.gp8.frames import Ack, CommandResult, Event, Heartbeat, Login, Message, Nack, Position


class SessionState(Enum):
    AWAIT_LOGIN = "await_login"
    AUTHENTICATED = "authenticated"
    STREAMING = "streaming"
    CLOSED = "closed"


class SessionError(ProtocolError):
    """A message the box may not send in the session's current state."""


_DATA = (Position, Event, Heartbeat, CommandResult, Ack, Nack)
ALLOWED: dict[SessionState, tuple[type[Message], ...]] = {
    SessionState.AWAIT_LOGIN: (Login,),
    SessionState.AUTHENTICATED: _DATA,
    SessionState.STREAMING: _DATA,
    SessionState.CLOSED: (),
}


class DeviceSession:
    def __init__(self) -> None:
        self.state = SessionState.AWAIT_LOGIN

    def receive(self, message: Message) -> None:
        """Check that ``message`` may arrive now; raises SessionError otherwise."""
        if not isinstance(message, ALLOWED[self.state]):
            raise SessionError(f"{type(message).__name__} not allowed in {self.state.value}")
        if self.state is SessionState.AUTHENTICATED:
            self.state = SessionState.STREAMING

    def authenticated(self) -> None:
        if self.state is not SessionState.AWAIT_LOGIN:
            raise SessionError(f"login in state {self.state.value}")
        self.state = SessionState.AUTHENTICATED

    def close(self) -> None:
        self.state = SessionState.CLOSED

    @property
    def is_authenticated(self) -> bool:
        return self.state in (SessionState.AUTHENTICATED, SessionState.STREAMING)
