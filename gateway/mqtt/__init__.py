"""The MQTT transport: GP8 frames through a broker (docs/protocol.md §7, docs/mqtt.md)."""

from __future__ import annotations

from gateway.mqtt.acl import generate_acl
from gateway.mqtt.bridge import MqttBridge
from gateway.mqtt.config import BrokerConfig, InvalidBrokerUrl
from gateway.mqtt.metrics import MqttMetrics
from protocol.gp8.topics import ack_topic, down_topic, shared_up_filter, up_topic

__all__ = [
    "BrokerConfig",
    "InvalidBrokerUrl",
    "MqttBridge",
    "MqttMetrics",
    "ack_topic",
    "down_topic",
    "generate_acl",
    "shared_up_filter",
    "up_topic",
]
