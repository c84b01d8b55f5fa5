"""The box the simulator drives, whatever carries its frames: TCP (simulator.box.VirtualBox)
or MQTT (simulator.mqtt_box.MqttBox), or a Teltonika box over TCP (simulator.teltonika). All are
the same `Box` over another link or outbox, so they count the same way and take commands in the
same order.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

from protocol.gp8 import Model
from simulator.box import AnswerHook, Box, BoxOptions, CommandHook, VirtualBox
from simulator.outbox import ACK_TIMEOUT_S

TRANSPORTS = ("tcp", "mqtt")
# The protocol the boxes speak: GP8 (over either transport) or Teltonika's (TCP only).
PROTOCOLS = ("gp8", "teltonika")
# Where each protocol's boxes dial by default (gp8 serve's --tcp-port and the usual
# --teltonika-port of docs/teltonika.md).
DEFAULT_PORTS = {"gp8": 5027, "teltonika": 5028}


@dataclass(frozen=True, slots=True)
class TransportConfig:
    kind: str = "tcp"
    protocol: str = "gp8"
    host: str = "127.0.0.1"
    port: int = 5027
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    batch_size: int = 50
    window: int = 4
    connect_timeout_s: float = 10.0
    io_timeout_s: float = 30.0
    heartbeat_interval_s: float | None = None
    ack_timeout_s: float = ACK_TIMEOUT_S
    # TCP inside TLS, verified with this context (simulator/tls.py); None: plain TCP.
    tls: ssl.SSLContext | None = None


BoxFactory = Callable[[str, str, Model, CommandHook | None, AnswerHook | None], Box]


def box_factory(config: TransportConfig) -> BoxFactory:
    """A function making boxes of ``config``'s transport: (imei, secret, model, hooks)."""
    if config.kind not in TRANSPORTS:
        raise ValueError(f"unknown transport {config.kind!r}: one of {', '.join(TRANSPORTS)}")
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}: one of {', '.join(PROTOCOLS)}")
    if config.protocol == "teltonika" and config.kind != "tcp":
        raise ValueError("Teltonika boxes speak over TCP only")

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
        if config.protocol == "teltonika":
            from simulator.teltonika import TeltonikaBox

            options["heartbeat_interval_s"] = None  # Teltonika has none
            return TeltonikaBox(imei, secret, model, tls=config.tls, **options)
        if config.tls is not None:
            from simulator.tls import TlsBox

            return TlsBox(imei, secret, model, tls=config.tls, **options)
        return VirtualBox(imei, secret, model, **options)

    return make
