"""The box the simulator drives, whatever carries its frames: TCP (simulator.box.VirtualBox)
or MQTT (simulator.mqtt_box.MqttBox). Both speak the real codec and keep the same outbox
semantics; the driver only needs what `Box` lists.

Optional abilities are looked up, not required: ``send_raw`` (write raw bytes, for corrupted
frames), ``on_ack`` (ACK latency hook) and ``requeued`` (resend counter). A transport without
them still runs every scenario; the report says what it could not measure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.gp8 import Command, EventCode, Model, NackReason, PositionRecord
from simulator.box import AckHook, BoxState, CommandHook

TRANSPORTS = ("tcp", "mqtt")


class Box(Protocol):
    imei: str
    state: BoxState
    on_command: CommandHook | None
    acked: int
    dropped: int
    logins: int
    nacks: Counter[NackReason]
    commands: list[Command]

    @property
    def connected(self) -> bool: ...
    @property
    def pending(self) -> int: ...

    def record(
        self, time_ms: int, lat: float, lon: float, *, flags: int = 0, **kwargs: Any
    ) -> PositionRecord: ...
    def enqueue(self, records: Iterable[PositionRecord]) -> None: ...
    def enqueue_event(self, code: EventCode, record: PositionRecord, detail: int = 0) -> None: ...
    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    def cut(self) -> None: ...
    async def flush(self, timeout: float | None = None) -> None: ...  # noqa: ASYNC109
    async def send_frames(self, max_frames: int | None = None) -> int: ...


@dataclass(frozen=True, slots=True)
class TransportConfig:
    kind: str = "tcp"
    host: str = "127.0.0.1"
    port: int = 5027
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    batch_size: int = 50
    window: int = 4
    connect_timeout_s: float = 10.0
    io_timeout_s: float = 30.0
    heartbeat_interval_s: float | None = None


BoxFactory = Callable[[str, str, Model, CommandHook | None, AckHook | None], Box]


def box_factory(config: TransportConfig) -> BoxFactory:
    """A function making boxes of ``config``'s transport: (imei, secret, model, hooks)."""
    if config.kind == "tcp":
        from simulator.box import VirtualBox

        def tcp(
            imei: str,
            secret: str,
            model: Model,
            on_command: CommandHook | None,
            on_ack: AckHook | None,
        ) -> Box:
            return VirtualBox(
                imei,
                secret,
                model,
                host=config.host,
                port=config.port,
                batch_size=config.batch_size,
                window=config.window,
                connect_timeout_s=config.connect_timeout_s,
                io_timeout_s=config.io_timeout_s,
                heartbeat_interval_s=config.heartbeat_interval_s,
                on_command=on_command,
                on_ack=on_ack,
            )

        return tcp
    if config.kind == "mqtt":
        from simulator.mqtt_box import MqttBox

        def mqtt(
            imei: str,
            secret: str,
            model: Model,
            on_command: CommandHook | None,
            on_ack: AckHook | None,
        ) -> Box:
            box = MqttBox.from_url(
                config.mqtt_url,
                imei,
                secret,
                model=model,
                batch_size=config.batch_size,
                window=config.window,
                connect_timeout_s=config.connect_timeout_s,
                io_timeout_s=config.io_timeout_s,
                heartbeat_interval_s=config.heartbeat_interval_s,
                on_command=on_command,
            )
            if hasattr(box, "on_ack"):
                box.on_ack = on_ack
            return box

        return mqtt
    raise ValueError(f"unknown transport {config.kind!r}: one of {', '.join(TRANSPORTS)}")


def measures_latency(box: Box) -> bool:
    return hasattr(box, "on_ack")


def resent(box: Box) -> int:
    """Records the box put back in its outbox to send again, whatever it calls the counter."""
    return int(getattr(box, "requeued", getattr(box, "resent", 0)))


def send_raw(box: Box) -> Callable[[bytes], None] | None:
    raw: Callable[[bytes], None] | None = getattr(box, "send_raw", None)
    return raw
