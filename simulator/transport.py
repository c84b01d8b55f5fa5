"""The box the simulator drives, whatever carries its frames: TCP (simulator.box.VirtualBox)
or MQTT (simulator.mqtt_box.MqttBox). Both are the same `Box` over another link, so they keep
the same outbox, count the same way and take commands in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocol.gp8 import Model
from simulator.box import AnswerHook, Box, BoxOptions, CommandHook, VirtualBox
from simulator.outbox import ACK_TIMEOUT_S

TRANSPORTS = ("tcp", "mqtt")


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
    ack_timeout_s: float = ACK_TIMEOUT_S


BoxFactory = Callable[[str, str, Model, CommandHook | None, AnswerHook | None], Box]


def box_factory(config: TransportConfig) -> BoxFactory:
    """A function making boxes of ``config``'s transport: (imei, secret, model, hooks)."""
    if config.kind not in TRANSPORTS:
        raise ValueError(f"unknown transport {config.kind!r}: one of {', '.join(TRANSPORTS)}")

    def make(
        imei: str,
        secret: str,
        model: Model,
        on_command: CommandHook | None,
        on_answer: AnswerHook | None,
    ) -> Box:
        options: BoxOptions = {
            "batch_size": config.batch_size,
            "window": config.window,
            "connect_timeout_s": config.connect_timeout_s,
            "io_timeout_s": config.io_timeout_s,
            "ack_timeout_s": config.ack_timeout_s,
            "heartbeat_interval_s": config.heartbeat_interval_s,
            "on_command": on_command,
            "on_answer": on_answer,
        }
        if config.kind == "mqtt":
            # Imported here: a TCP run does not need aiomqtt loaded.
            from simulator.mqtt_box import MqttBox

            return MqttBox.from_url(config.mqtt_url, imei, secret, model=model, **options)
        options["host"], options["port"] = config.host, config.port
        return VirtualBox(imei, secret, model, **options)

    return make
