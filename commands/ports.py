"""What the command service needs from outside: storage, transports, listeners.

Small Protocols, so the service never imports the gateway or a storage engine: a transport
registers as a `Sender`, and tests swap in a fake one (tests/commands/test_service.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from protocol.gp8 import Command
from storage.models import CommandRecord
from storage.repository import (
    AlertRepo,
    AuditRepo,
    CommandRepo,
    CounterRepo,
    DeviceRepo,
    PolicyRepo,
    VehicleRepo,
)

# Everything a box hook does is bounded: the transport waits for it before answering the box.
HOOK_TIMEOUT_S = 10.0


class Sender(Protocol):
    """A transport that can reach boxes (TcpGateway, MqttBridge)."""

    def is_online(self, imei: str) -> bool: ...

    async def send(self, imei: str, message: Command) -> bool:
        """Write the COMMAND to the box; False if it is not connected here or the write failed."""
        ...


class CommandStore(Protocol):
    """The parts of a `storage.repository.Store` the service uses."""

    @property
    def commands(self) -> CommandRepo: ...
    @property
    def audit(self) -> AuditRepo: ...
    @property
    def policies(self) -> PolicyRepo: ...
    @property
    def alerts(self) -> AlertRepo: ...
    @property
    def vehicles(self) -> VehicleRepo: ...
    @property
    def devices(self) -> DeviceRepo: ...
    @property
    def counters(self) -> CounterRepo: ...  # the hourly engine-start cap, across processes


Listener = Callable[[CommandRecord], None]
"""Called with each command after a stored change (benchmarks, push feeds)."""
