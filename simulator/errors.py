"""What a virtual box raises, whatever link carries it."""

from __future__ import annotations

from protocol.gp8 import LoginStatus


class BoxError(Exception):
    """Base class of the virtual box's errors."""


class BoxDisconnected(BoxError):
    """The link is gone (or was never made); unacknowledged records stay in the outbox."""


class LoginRefused(BoxError):
    """The server (TCP: LOGIN_RESULT) or the broker (MQTT: CONNACK, SUBACK) refused the box."""

    def __init__(self, status: LoginStatus) -> None:
        super().__init__(f"login refused: {status.name}")
        self.status = status
